package alert

import (
	"errors"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestDecodeFiring(t *testing.T) {
	f, err := os.Open("testdata/firing.json")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	m, err := Decode(f)
	if err != nil {
		t.Fatal(err)
	}
	if m.GroupKey != `{}/{action="retrain"}:{alertname="FeatureDrift"}` {
		t.Errorf("groupKey = %q", m.GroupKey)
	}
	r := m.Retrain()
	if len(r) != 2 {
		t.Fatalf("retrain alerts = %d, want 2 (firing and action=retrain only)", len(r))
	}
	if got, want := FiredAt(r), time.Date(2026, 1, 1, 0, 0, 5, 0, time.UTC); !got.Equal(want) {
		t.Errorf("FiredAt = %v, want %v", got, want)
	}
	if got := Names(r); !reflect.DeepEqual(got, []string{"FeatureDrift"}) {
		t.Errorf("Names = %v", got)
	}
}

func TestDecodeInvalid(t *testing.T) {
	const alert = `{"status":"firing","labels":{"alertname":"X","action":"retrain"},"startsAt":"2026-01-01T00:00:00Z"}`
	for _, tc := range []struct {
		name, body, want string
	}{
		{"empty", ``, "empty body"},
		{"not json", `{"version":`, "malformed JSON"},
		{"array", `[]`, "want alert.Message"},
		{"trailing", `{"version":"4","groupKey":"k","status":"firing","alerts":[` + alert + `]} {}`, "trailing data"},
		{"version", `{"version":"3","groupKey":"k","status":"firing","alerts":[` + alert + `]}`, `version: "3" is not supported`},
		{"no version", `{"groupKey":"k","status":"firing","alerts":[` + alert + `]}`, `version: "" is not supported`},
		{"groupKey", `{"version":"4","groupKey":" ","status":"firing","alerts":[` + alert + `]}`, "groupKey: is empty"},
		{"status", `{"version":"4","groupKey":"k","status":"burning","alerts":[` + alert + `]}`, `status: "burning"`},
		{"no alerts", `{"version":"4","groupKey":"k","status":"firing","alerts":[]}`, "alerts: is empty"},
		{"alerts type", `{"version":"4","groupKey":"k","status":"firing","alerts":{}}`, "alerts: want []alert.Alert"},
		{"labels type", `{"version":"4","groupKey":"k","status":"firing","alerts":[{"status":"firing","labels":[1]}]}`, "alerts.labels: want map[string]string"},
		{"alert status", `{"version":"4","groupKey":"k","status":"firing","alerts":[{"status":"x","labels":{"alertname":"X"},"startsAt":"2026-01-01T00:00:00Z"}]}`, `alerts[0].status`},
		{"no labels", `{"version":"4","groupKey":"k","status":"firing","alerts":[{"status":"firing","startsAt":"2026-01-01T00:00:00Z"}]}`, `alerts[0].labels: is empty`},
		{"no alertname", `{"version":"4","groupKey":"k","status":"firing","alerts":[{"status":"firing","labels":{"a":"b"},"startsAt":"2026-01-01T00:00:00Z"}]}`, `has no alertname`},
		{"no startsAt", `{"version":"4","groupKey":"k","status":"firing","alerts":[{"status":"firing","labels":{"alertname":"X"}}]}`, `alerts[0].startsAt: is missing`},
		{"bad time", `{"version":"4","groupKey":"k","status":"firing","alerts":[{"status":"firing","labels":{"alertname":"X"},"startsAt":"yesterday"}]}`, `malformed JSON`},
		{"too big", `{"version":"4","groupKey":"` + strings.Repeat("k", MaxBodyBytes) + `"}`, "larger than"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Decode(strings.NewReader(tc.body))
			var ve *ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("err = %v, want a ValidationError", err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %q, want it to contain %q", err, tc.want)
			}
		})
	}
}

func TestRetrainSelection(t *testing.T) {
	m := Message{Status: StatusResolved, Alerts: []Alert{
		{Status: StatusResolved, Labels: map[string]string{"alertname": "A", "action": "retrain"}},
		{Status: StatusFiring, Labels: map[string]string{"alertname": "B", "action": "page"}},
	}}
	if got := m.Retrain(); len(got) != 0 {
		t.Errorf("Retrain = %v, want none", got)
	}
}
