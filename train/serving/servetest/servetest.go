// Package servetest is a stand-in for the two serve endpoints the trainer
// uses, for tests until the real serve runs in the end-to-end test: the
// feedback export (NDJSON, admin token) and version readiness, which it
// answers from the model repository on disk the way serve's repository does
// (a version is ready once its directory holds model.onnx and model.json).
package servetest

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/flywheel-ml/flywheel/internal/modelrepo"
	"github.com/flywheel-ml/flywheel/train/pipeline"
)

// Server is the stand-in.
type Server struct {
	*httptest.Server
	ModelsDir string
	Token     string

	mu       sync.Mutex
	feedback []pipeline.Feedback
	exports  int
}

// New starts a stand-in on 127.0.0.1.
func New(modelsDir, token string) *Server {
	s := &Server{ModelsDir: modelsDir, Token: token}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/feedback/export", s.export)
	mux.HandleFunc("GET /v2/models/{m}/versions/{v}/ready", s.ready)
	s.Server = httptest.NewServer(mux)
	return s
}

// AddFeedback appends labelled rows to the export.
func (s *Server) AddFeedback(f ...pipeline.Feedback) {
	s.mu.Lock()
	s.feedback = append(s.feedback, f...)
	s.mu.Unlock()
}

// Exports returns how many exports were served.
func (s *Server) Exports() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.exports
}

func (s *Server) export(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Authorization") != "Bearer "+s.Token {
		w.WriteHeader(http.StatusUnauthorized)
		_ = json.NewEncoder(w).Encode(map[string]string{"error": "admin token required"})
		return
	}
	model := r.URL.Query().Get("model")
	var since time.Time
	if v := r.URL.Query().Get("since"); v != "" {
		t, err := time.Parse(time.RFC3339Nano, v)
		if err != nil {
			w.WriteHeader(http.StatusBadRequest)
			_ = json.NewEncoder(w).Encode(map[string]string{"error": "since: " + err.Error()})
			return
		}
		since = t
	}
	s.mu.Lock()
	rows := append([]pipeline.Feedback(nil), s.feedback...)
	s.exports++
	s.mu.Unlock()
	w.Header().Set("Content-Type", "application/x-ndjson")
	enc := json.NewEncoder(w)
	for _, f := range rows {
		if (model == "" || f.Model == model) && !f.LabelledAt.Before(since) {
			_ = enc.Encode(f)
		}
	}
}

func (s *Server) ready(w http.ResponseWriter, r *http.Request) {
	dir := filepath.Join(s.ModelsDir, r.PathValue("m"), r.PathValue("v"))
	for _, f := range []string{modelrepo.ModelFile, modelrepo.CardFile} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
	}
	w.WriteHeader(http.StatusOK)
}
