// Package e2e holds end-to-end tests that run the real programs together —
// Prometheus, Alertmanager and the flywheel binary — through
// internal/harness. The full loop test (serve, monitor, replay) joins them
// when those parts are merged.
package e2e
