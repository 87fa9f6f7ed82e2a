// Package mlflow is the tracker backend that speaks MLflow's tracking REST
// API (/api/2.0/mlflow/...) and its proxied artifact API
// (/api/2.0/mlflow-artifacts/...), with retries (exponential backoff with
// jitter on connection errors, 429 and 5xx, never on other 4xx) and a
// per-request timeout.
package mlflow

import (
	"fmt"
	"net/url"
	"time"
)

// Config configures the client. cmd/flywheel fills it from --tracking-uri or
// MLFLOW_TRACKING_URI, MLFLOW_TRACKING_TOKEN, MLFLOW_TRACKING_USERNAME and
// MLFLOW_TRACKING_PASSWORD; the package reads no environment itself.
type Config struct {
	TrackingURI  string        `yaml:"tracking_uri"`
	Token        Secret        `yaml:"token"`    // bearer token
	Username     string        `yaml:"username"` // basic auth, with Password
	Password     Secret        `yaml:"password"`
	Timeout      time.Duration `yaml:"timeout"`   // per attempt
	RetryMax     int           `yaml:"retry_max"` // retries after the first attempt
	RetryWaitMin time.Duration `yaml:"retry_wait_min"`
	RetryWaitMax time.Duration `yaml:"retry_wait_max"`
}

// Secret is a string that prints as <secret>.
type Secret string

func (s Secret) String() string {
	if s == "" {
		return ""
	}
	return "<secret>"
}

// MarshalYAML hides the value.
func (s Secret) MarshalYAML() (any, error) { return s.String(), nil }

// DefaultConfig: 10s per attempt, 4 retries between 250ms and 4s.
func DefaultConfig() Config {
	return Config{
		Timeout:      10 * time.Second,
		RetryMax:     4,
		RetryWaitMin: 250 * time.Millisecond,
		RetryWaitMax: 4 * time.Second,
	}
}

// Validate checks the URI and the retry settings.
func (c Config) Validate() error {
	u, err := url.Parse(c.TrackingURI)
	if err != nil {
		return fmt.Errorf("tracking_uri %q: %w", c.TrackingURI, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" {
		return fmt.Errorf("tracking_uri %q: must be an http(s) URL of an MLflow tracking server", c.TrackingURI)
	}
	if c.Token != "" && (c.Username != "" || c.Password != "") {
		return fmt.Errorf("at most one of token and username/password may be set")
	}
	if (c.Username == "") != (c.Password == "") {
		return fmt.Errorf("username and password must be set together")
	}
	if c.Timeout <= 0 {
		return fmt.Errorf("timeout %s: must be positive", c.Timeout)
	}
	if c.RetryMax < 0 {
		return fmt.Errorf("retry_max %d: must not be negative", c.RetryMax)
	}
	if c.RetryWaitMin <= 0 || c.RetryWaitMax < c.RetryWaitMin {
		return fmt.Errorf("retry_wait_min %s, retry_wait_max %s: need 0 < min <= max", c.RetryWaitMin, c.RetryWaitMax)
	}
	return nil
}
