package cmem

/*
#include <malloc.h>

// limit_arenas returns mallopt's answer (1: done), or -1 where the C library
// has no arena limit (not glibc: musl, for one).
static int limit_arenas(int n) {
#ifdef M_ARENA_MAX
	return mallopt(M_ARENA_MAX, n);
#else
	return -1;
#endif
}
*/
import "C"

import (
	"fmt"
	"os"
)

// LimitArenas caps glibc's malloc arenas at n unless the MALLOC_ARENA_MAX
// environment variable already chose a value (glibc then honours it). Call it
// first thing in main, before cgo code allocates. With a C library that has
// no arenas to limit it does nothing.
func LimitArenas(n int) error {
	if _, set := os.LookupEnv("MALLOC_ARENA_MAX"); set {
		return nil
	}
	switch C.limit_arenas(C.int(n)) {
	case 1, -1:
		return nil
	}
	return fmt.Errorf("mallopt(M_ARENA_MAX, %d) failed", n)
}
