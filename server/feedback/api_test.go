package feedback

import (
	"bufio"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/gofiber/fiber/v2"

	"github.com/flywheel-ml/flywheel/internal/modelrepo"
)

const token = "s3cret-admin-token"

func newApp(t *testing.T, e *env, opts APIOptions) *fiber.App {
	t.Helper()
	opts.Store = e.store
	a, err := NewAPI(opts)
	if err != nil {
		t.Fatal(err)
	}
	app := fiber.New(fiber.Config{DisableStartupMessage: true})
	a.Register(app)
	return app
}

func do(t *testing.T, app *fiber.App, method, target, body string, header map[string]string) (int, string, http.Header) {
	t.Helper()
	req := httptest.NewRequest(method, target, strings.NewReader(body))
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := app.Test(req, 10000)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header
}

var jsonCT = map[string]string{"Content-Type": "application/json"}

func TestPostFeedback(t *testing.T) {
	e := newEnv(t)
	e.predict("p1", "ridership", 2, 15, nil)
	e.predict("p2", "ridership", 2, 10, nil)
	app := newApp(t, e, APIOptions{AdminToken: token, MaxBodyBytes: 4096, MaxItems: 3, Rate: -1}) // the rate limit has its own test; with a burst of 3 it made these cases flaky
	tests := []struct {
		name     string
		body     string
		header   map[string]string
		code     int
		contains []string
	}{
		{"one object", `{"id":"p1","value":17}`, jsonCT, 200, []string{`"status":"created"`, `"created":1`}},
		{"retry", `{"id":"p1","value":17}`, jsonCT, 200, []string{`"status":"unchanged"`}},
		{"array with a failure", `[{"id":"p2","value":9},{"id":"ghost","value":1}]`, jsonCT, 207,
			[]string{`"status":"created"`, `unknown prediction id \"ghost\"`, `"failed":1`, `"index":1`}},
		{"labels wrapper", `{"labels":[{"id":"p2","value":8.5,"model":"ridership"}]}`, jsonCT, 200, []string{`"status":"updated"`}},
		{"unknown field is an item error", `[{"id":"p1","value":1,"colour":"red"}]`, jsonCT, 422, []string{`unknown field \"colour\"`}},
		{"value as string", `{"id":"p1","value":"3"}`, jsonCT, 422, []string{"invalid label"}},
		{"missing value", `{"id":"p1"}`, jsonCT, 422, []string{"value is missing"}},
		{"malformed JSON", `{"id":`, jsonCT, 400, []string{"invalid feedback body"}},
		{"scalar body", `42`, jsonCT, 400, []string{"expected a label object"}},
		{"empty array", `[]`, jsonCT, 400, []string{"no labels"}},
		{"labels with extra field", `{"labels":[],"x":1}`, jsonCT, 400, []string{"no other fields"}},
		{"too many labels", `[{"id":"a","value":1},{"id":"b","value":1},{"id":"c","value":1},{"id":"d","value":1}]`, jsonCT, 413, []string{"4 labels exceed the limit of 3"}},
		{"too big", `{"id":"p1","value":1,"features":{"x":` + strings.Repeat("1", 5000) + `}}`, jsonCT, 413, []string{"exceeds the limit of 4096 bytes"}},
		{"wrong content type", `{"id":"p1","value":1}`, map[string]string{"Content-Type": "text/plain"}, 415, []string{"application/json"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, body, _ := do(t, app, "POST", "/v1/feedback", tt.body, tt.header)
			if code != tt.code {
				t.Fatalf("status %d, want %d: %s", code, tt.code, body)
			}
			for _, c := range tt.contains {
				if !strings.Contains(body, c) {
					t.Errorf("body %s lacks %s", body, c)
				}
			}
			if code >= 400 && code != 422 && !strings.HasPrefix(body, `{"error":`) {
				t.Errorf("error body is not {\"error\": ...}: %s", body)
			}
		})
	}
}

