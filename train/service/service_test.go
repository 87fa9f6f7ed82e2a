package service

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/flywheel-ml/flywheel/train/jobs"
)

const token = "s3cret-token"

func newService(t *testing.T) (*Service, *jobs.Store) {
	t.Helper()
	st, err := jobs.Open(context.Background(), jobs.Options{Path: filepath.Join(t.TempDir(), "jobs.db")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	reg := prometheus.NewRegistry()
	jobs.NewMetrics(reg, func() float64 { return 0 })
	s, err := New(Options{Store: st, Token: token, DefaultModel: "ridership", Gatherer: reg})
	if err != nil {
		t.Fatal(err)
	}
	return s, st
}

func do(t *testing.T, s *Service, method, path, auth, body string) (int, string) {
	t.Helper()
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := s.App().Test(req, 5000)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestRoutes(t *testing.T) {
	s, _ := newService(t)
	want := []string{"GET /health/live", "GET /health/ready", "GET /metrics", "GET /v1/jobs", "GET /v1/jobs/:id", "POST /v1/alerts", "POST /v1/retrain"}
	if got := s.Routes(); !reflect.DeepEqual(got, want) {
		t.Errorf("routes = %v", got)
	}
	if _, err := New(Options{Store: nil}); err == nil {
		t.Error("New without a store succeeded")
	}
	_, st := newService(t)
	if _, err := New(Options{Store: st, DefaultModel: "m"}); err == nil || !strings.Contains(err.Error(), "token is required") {
		t.Errorf("New without a token = %v", err)
	}
}

func TestAlerts(t *testing.T) {
	s, st := newService(t)
	firing, err := os.ReadFile("../alert/testdata/firing.json")
	if err != nil {
		t.Fatal(err)
	}
	resolved := strings.ReplaceAll(string(firing), `"status":"firing"`, `"status":"resolved"`)
	bearer := "Bearer " + token
	var firstJob string
	for _, tc := range []struct {
		name, auth, body string
		code             int
		want             string
		jobs             int
	}{
		{"no token", "", string(firing), 401, "missing bearer token", 0},
		{"wrong token", "Bearer nope", string(firing), 401, "wrong bearer token", 0},
		{"basic auth", "Basic czNjcmV0", string(firing), 401, "missing bearer token", 0},
		{"malformed", bearer, `{"version":"4","groupKey":`, 400, "malformed JSON", 0},
		{"wrong version", bearer, strings.Replace(string(firing), `"version":"4"`, `"version":"3"`, 1), 400, `version: \"3\" is not supported`, 0},
		{"no alerts", bearer, `{"version":"4","groupKey":"k","status":"firing","alerts":[]}`, 400, "alerts: is empty", 0},
		{"resolved", bearer, resolved, 200, `"status":"ignored"`, 0},
		{"firing", bearer, string(firing), 202, `"status":"queued"`, 1},
		{"re-send", bearer, string(firing), 202, `"status":"duplicate"`, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, body := do(t, s, "POST", "/v1/alerts", tc.auth, tc.body)
			if code != tc.code || !strings.Contains(body, tc.want) {
				t.Errorf("%d %s, want %d containing %s", code, body, tc.code, tc.want)
			}
			list, _ := st.List(context.Background(), jobs.ListOptions{})
			if len(list) != tc.jobs {
				t.Errorf("jobs = %d, want %d", len(list), tc.jobs)
			}
			if tc.code == 202 {
				var r AlertResponse
				if err := json.Unmarshal([]byte(body), &r); err != nil || len(r.Jobs) != 1 {
					t.Fatalf("response %s: %v", body, err)
				}
				if firstJob == "" {
					firstJob = r.Jobs[0].ID
				}
				j := r.Jobs[0]
				if j.ID != firstJob || j.Model != "ridership" || !reflect.DeepEqual(j.Alerts, []string{"FeatureDrift"}) || j.FiredAt == nil {
					t.Errorf("job = %+v", j)
				}
			}
		})
	}
}

func TestRetrainAndJobs(t *testing.T) {
	s, _ := newService(t)
	bearer := "Bearer " + token
	for _, tc := range []struct {
		name, auth, body string
		code             int
		want             string
	}{
		{"no token", "", ``, 401, "missing bearer token"},
		{"empty body", bearer, ``, 202, `"trigger":"manual"`},
		{"overrides", bearer, `{"algorithm":"ridge","params":{"l2":1},"window_days":365,"margin":0.05}`, 202, `"params":{"algorithm":"ridge","params":{"l2":1},"window_days":365,"margin":0.05}`},
		{"unknown field", bearer, `{"windowdays":3}`, 400, `unknown field \"windowdays\"`},
		{"bad margin", bearer, `{"margin":1.5}`, 400, "margin 1.5 must be in [0, 1)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, body := do(t, s, "POST", "/v1/retrain", tc.auth, tc.body)
			if code != tc.code || !strings.Contains(body, tc.want) {
				t.Errorf("%d %s, want %d containing %s", code, body, tc.code, tc.want)
			}
		})
	}
	if code, body := do(t, s, "GET", "/v1/jobs", "", ""); code != 401 {
		t.Fatalf("jobs without a token: %d %s, want 401", code, body)
	}
	code, body := do(t, s, "GET", "/v1/jobs", bearer, "")
	var list struct{ Jobs []jobs.Job }
	if code != 200 || json.Unmarshal([]byte(body), &list) != nil || len(list.Jobs) != 2 {
		t.Fatalf("list: %d %s", code, body)
	}
	for _, tc := range []struct {
		path string
		code int
		want string
	}{
		{"/v1/jobs/" + list.Jobs[0].ID, 200, `"state":"queued"`},
		{"/v1/jobs/nope", 404, `job not found: \"nope\"`},
		{"/v1/jobs?state=queued&limit=1", 200, `"id":"` + list.Jobs[0].ID},
		{"/v1/jobs?state=exploded", 400, "is not one of"},
		{"/v1/jobs?limit=0", 400, "limit"},
		{"/metrics", 200, `flywheel_trainer_jobs_total{outcome="rejected"} 0`},
		{"/health/live", 200, ""},
		{"/health/ready", 200, ""},
	} {
		code, body := do(t, s, "GET", tc.path, bearer, "")
		if code != tc.code || !strings.Contains(body, tc.want) {
			t.Errorf("GET %s = %d %s, want %d containing %s", tc.path, code, body, tc.code, tc.want)
		}
	}
	s.Drain()
	if code, _ := do(t, s, "GET", "/health/ready", "", ""); code != http.StatusServiceUnavailable {
		t.Errorf("ready while draining = %d", code)
	}
}

// TestUnknownModelsRefused: an alert label or a retrain request naming a
// model the repository does not hold ("../outside", a typo) answers 400 and
// queues nothing.
func TestUnknownModelsRefused(t *testing.T) {
	st, err := jobs.Open(context.Background(), jobs.Options{Path: filepath.Join(t.TempDir(), "jobs.db")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	s, err := New(Options{Store: st, Token: token, DefaultModel: "ridership", CheckModel: func(m string) error {
		if m != "ridership" {
			return errors.New("no such model")
		}
		return nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	bearer := "Bearer " + token
	alertFor := func(model string) string {
		return `{"version":"4","groupKey":"g","status":"firing","receiver":"r","alerts":[{"status":"firing","labels":{"alertname":"Drift","action":"retrain","model":"` + model + `"},"startsAt":"2026-01-01T00:00:00Z"}]}`
	}
	for _, tc := range []struct{ path, body string }{
		{"/v1/alerts", alertFor("../outside")},
		{"/v1/alerts", alertFor("nope")},
		{"/v1/retrain", `{"model":"../outside"}`},
	} {
		if code, body := do(t, s, "POST", tc.path, bearer, tc.body); code != 400 || !strings.Contains(body, "no such model") {
			t.Errorf("%s %s: %d %s, want 400", tc.path, tc.body, code, body)
		}
	}
	if list, _ := st.List(context.Background(), jobs.ListOptions{}); len(list) != 0 {
		t.Errorf("%d jobs queued for unknown models", len(list))
	}
	if code, body := do(t, s, "POST", "/v1/alerts", bearer, alertFor("ridership")); code != 202 {
		t.Errorf("alert for a known model: %d %s", code, body)
	}
}
