// Package alert decodes and validates Alertmanager webhook notifications
// (payload version 4) and picks out the alerts that ask for retraining.
package alert

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
)

// Version is the only webhook payload version accepted.
const Version = "4"

// ActionLabel and RetrainAction select the alerts that start a retraining job:
// a firing alert labelled action="retrain".
const (
	ActionLabel   = "action"
	RetrainAction = "retrain"
	ModelLabel    = "model"
)

// MaxBodyBytes bounds a webhook body; Alertmanager groups are small.
const MaxBodyBytes = 1 << 20

// Message is an Alertmanager webhook notification, payload version 4
// (alertmanager notify/webhook).
type Message struct {
	Version           string            `json:"version"`
	GroupKey          string            `json:"groupKey"`
	TruncatedAlerts   uint64            `json:"truncatedAlerts"`
	Status            string            `json:"status"`
	Receiver          string            `json:"receiver"`
	GroupLabels       map[string]string `json:"groupLabels"`
	CommonLabels      map[string]string `json:"commonLabels"`
	CommonAnnotations map[string]string `json:"commonAnnotations"`
	ExternalURL       string            `json:"externalURL"`
	Alerts            []Alert           `json:"alerts"`
}

// Alert is one alert of a notification.
type Alert struct {
	Status       string            `json:"status"`
	Labels       map[string]string `json:"labels"`
	Annotations  map[string]string `json:"annotations"`
	StartsAt     time.Time         `json:"startsAt"`
	EndsAt       time.Time         `json:"endsAt"`
	GeneratorURL string            `json:"generatorURL"`
	Fingerprint  string            `json:"fingerprint"`
}

// Statuses of a notification and of an alert.
const (
	StatusFiring   = "firing"
	StatusResolved = "resolved"
)

// ValidationError says what is wrong with a payload; the HTTP layer answers
// 400 with its message.
type ValidationError struct {
	Field  string
	Reason string
}

func (e *ValidationError) Error() string {
	if e.Field == "" {
		return "invalid webhook payload: " + e.Reason
	}
	return fmt.Sprintf("invalid webhook payload: %s: %s", e.Field, e.Reason)
}

// Decode reads one notification strictly (unknown top-level fields are
// tolerated, as Alertmanager may add some; wrong types are not) and validates it.
func Decode(r io.Reader) (*Message, error) {
	body, err := io.ReadAll(io.LimitReader(r, MaxBodyBytes+1))
	if err != nil {
		return nil, fmt.Errorf("reading webhook body: %w", err)
	}
	if len(body) > MaxBodyBytes {
		return nil, &ValidationError{Reason: fmt.Sprintf("body larger than %d bytes", MaxBodyBytes)}
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return nil, &ValidationError{Reason: "empty body"}
	}
	var m Message
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(&m); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return nil, &ValidationError{Field: te.Field, Reason: fmt.Sprintf("want %s, got JSON %s", te.Type, te.Value)}
		}
		return nil, &ValidationError{Reason: "malformed JSON: " + err.Error()}
	}
	if dec.More() {
		return nil, &ValidationError{Reason: "trailing data after the JSON object"}
	}
	if err := m.Validate(); err != nil {
		return nil, err
	}
	return &m, nil
}

// Validate checks the fields the trainer relies on.
func (m *Message) Validate() error {
	switch {
	case m.Version != Version:
		return &ValidationError{Field: "version", Reason: fmt.Sprintf("%q is not supported, want %q", m.Version, Version)}
	case strings.TrimSpace(m.GroupKey) == "":
		return &ValidationError{Field: "groupKey", Reason: "is empty"}
	case m.Status != StatusFiring && m.Status != StatusResolved:
		return &ValidationError{Field: "status", Reason: fmt.Sprintf("%q is neither %q nor %q", m.Status, StatusFiring, StatusResolved)}
	case len(m.Alerts) == 0:
		return &ValidationError{Field: "alerts", Reason: "is empty"}
	}
	for i, a := range m.Alerts {
		field := fmt.Sprintf("alerts[%d]", i)
		if a.Status != StatusFiring && a.Status != StatusResolved {
			return &ValidationError{Field: field + ".status", Reason: fmt.Sprintf("%q is neither %q nor %q", a.Status, StatusFiring, StatusResolved)}
		}
		if len(a.Labels) == 0 {
			return &ValidationError{Field: field + ".labels", Reason: "is empty"}
		}
		if a.Labels["alertname"] == "" {
			return &ValidationError{Field: field + ".labels", Reason: "has no alertname"}
		}
		if a.StartsAt.IsZero() {
			return &ValidationError{Field: field + ".startsAt", Reason: "is missing"}
		}
	}
	return nil
}

// Retrain returns the alerts that ask for retraining: firing and labelled
// action="retrain". A resolved notification never starts work.
func (m *Message) Retrain() []Alert {
	var out []Alert
	for _, a := range m.Alerts {
		if a.Status == StatusFiring && a.Labels[ActionLabel] == RetrainAction {
			out = append(out, a)
		}
	}
	return out
}

// FiredAt is the earliest StartsAt of the given alerts (zero when none).
func FiredAt(alerts []Alert) time.Time {
	var t time.Time
	for _, a := range alerts {
		if t.IsZero() || a.StartsAt.Before(t) {
			t = a.StartsAt
		}
	}
	return t
}

// Names returns the distinct alertnames of the given alerts, in order.
func Names(alerts []Alert) []string {
	seen := map[string]bool{}
	var out []string
	for _, a := range alerts {
		n := a.Labels["alertname"]
		if !seen[n] {
			seen[n] = true
			out = append(out, n)
		}
	}
	return out
}
