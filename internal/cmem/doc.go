// Package cmem tunes the C allocator that ONNX Runtime and SQLite allocate
// from (glibc malloc, through cgo).
//
// glibc gives threads that contend for the allocator their own arenas, up to
// eight per core, and memory freed into one arena is not reused by another.
// cgo calls run on whichever OS thread holds the goroutine, so under load
// every Go thread ends up with an arena of its own that SQLite's page caches
// and ONNX Runtime's buffers fragment: in 5-minute load runs the server's RSS
// kept creeping up (+5 % in 150 s) and stayed flat (+2.8 %) with two arenas,
// at the same request rate (loadtest/rss.sh).
package cmem

// DefaultArenas is the arena limit LimitArenas sets.
const DefaultArenas = 2
