package pipeline

import (
	"context"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestCSVBase(t *testing.T) {
	p := filepath.Join(t.TempDir(), "d.csv")
	os.WriteFile(p, []byte("date,a,note,y,b\n2020-01-06,1,x,10,2\n2020-01-07,3,y,11,4\n"), 0o644)
	b, err := CSVBase{Path: p, Target: "y", Ignore: []string{"note"}}.Load(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if b.Name != "d" || !reflect.DeepEqual(b.Names, []string{"a", "b"}) || !reflect.DeepEqual(b.Rows[1].Features, []float64{3, 4}) || b.Rows[1].Label != 11 {
		t.Errorf("base = %+v", b)
	}
	// With a feature function: derived features from values and the date.
	dow := func(v map[string]float64, d time.Time) ([]float64, error) {
		return []float64{v["b"], v["a"], float64((int(d.Weekday()) + 6) % 7)}, nil
	}
	b, err = CSVBase{Path: p, Target: "y", Ignore: []string{"note"}, Names: []string{"b", "a", "dow"}, Features: dow}.Load(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(b.Names, []string{"b", "a", "dow"}) || !reflect.DeepEqual(b.Rows[0].Features, []float64{2, 1, 0}) {
		t.Errorf("derived = %+v", b)
	}
	for _, tc := range []struct{ body, want string }{
		{"date,a\n2020-01-01,1\n", `need columns "date" and "y"`},
		{"date,a,y\n2020-01-01,1,x\n", `y "x"`},
		{"date,a,y\n01/01/2020,1,2\n", `date "01/01/2020"`},
		{"date,a,note,y\n2020-01-01,1,x,2\n", `note "x"`},
	} {
		os.WriteFile(p, []byte(tc.body), 0o644)
		if _, err := (CSVBase{Path: p, Target: "y"}).Load(context.Background()); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: %v, want %q", tc.body, err, tc.want)
		}
	}
}
