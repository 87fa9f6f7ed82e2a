package main

import (
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"sync/atomic"
	"time"

	"github.com/flywheel-ml/flywheel/server/api"
)

// servePprof serves Go's profiling endpoints on their own listener (never on
// the API port) and returns a function that stops it.
func servePprof(addr string, logger *slog.Logger) (func(), error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listening on --pprof-listen %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	logger.Info("profiling endpoints", "component", "serve", "addr", ln.Addr().String())
	return func() { _ = srv.Close() }, nil
}

// connCounter reports the API server's open connections once it is set.
type connCounter struct{ srv atomic.Pointer[api.Server] }

func (c *connCounter) load() int {
	if s := c.srv.Load(); s != nil {
		return s.OpenConnections()
	}
	return 0
}
