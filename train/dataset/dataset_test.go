package dataset

import (
	"github.com/flywheel-ml/flywheel/train/features"

	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const chicago = "../../data/chicago/chicago.csv"

func date(s string) time.Time {
	t, err := ParseDate(s)
	if err != nil {
		panic(err)
	}
	return t
}

func TestLoadChicago(t *testing.T) {
	d, err := Load(chicago)
	if err != nil {
		t.Fatal(err)
	}
	if len(d.Rows) != 5698 || d.Name != "chicago" {
		t.Fatalf("%d rows, name %q", len(d.Rows), d.Name)
	}
	sums, err := os.ReadFile("../../data/chicago/SHA256SUMS")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(sums), d.SHA256+" ") {
		t.Fatalf("file sha256 %s does not match SHA256SUMS %q", d.SHA256, sums)
	}
	first := d.Rows[0]
	if first.Target != 15.732 || first.Values[0] != 1.463 || first.Date != date("2001-01-22") {
		t.Fatalf("first row %+v", first)
	}
	if f := first.Vector(d.FeatureSet("")); len(f) != features.Count || f[48] != 0 || f[49] != 0 {
		t.Fatalf("features %v", f)
	}
	h := d.History()
	if y, ok := h.At(date("2002-01-21"), 364); !ok || y != first.Target {
		t.Fatalf("history: 364 days before 2002-01-21 = %v (%v), want %v", y, ok, first.Target)
	}

	tr, err := d.Select(date("2001-01-22"), date("2011-12-31"))
	if err != nil {
		t.Fatal(err)
	}
	te, err := d.Select(date("2012-01-01"), date("2012-12-31"))
	if err != nil {
		t.Fatal(err)
	}
	if len(tr.Rows) != 3996 || len(te.Rows) != 366 {
		t.Fatalf("train %d test %d rows", len(tr.Rows), len(te.Rows))
	}
	if !strings.HasPrefix(tr.Digest, "sha256:") || tr.Digest == te.Digest {
		t.Fatalf("digests %s %s", tr.Digest, te.Digest)
	}
	again, _ := d.Select(date("2001-01-01"), date("2011-12-31")) // same rows, wider bounds
	if again.Digest != tr.Digest {
		t.Fatalf("digest depends on bounds, not rows: %s vs %s", again.Digest, tr.Digest)
	}
	if _, err := d.Select(date("2020-01-01"), date("2020-12-31")); !errors.Is(err, ErrNoRows) {
		t.Fatalf("empty range: %v", err)
	}
}

func TestParseErrors(t *testing.T) {
	b, err := os.ReadFile(chicago)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.SplitN(string(b), "\n", 5)
	header, row1, row2 := lines[0], lines[1], lines[2]
	cases := []struct {
		name, data, want string
	}{
		{"empty file", "", "empty file"},
		{"blank file", " \n\n", "empty file"},
		{"header only", header + "\n", "no data rows"},
		{"missing column", strings.Replace(header, `"temp_max",`, "", 1) + "\n", `missing column(s) "temp_max"`},
		{"missing target", strings.Replace(header, `"ridership"`, `"riders"`, 1) + "\n", `"ridership"`},
		{"non-numeric cell", header + "\n" + strings.Replace(row1, "15.732,1.463", "15.732,abc", 1) + "\n",
			`row 1 (line 2, 2001-01-22), column "Austin": "abc" is not a number`},
		{"missing value", header + "\n" + row1 + "\n" + strings.Replace(row2, "15.762,", "NA,", 1) + "\n",
			`row 2 (line 3, 2001-01-23), column "ridership": missing value`},
		{"empty cell", header + "\n" + strings.Replace(row1, ",0.708333333333333,", ",,", 1) + "\n",
			`column "weather_cloud": missing value`},
		{"bad date", header + "\n" + strings.Replace(row1, "2001-01-22", "22/01/2001", 1) + "\n", `is not a date`},
		{"dates out of order", header + "\n" + row2 + "\n" + row1 + "\n", "dates must increase"},
		{"short row", header + "\n" + row1[:40] + "\n", "line 2"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "x.csv")
			if err := os.WriteFile(p, []byte(tc.data), 0o644); err != nil {
				t.Fatal(err)
			}
			_, err := Load(p)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("want error containing %q, got %v", tc.want, err)
			}
		})
	}
}
