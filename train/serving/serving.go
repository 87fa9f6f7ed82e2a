// Package serving is the trainer's client of the serve API: it exports the
// labelled feedback (GET /v1/feedback/export, NDJSON) and asks whether a
// model version is ready (GET /v2/models/{m}/versions/{v}/ready).
package serving

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/flywheel-ml/flywheel/train/pipeline"
)

// Client talks to one serve instance.
type Client struct {
	BaseURL string       // e.g. http://127.0.0.1:8080
	Token   string       // serve's admin token, for the export
	HTTP    *http.Client // http.DefaultClient when nil
}

var (
	_ pipeline.FeedbackSource = (*Client)(nil)
	_ pipeline.Serving        = (*Client)(nil)
)

// MaxLine bounds one NDJSON line.
const MaxLine = 4 << 20

func (c *Client) http() *http.Client {
	if c.HTTP != nil {
		return c.HTTP
	}
	return http.DefaultClient
}

func (c *Client) url(path string, q url.Values) string {
	u := strings.TrimRight(c.BaseURL, "/") + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	return u
}

// Export implements pipeline.FeedbackSource.
func (c *Client) Export(ctx context.Context, model string, since time.Time) ([]pipeline.Feedback, error) {
	q := url.Values{"model": {model}}
	if !since.IsZero() {
		q.Set("since", since.UTC().Format(time.RFC3339Nano))
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.url("/v1/feedback/export", q), nil)
	if err != nil {
		return nil, err
	}
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	req.Header.Set("Accept", "application/x-ndjson")
	resp, err := c.http().Do(req)
	if err != nil {
		return nil, fmt.Errorf("feedback export: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("feedback export: %s: %s", resp.Status, errorBody(resp.Body))
	}
	return DecodeFeedback(resp.Body)
}

// DecodeFeedback reads a feedback export (one JSON object per line).
func DecodeFeedback(r io.Reader) ([]pipeline.Feedback, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), MaxLine)
	var out []pipeline.Feedback
	for line := 1; sc.Scan(); line++ {
		b := sc.Bytes()
		if len(strings.TrimSpace(string(b))) == 0 {
			continue
		}
		var f pipeline.Feedback
		if err := json.Unmarshal(b, &f); err != nil {
			return nil, fmt.Errorf("feedback export line %d: %w", line, err)
		}
		out = append(out, f)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("feedback export: %w", err)
	}
	return out, nil
}

// VersionReady implements pipeline.Serving: 200 is ready; 400, 404 and 503
// are "not (yet) ready"; anything else is an error.
func (c *Client) VersionReady(ctx context.Context, model string, version int) (bool, error) {
	p := "/v2/models/" + url.PathEscape(model) + "/versions/" + strconv.Itoa(version) + "/ready"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.url(p, nil), nil)
	if err != nil {
		return false, err
	}
	resp, err := c.http().Do(req)
	if err != nil {
		return false, fmt.Errorf("readiness of %s v%d: %w", model, version, err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	switch resp.StatusCode {
	case http.StatusOK:
		return true, nil
	case http.StatusBadRequest, http.StatusNotFound, http.StatusServiceUnavailable:
		return false, nil
	}
	return false, fmt.Errorf("readiness of %s v%d: %s", model, version, resp.Status)
}

func errorBody(r io.Reader) string {
	b, _ := io.ReadAll(io.LimitReader(r, 4096))
	var e struct {
		Error string `json:"error"`
	}
	if json.Unmarshal(b, &e) == nil && e.Error != "" {
		return e.Error
	}
	if s := strings.TrimSpace(string(b)); s != "" {
		return s
	}
	return errors.New("no body").Error()
}
