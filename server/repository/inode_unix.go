//go:build unix

package repository

import (
	"os"
	"syscall"
)

func inode(st os.FileInfo) (uint64, bool) {
	if s, ok := st.Sys().(*syscall.Stat_t); ok {
		return uint64(s.Ino), true
	}
	return 0, false
}
