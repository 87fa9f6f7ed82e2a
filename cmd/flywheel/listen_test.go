package main

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// dupFd returns a new file descriptor for f, for openListener to own.
func dupFd(t *testing.T, f *os.File) int {
	t.Helper()
	fd, err := syscall.Dup(int(f.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	return fd
}

func TestOpenListener(t *testing.T) {
	tcp := listen(t)
	tcpFile, err := tcp.(*net.TCPListener).File()
	if err != nil {
		t.Fatal(err)
	}
	defer tcpFile.Close()
	plain, err := os.Create(filepath.Join(t.TempDir(), "plain"))
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	tests := []struct {
		name, value string
		err         string // "": opens
		addr        string // the address it listens on, when known
	}{
		{"address", "127.0.0.1:0", "", ""},
		{"inherited socket", fmt.Sprintf("fd:%d", dupFd(t, tcpFile)), "", tcp.Addr().String()},
		{"not a number", "fd:three", "file descriptor number of 3 or more", ""},
		{"standard stream", "fd:1", "file descriptor number of 3 or more", ""},
		{"regular file", fmt.Sprintf("fd:%d", dupFd(t, plain)), "is not a listening socket", ""},
		{"bad address", "127.0.0.1:99999", "listening on --listen 127.0.0.1:99999", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ln, err := openListener("--listen", tt.value)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("error %v, want %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			if tt.addr != "" && ln.Addr().String() != tt.addr {
				t.Fatalf("listens on %s, want %s", ln.Addr(), tt.addr)
			}
			// It accepts what is dialled to its address.
			go func() {
				if c, err := net.Dial("tcp", ln.Addr().String()); err == nil {
					c.Close()
				}
			}()
			c, err := ln.Accept()
			if err != nil {
				t.Fatal(err)
			}
			c.Close()
		})
	}
}
