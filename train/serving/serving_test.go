package serving_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/flywheel-ml/flywheel/train/pipeline"
	"github.com/flywheel-ml/flywheel/train/serving"
	"github.com/flywheel-ml/flywheel/train/serving/servetest"
)

func TestExportAndReady(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	srv := servetest.New(dir, "adm")
	defer srv.Close()
	t0 := time.Date(2026, 1, 2, 0, 0, 0, 0, time.UTC)
	srv.AddFeedback(
		pipeline.Feedback{ID: "replay-2015-01-01", Model: "m", LabelledAt: t0, Features: map[string]float64{"a": 1}, Label: 3, Parameters: map[string]any{"date": "2015-01-01"}},
		pipeline.Feedback{ID: "x", Model: "other", LabelledAt: t0},
		pipeline.Feedback{ID: "old", Model: "m", LabelledAt: t0.Add(-time.Hour)},
	)
	c := &serving.Client{BaseURL: srv.URL, Token: "adm"}
	got, err := c.Export(ctx, "m", t0)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].ID != "replay-2015-01-01" || got[0].Features["a"] != 1 || got[0].Parameters["date"] != "2015-01-01" {
		t.Errorf("export = %+v", got)
	}
	if _, err := (&serving.Client{BaseURL: srv.URL, Token: "wrong"}).Export(ctx, "m", time.Time{}); err == nil || !strings.Contains(err.Error(), "admin token required") {
		t.Errorf("wrong token: %v", err)
	}
	if ok, err := c.VersionReady(ctx, "m", 2); ok || err != nil {
		t.Errorf("ready before publish = %v, %v", ok, err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "m", "2"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"model.onnx", "model.json"} {
		os.WriteFile(filepath.Join(dir, "m", "2", f), []byte("x"), 0o644)
	}
	if ok, err := c.VersionReady(ctx, "m", 2); !ok || err != nil {
		t.Errorf("ready after publish = %v, %v", ok, err)
	}
}

// TestExportNulls decodes a row the way serve writes one for a label whose
// prediction was not logged.
func TestExportNulls(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(`{"id":"a","model":"m","version":null,"predicted_at":null,"labelled_at":"2026-01-01T00:00:00Z","features":null,"label":2.5,"prediction":null,"parameters":null}` + "\n" +
			`{"id":"b","model":"m","version":2,"predicted_at":"2025-12-31T00:00:00Z","labelled_at":"2026-01-01T00:00:00Z","features":{"x":1},"label":1,"prediction":0.5,"parameters":{"date":"2015-01-01"}}` + "\n"))
	}))
	defer srv.Close()
	got, err := (&serving.Client{BaseURL: srv.URL}).Export(context.Background(), "m", time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].Version != nil || !got[0].PredictedAt.IsZero() || got[0].Label != 2.5 || *got[1].Version != 2 || got[1].Prediction != 0.5 {
		t.Errorf("rows = %+v", got)
	}
}

func TestExportErrors(t *testing.T) {
	for _, tc := range []struct {
		name, body string
		code       int
		want       string
	}{
		{"bad line", "{\"id\":\"a\"}\n{nope\n", 200, "line 2"},
		{"server error", `{"error":"database is locked"}`, 500, "database is locked"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(tc.code)
				w.Write([]byte(tc.body))
			}))
			defer srv.Close()
			_, err := (&serving.Client{BaseURL: srv.URL}).Export(context.Background(), "m", time.Time{})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want %q", err, tc.want)
			}
			if _, err := (&serving.Client{BaseURL: srv.URL}).VersionReady(context.Background(), "m", 1); tc.code == 500 && err == nil {
				t.Error("500 on ready must be an error")
			}
		})
	}
}
