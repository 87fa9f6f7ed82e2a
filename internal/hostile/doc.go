// Package hostile holds the hostile-request suite (make test-hostile, build
// tag "hostile"): each case of issue #15 sent to a real `flywheel serve` and
// `flywheel trainer` on 127.0.0.1, asserting the status and message, that
// the process is alive and answering afterwards, that its RSS stays under a
// stated bound and that no other client's label or prediction is exposed
// or changed; and the fuzz target over whole HTTP requests of infer,
// /invocations and feedback (FuzzHTTPRequest).
package hostile