func TestExportAPI(t *testing.T) {
	e := newEnv(t)
	e.predict("p1", "ridership", 2, 15, map[string]any{"date": "2016-08-01"})
	e.predict("p2", "ridership", 2, 10, nil)
	if _, err := e.store.Add(t.Context(), []Label{{ID: "p1", Value: f(17)}, {ID: "p2", Value: f(9)}}); err != nil {
		t.Fatal(err)
	}
	app := newApp(t, e, APIOptions{AdminToken: token})
	bearer := map[string]string{"Authorization": "Bearer " + token}
	tests := []struct {
		name   string
		target string
		header map[string]string
		code   int
		lines  int
		want   string
	}{
		{"all", "/v1/feedback/export?model=ridership", bearer, 200, 2, `"id":"p1"`},
		{"since date", "/v1/feedback/export?model=ridership&since=2026-11-22", bearer, 200, 2, `"label":9`},
		{"since RFC 3339 after", "/v1/feedback/export?model=ridership&since=2026-11-22T08:00:01Z", bearer, 200, 0, ""},
		{"since unix", "/v1/feedback/export?model=ridership&since=0", bearer, 200, 2, ""},
		{"other model", "/v1/feedback/export?model=taxi", bearer, 200, 0, ""},
		{"lower-case scheme", "/v1/feedback/export?model=ridership", map[string]string{"Authorization": "bearer " + token}, 200, 2, ""},
		{"no token", "/v1/feedback/export?model=ridership", nil, 401, 0, "admin bearer token"},
		{"wrong token", "/v1/feedback/export?model=ridership", map[string]string{"Authorization": "Bearer nope"}, 401, 0, ""},
		{"token prefix", "/v1/feedback/export?model=ridership", map[string]string{"Authorization": "Bearer " + token[:5]}, 401, 0, ""},
		{"basic auth", "/v1/feedback/export?model=ridership", map[string]string{"Authorization": "Basic " + token}, 401, 0, ""},
		{"no model", "/v1/feedback/export", bearer, 400, 0, "model is required"},
		{"bad model", "/v1/feedback/export?model=a%20b", bearer, 400, 0, "not a valid model name"},
		{"bad since", "/v1/feedback/export?model=ridership&since=yesterday", bearer, 400, 0, "since"},
		{"unknown parameter", "/v1/feedback/export?model=ridership&limit=5", bearer, 400, 0, `unknown query parameter \"limit\"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, body, h := do(t, app, "GET", tt.target, "", tt.header)
			if code != tt.code {
				t.Fatalf("status %d, want %d: %s", code, tt.code, body)
			}
			if !strings.Contains(body, tt.want) {
				t.Errorf("body %s lacks %s", body, tt.want)
			}
			if code != 200 {
				return
			}
			if ct := h.Get("Content-Type"); ct != "application/x-ndjson" {
				t.Errorf("Content-Type %q", ct)
			}
			n := 0
			sc := bufio.NewScanner(strings.NewReader(body))
			for sc.Scan() {
				var row Row
				if err := json.Unmarshal(sc.Bytes(), &row); err != nil || row.Model != "ridership" {
					t.Fatalf("line %q: %v", sc.Text(), err)
				}
				n++
			}
			if n != tt.lines {
				t.Fatalf("%d lines, want %d: %s", n, tt.lines, body)
			}
		})
	}
	// Without an admin token the export is disabled.
	if code, body, _ := do(t, newApp(t, e, APIOptions{}), "GET", "/v1/feedback/export?model=ridership", "", bearer); code != 403 {
		t.Fatalf("export without a configured token: %d %s", code, body)
	}
	// A failing database is reported before the stream starts.
	e.db.Close()
	if code, body, _ := do(t, app, "GET", "/v1/feedback/export?model=ridership", "", bearer); code != 503 || !strings.Contains(body, "export failed") {
		t.Fatalf("export with a closed database: %d %s", code, body)
	}
}

func TestGetPredictionAPI(t *testing.T) {
	e := newEnv(t)
	e.predict("replay-2016-08-01", "ridership", 2, 15, map[string]any{"date": "2016-08-01"})
	e.predict("batch/7", "ridership", 2, 11, nil)
	app := newApp(t, e, APIOptions{})
	tests := []struct {
		target string
		code   int
		want   []string
	}{
		{"/v1/predictions/replay-2016-08-01", 200, []string{`"model":"ridership"`, `"version":2`, `"run_id":"run-42"`,
			`"digest":"sha256:feed"`, `"git_commit":"abc123"`, `"features":{"Austin":1.25,"dow":3}`, `"prediction":15`, `"date":"2016-08-01"`}},
		{"/v1/predictions/batch/7", 200, []string{`"id":"batch/7"`}},
		{"/v1/predictions/batch%2F7", 200, []string{`"id":"batch/7"`}},
		{"/v1/predictions/missing", 404, []string{"not found"}},
		{"/v1/predictions/", 400, []string{"prediction id"}},
		{"/v1/predictions/a%09b", 400, []string{"control characters"}},
		{"/v1/predictions/a%20b", 404, []string{"not found"}},
	}
	for _, tt := range tests {
		code, body, _ := do(t, app, "GET", tt.target, "", nil)
		if code != tt.code {
			t.Fatalf("%s: status %d, want %d: %s", tt.target, code, tt.code, body)
		}
		for _, w := range tt.want {
			if !strings.Contains(body, w) {
				t.Errorf("%s: body %s lacks %s", tt.target, body, w)
			}
		}
	}
}

// TestFeedbackGuards: with a feedback token, anonymous labels get 401 and
// change nothing; prediction lookups need a token once one is configured;
// one client's label rate is bounded (429 with Retry-After).
func TestFeedbackGuards(t *testing.T) {
	e := newEnv(t)
	e.predict("p1", "ridership", 2, 15, nil)
	app := newApp(t, e, APIOptions{AdminToken: token, FeedbackToken: "feed", MaxItems: 3, Rate: 1})
	feed := map[string]string{"Content-Type": "application/json", "Authorization": "bearer feed"}
	if code, body, _ := do(t, app, "POST", "/v1/feedback", `{"id":"p1","value":17}`, jsonCT); code != 401 || !strings.Contains(body, "feedback token") {
		t.Fatalf("anonymous label: %d %s, want 401", code, body)
	}
	if code, body, _ := do(t, app, "POST", "/v1/feedback", `{"id":"p1","value":17}`, map[string]string{"Content-Type": "application/json", "Authorization": "Bearer " + token}); code != 401 {
		t.Fatalf("label with the admin token: %d %s, want 401 (the feed has its own token)", code, body)
	}
	if code, body, _ := do(t, app, "GET", "/v1/predictions/p1", "", nil); code != 401 || strings.Contains(body, "Austin") {
		t.Fatalf("anonymous prediction lookup: %d %s, want 401 without features", code, body)
	}
	if code, body, _ := do(t, app, "GET", "/v1/predictions/p1", "", map[string]string{"Authorization": "Bearer feed"}); code != 200 || strings.Contains(body, `"label"`) {
		t.Fatalf("lookup with the feedback token: %d %s, want 200 and no label yet", code, body)
	}
	if code, body, _ := do(t, app, "POST", "/v1/feedback", `[{"id":"p1","value":17},{"id":"x1","value":1,"model":"m","features":{"a":1}},{"id":"x2","value":1,"model":"m","features":{"a":1}}]`, feed); code != 200 {
		t.Fatalf("three labels (the burst): %d %s", code, body)
	}
	code, body, h := do(t, app, "POST", "/v1/feedback", `{"id":"p1","value":18}`, feed)
	if code != 429 || h.Get("Retry-After") == "" || !strings.Contains(body, "rate") {
		t.Fatalf("label past the rate: %d %s (Retry-After %q), want 429", code, body, h.Get("Retry-After"))
	}
	_, body, _ = do(t, app, "GET", "/v1/predictions/p1", "", map[string]string{"Authorization": "Bearer " + token})
	if !strings.Contains(body, `17`) || strings.Contains(body, `18`) {
		t.Fatalf("label after a refused request: %s, want 17", body)
	}
}

func TestPlausible(t *testing.T) {
	reg := &modelrepo.Card{Name: "r", Task: "regression", Reference: &modelrepo.Reference{Prediction: &modelrepo.Histogram{Edges: []float64{0, 10, 20}, Proportions: []float64{0.5, 0.5}}}}
	cls := &modelrepo.Card{Name: "c", Task: "classification", Outputs: []modelrepo.Tensor{{Name: "p", Shape: []int64{-1, 3}}}}
	for _, tc := range []struct {
		c    *modelrepo.Card
		v    float64
		want string
	}{
		{nil, -1e30, ""},
		{reg, 15, ""},
		{reg, -150, ""},
		{reg, 400, "outside the plausible range [-200, 220]"},
		{reg, -1e30, "outside the plausible range"},
		{&modelrepo.Card{Task: "regression"}, -1e30, ""}, // no reference: any finite value
		{cls, 2, ""},
		{cls, 3, "not a class"},
		{cls, 1.5, "not a class index"},
		{cls, -1, "not a class index"},
	} {
		err := Plausible(tc.c, tc.v)
		if (tc.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("Plausible(%v, %g) = %v, want %q", tc.c != nil, tc.v, err, tc.want)
		}
	}
}
