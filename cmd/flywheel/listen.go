package main

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
)

// listenHelp is the help text of a --listen flag's two forms.
const listenHelp = "; or fd:N, a listening TCP socket inherited as file descriptor N (socket activation: systemd's first is fd:3; a parent process's exec ExtraFiles[i] is fd:3+i)"

// openListener opens what a --listen flag names: a TCP address to listen
// on, or fd:N, a listening socket the process inherited as file descriptor
// N (N ≥ 3: 0-2 are stdin, stdout and stderr). With an inherited socket the
// parent (systemd, a supervisor, a test) holds the port across restarts: no
// address is found free and reused, and connections made while the process
// restarts wait in the socket's backlog.
func openListener(flag, value string) (net.Listener, error) {
	spec, ok := strings.CutPrefix(value, "fd:")
	if !ok {
		ln, err := net.Listen("tcp", value)
		if err != nil {
			return nil, fmt.Errorf("listening on %s %s: %w", flag, value, err)
		}
		return ln, nil
	}
	fd, err := strconv.Atoi(spec)
	if err != nil || fd < 3 {
		return nil, fmt.Errorf("%s %s: fd:N needs a file descriptor number of 3 or more", flag, value)
	}
	f := os.NewFile(uintptr(fd), value)
	defer f.Close() // FileListener holds its own copy
	ln, err := net.FileListener(f)
	if err != nil {
		return nil, fmt.Errorf("%s %s: file descriptor %d is not a listening socket: %w", flag, value, fd, err)
	}
	if _, ok := ln.(*net.TCPListener); !ok {
		ln.Close()
		return nil, fmt.Errorf("%s %s: file descriptor %d is a %s socket, not TCP", flag, value, fd, ln.Addr().Network())
	}
	return ln, nil
}
