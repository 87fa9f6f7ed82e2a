package harness

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
)

// HAProxyBinary is Debian's haproxy (installed by `make pg-deps`).
const HAProxyBinary = "haproxy"

// Pool is one load-balanced service: a frontend on a free loopback port
// spreading requests round robin over Servers, each health-checked with
// GET HealthPath.
type Pool struct {
	Name       string
	Servers    []string // host:port
	HealthPath string
}

// LoadBalancer is a started HAProxy; Addr and URL name each pool's frontend.
type LoadBalancer struct {
	*Process
	Addrs map[string]string
}

// URL returns the frontend URL of pool name.
func (lb *LoadBalancer) URL(name string) string { return "http://" + lb.Addrs[name] }

// StartHAProxy runs HAProxy in the foreground with one frontend per pool.
// A request whose connection is refused, or that gets no response at all
// (a server killed mid-request), is retried on another server: the
// frontends' clients see the pool, not a dead replica.
func StartHAProxy(t testing.TB, pools ...Pool) *LoadBalancer {
	t.Helper()
	dir := t.TempDir()
	lb := &LoadBalancer{Addrs: map[string]string{}}
	var b strings.Builder
	b.WriteString(`global
  maxconn 4096
defaults
  mode http
  timeout connect 2s
  timeout client 60s
  timeout server 60s
  timeout http-keep-alive 10s
  retries 3
  option redispatch 1
  retry-on conn-failure empty-response
  option http-server-close
`)
	first := ""
	for _, p := range pools {
		addr := FreeAddr(t)
		lb.Addrs[p.Name] = addr
		if first == "" {
			first = addr
		}
		fmt.Fprintf(&b, "frontend %s\n  bind %s\n  monitor-uri /haproxy-ready\n  default_backend %s\n", p.Name, addr, p.Name)
		fmt.Fprintf(&b, "backend %s\n  balance roundrobin\n  option httpchk GET %s\n  http-check expect status 200\n  default-server inter 300ms fall 2 rise 1\n", p.Name, p.HealthPath)
		for i, s := range p.Servers {
			fmt.Fprintf(&b, "  server %s%d %s check\n", p.Name, i, s)
		}
	}
	WriteFiles(t, dir, map[string]string{"haproxy.cfg": b.String()})
	p := Start(t, Spec{Name: "haproxy", Path: HAProxyBinary, Dir: dir, Args: []string{"-db", "-f", filepath.Join(dir, "haproxy.cfg")},
		ReadyURL: "http://" + first + "/haproxy-ready", StopGroup: true}) // HAProxy dies by SIGTERM
	lb.Process = p
	return lb
}
