package docs

import (
	"context"
	"fmt"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/flywheel-ml/flywheel/server/api"
	"github.com/flywheel-ml/flywheel/server/monitor"
	"github.com/flywheel-ml/flywheel/server/repository"
	"github.com/flywheel-ml/flywheel/train/jobs"
	"github.com/flywheel-ml/flywheel/train/service"
)

// route is one (method, path) pair a server registers. Path uses the
// server's syntax: fiber's ":param" or OpenAPI's "{param}".
type route struct {
	Method, Path string
}

func (r route) String() string { return r.Method + " " + r.Path }

// registeredRoutes returns, per server ("serve", "trainer"), the routes the
// real servers register: serve's app built as `flywheel serve` builds it
// (server/api with /metrics, plus the feedback routes of server/monitor) and
// the trainer's app of train/service. fiber registers HEAD beside every GET;
// normaliseRoutes drops HEAD unless the document lists it.
func registeredRoutes(t *testing.T) map[string][]route {
	t.Helper()
	ctx := context.Background()
	out := map[string][]route{}
	cfg := repository.DefaultConfig()
	cfg.Root = t.TempDir()
	repo, err := repository.New(repository.Options{Config: cfg})
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	mcfg := monitor.DefaultConfig()
	mcfg.DB = filepath.Join(t.TempDir(), "flywheel.db")
	mon, err := monitor.New(ctx, monitor.Options{Config: mcfg, AdminToken: "x", Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mon.Close() })
	srv, err := api.New(api.Options{Config: api.DefaultConfig(), Repository: repo, Gatherer: reg, Observers: []api.Observer{mon}})
	if err != nil {
		t.Fatal(err)
	}
	mon.Register(srv.App())
	for _, r := range srv.Routes() {
		out["serve"] = append(out["serve"], route{r.Method, r.Path})
	}

	js, err := jobs.Open(ctx, jobs.Options{Path: filepath.Join(t.TempDir(), "jobs.db")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { js.Close() })
	svc, err := service.New(service.Options{Store: js, Token: "x", DefaultModel: "ridership", Gatherer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	if out["trainer"], err = parseRoutes(svc.Routes()); err != nil {
		t.Fatal(err)
	}
	return out
}

// parseRoutes turns "METHOD /path" strings into routes.
func parseRoutes(lines []string) ([]route, error) {
	out := make([]route, 0, len(lines))
	for _, l := range lines {
		m, p, ok := strings.Cut(strings.TrimSpace(l), " ")
		if !ok || m == "" || !strings.HasPrefix(p, "/") {
			return nil, fmt.Errorf("route %q is not \"METHOD /path\"", l)
		}
		out = append(out, route{m, strings.TrimSpace(p)})
	}
	return out, nil
}

// normalisePath turns "/v2/models/{m}" and "/v2/models/:model" into the same
// key "/v2/models/{}": parameter names do not matter, only their place.
// fiber's greedy "*" / "+" segment is one parameter too (serve registers
// /v1/predictions/* so that ids may contain "/"; OpenAPI writes it {id}),
// while an optional ":p?" stays distinguishable: it is two routes in OpenAPI.
func normalisePath(p string) string {
	if p != "/" {
		p = strings.TrimSuffix(p, "/")
	}
	segs := strings.Split(p, "/")
	for i, s := range segs {
		switch {
		case strings.HasPrefix(s, "{") && strings.HasSuffix(s, "}"):
			segs[i] = "{}"
		case strings.HasPrefix(s, ":") && strings.HasSuffix(s, "?"):
			segs[i] = "{?}"
		case strings.HasPrefix(s, ":"):
			segs[i] = "{}"
		case s == "*" || s == "+":
			segs[i] = "{}"
		}
	}
	return strings.Join(segs, "/")
}

// ignoredMethods are registered implicitly by the router, not by the server:
// fiber adds HEAD for every GET; "USE" marks middleware.
var ignoredMethods = map[string]bool{"HEAD": true, "USE": true, "CONNECT": true, "TRACE": true}

// normaliseRoutes returns the set of normalised "METHOD path" keys.
// Methods in ignoredMethods are dropped unless keep lists them.
func normaliseRoutes(rs []route, keep map[string]bool) map[string]bool {
	out := map[string]bool{}
	for _, r := range rs {
		m := strings.ToUpper(r.Method)
		if ignoredMethods[m] && !keep[m] {
			continue
		}
		out[m+" "+normalisePath(r.Path)] = true
	}
	return out
}

// compareRoutes returns documented routes the server does not register
// (missing) and registered routes the document does not describe
// (undocumented), both sorted.
func compareRoutes(documented, registered []route) (missing, undocumented []string) {
	keep := map[string]bool{}
	for _, r := range documented {
		keep[strings.ToUpper(r.Method)] = true
	}
	doc := normaliseRoutes(documented, keep)
	reg := normaliseRoutes(registered, keep)
	for k := range doc {
		if !reg[k] {
			missing = append(missing, k)
		}
	}
	for k := range reg {
		if !doc[k] {
			undocumented = append(undocumented, k)
		}
	}
	sort.Strings(missing)
	sort.Strings(undocumented)
	return missing, undocumented
}

func loadOpenAPI(t *testing.T) *openapi3.T {
	t.Helper()
	loader := openapi3.NewLoader()
	doc, err := loader.LoadFromFile("openapi.yaml")
	if err != nil {
		t.Fatalf("loading openapi.yaml: %v", err)
	}
	if err := doc.Validate(context.Background()); err != nil {
		t.Fatalf("openapi.yaml is not a valid OpenAPI 3 document: %v", err)
	}
	return doc
}

// documentedRoutes returns, per server named in each operation's
// x-flywheel-server extension, the documented routes.
func documentedRoutes(t *testing.T, doc *openapi3.T) map[string][]route {
	t.Helper()
	out := map[string][]route{}
	for path, item := range doc.Paths.Map() {
		for method, op := range item.Operations() {
			servers, err := operationServers(op)
			if err != nil {
				t.Errorf("%s %s: %v", method, path, err)
				continue
			}
			for _, s := range servers {
				out[s] = append(out[s], route{method, path})
			}
		}
	}
	return out
}

func operationServers(op *openapi3.Operation) ([]string, error) {
	raw, ok := op.Extensions["x-flywheel-server"]
	if !ok {
		return nil, fmt.Errorf("operation %q has no x-flywheel-server extension", op.OperationID)
	}
	list, ok := raw.([]any)
	if !ok || len(list) == 0 {
		return nil, fmt.Errorf("operation %q: x-flywheel-server must be a non-empty list, got %T", op.OperationID, raw)
	}
	var out []string
	for _, v := range list {
		s, ok := v.(string)
		if !ok || (s != "serve" && s != "trainer") {
			return nil, fmt.Errorf("operation %q: unknown server %v in x-flywheel-server", op.OperationID, v)
		}
		out = append(out, s)
	}
	return out, nil
}

func TestOpenAPIDocumentIsValid(t *testing.T) {
	doc := loadOpenAPI(t)
	for path, item := range doc.Paths.Map() {
		for method, op := range item.Operations() {
			if op.OperationID == "" {
				t.Errorf("%s %s: no operationId", method, path)
			}
			if op.Responses == nil || op.Responses.Len() == 0 {
				t.Errorf("%s %s: no responses", method, path)
			}
			if op.Security != nil && len(*op.Security) > 0 && op.Responses.Value("401") == nil {
				t.Errorf("%s %s: needs a token but documents no 401", method, path)
			}
		}
	}
}

func TestOpenAPIMatchesRegisteredRoutes(t *testing.T) {
	doc := loadOpenAPI(t)
	documented := documentedRoutes(t, doc)
	registered := registeredRoutes(t)
	for _, server := range []string{"serve", "trainer"} {
		if len(registered[server]) == 0 {
			t.Errorf("%s: no registered routes", server)
		}
		missing, undocumented := compareRoutes(documented[server], registered[server])
		for _, m := range missing {
			t.Errorf("%s: documented in openapi.yaml but not registered: %s", server, m)
		}
		for _, u := range undocumented {
			t.Errorf("%s: registered but not documented in openapi.yaml: %s", server, u)
		}
	}
	for server := range documented {
		if _, ok := registered[server]; !ok {
			t.Errorf("openapi.yaml documents server %q that registeredRoutes does not know", server)
		}
	}
}

func TestParseRoutes(t *testing.T) {
	got, err := parseRoutes([]string{"GET /v1/jobs", "POST /v1/alerts", "GET /v1/jobs/:id"})
	if err != nil {
		t.Fatal(err)
	}
	want := []route{{"GET", "/v1/jobs"}, {"POST", "/v1/alerts"}, {"GET", "/v1/jobs/:id"}}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("parseRoutes = %v, want %v", got, want)
	}
	for _, bad := range []string{"GET", "/v1/jobs", "GET v1/jobs", ""} {
		if _, err := parseRoutes([]string{bad}); err == nil {
			t.Errorf("parseRoutes(%q): want an error", bad)
		}
	}
}

func TestCompareRoutes(t *testing.T) {
	tests := []struct {
		name                  string
		documented            []route
		registered            []route
		missing, undocumented []string
	}{
		{
			name:       "braces and colons with different names match",
			documented: []route{{"GET", "/v2/models/{m}/versions/{v}"}},
			registered: []route{{"GET", "/v2/models/:model/versions/:version"}},
		},
		{
			name:       "method is case-insensitive",
			documented: []route{{"post", "/v1/feedback"}},
			registered: []route{{"POST", "/v1/feedback"}},
		},
		{
			name:       "trailing slash ignored",
			documented: []route{{"GET", "/v2/"}},
			registered: []route{{"GET", "/v2"}},
		},
		{
			name:       "fiber's implicit HEAD and middleware are ignored",
			documented: []route{{"GET", "/ping"}},
			registered: []route{{"GET", "/ping"}, {"HEAD", "/ping"}, {"USE", "/"}},
		},
		{
			name:       "HEAD counts when documented",
			documented: []route{{"GET", "/ping"}, {"HEAD", "/ping"}},
			registered: []route{{"GET", "/ping"}},
			missing:    []string{"HEAD /ping"},
		},
		{
			name:         "wrong method",
			documented:   []route{{"GET", "/v2/repository/index"}},
			registered:   []route{{"POST", "/v2/repository/index"}},
			missing:      []string{"GET /v2/repository/index"},
			undocumented: []string{"POST /v2/repository/index"},
		},
		{
			name:         "parameter in a different place",
			documented:   []route{{"GET", "/v1/jobs/{id}"}},
			registered:   []route{{"GET", "/v1/:id/jobs"}},
			missing:      []string{"GET /v1/jobs/{}"},
			undocumented: []string{"GET /v1/{}/jobs"},
		},
		{
			name:         "literal versus parameter",
			documented:   []route{{"POST", "/v2/repository/models/{m}/load"}},
			registered:   []route{{"POST", "/v2/repository/models/:m/:action"}},
			missing:      []string{"POST /v2/repository/models/{}/load"},
			undocumented: []string{"POST /v2/repository/models/{}/{}"},
		},
		{
			name:       "a greedy wildcard segment is a parameter",
			documented: []route{{"GET", "/v1/predictions/{id}"}},
			registered: []route{{"GET", "/v1/predictions/*"}},
		},
		{
			name:         "an optional parameter stays distinct",
			documented:   []route{{"GET", "/v2/models/{m}"}},
			registered:   []route{{"GET", "/v2/models/:m?"}, {"GET", "/files/*"}},
			missing:      []string{"GET /v2/models/{}"},
			undocumented: []string{"GET /files/{}", "GET /v2/models/{?}"},
		},
		{
			name:         "undocumented extra route",
			documented:   []route{{"GET", "/metrics"}},
			registered:   []route{{"GET", "/metrics"}, {"GET", "/debug/pprof"}},
			undocumented: []string{"GET /debug/pprof"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			missing, undocumented := compareRoutes(tt.documented, tt.registered)
			if fmt.Sprint(missing) != fmt.Sprint(tt.missing) {
				t.Errorf("missing = %v, want %v", missing, tt.missing)
			}
			if fmt.Sprint(undocumented) != fmt.Sprint(tt.undocumented) {
				t.Errorf("undocumented = %v, want %v", undocumented, tt.undocumented)
			}
		})
	}
}
