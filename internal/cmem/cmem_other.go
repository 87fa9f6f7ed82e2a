//go:build !linux

package cmem

// LimitArenas does nothing outside Linux (glibc's arenas are what it limits).
func LimitArenas(n int) error { return nil }
