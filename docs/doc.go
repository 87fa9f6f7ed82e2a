// Package docs holds Flywheel's project documents — the specification, the
// proposal, the architecture, the runbook and the OpenAPI reference — and the
// tests that keep them honest: every alert links to a runbook section that
// exists, the OpenAPI document parses and matches the routes the servers
// register, and every figure in the prose names the command that produced it.
package docs
