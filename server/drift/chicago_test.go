package drift

import (
	"encoding/csv"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/flywheel-ml/flywheel/internal/modelrepo"
)

// chicagoPaths are where the dataset lives: the repository's copy once it has
// one, then the shared copy of the development machines.
var chicagoPaths = []string{
	filepath.Join("..", "..", "data", "chicago", "chicago.csv"),
	"/work/shared/datasets/chicago/chicago.csv",
}

// stationLags are the lagged ridership features of the dataset.
var stationLags = []string{"Austin", "Quincy_Wells", "Belmont", "Archer_35th", "Oak_Park", "Western",
	"Clark_Lake", "Clinton", "Merchandise_Mart", "Irving_Park", "Washington_Wells", "Harlem", "Monroe",
	"Polk", "Ashland", "Kedzie", "Addison", "Jefferson_Park", "Montrose", "California"}

type chicago struct {
	features []string // numeric columns in CSV order without ridership and date, then dow
	dates    []time.Time
	x        [][]float64 // row → feature values
	y        []float64   // ridership
}

func loadChicago(t *testing.T) *chicago {
	t.Helper()
	var f *os.File
	var err error
	for _, p := range chicagoPaths {
		if f, err = os.Open(p); err == nil {
			break
		}
	}
	if err != nil {
		t.Fatalf("Chicago dataset not found in %v: %v", chicagoPaths, err)
	}
	defer f.Close()
	recs, err := csv.NewReader(f).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	head := recs[0]
	d := &chicago{}
	var cols []int
	target, date := -1, -1
	for i, h := range head {
		switch h {
		case "ridership":
			target = i
		case "date":
			date = i
		default:
			cols = append(cols, i)
			d.features = append(d.features, h)
		}
	}
	d.features = append(d.features, "dow")
	for _, r := range recs[1:] {
		day, err := time.Parse(time.DateOnly, r[date])
		if err != nil {
			t.Fatal(err)
		}
		row := make([]float64, 0, len(cols)+1)
		for _, c := range cols {
			v, err := strconv.ParseFloat(r[c], 64)
			if err != nil {
				t.Fatalf("%s %s: %v", r[date], head[c], err)
			}
			row = append(row, v)
		}
		row = append(row, float64((day.Weekday()+6)%7)) // 0 = Monday
		y, err := strconv.ParseFloat(r[target], 64)
		if err != nil {
			t.Fatal(err)
		}
		d.dates, d.x, d.y = append(d.dates, day), append(d.x, row), append(d.y, y)
	}
	return d
}

// between returns the row indices with from ≤ date ≤ until.
func (d *chicago) between(from, until string) []int {
	f, _ := time.Parse(time.DateOnly, from)
	u, _ := time.Parse(time.DateOnly, until)
	var idx []int
	for i, day := range d.dates {
		if !day.Before(f) && !day.After(u) {
			idx = append(idx, i)
		}
	}
	return idx
}

// reference builds a card reference from rows idx with the 10-quantile-bin
// rule, as the trainer does for a model trained on them (the ridership
// target stands in for the prediction of a perfect model).
func (d *chicago) reference(t *testing.T, idx []int) *modelrepo.Reference {
	t.Helper()
	ref := &modelrepo.Reference{Features: map[string]modelrepo.Histogram{}}
	for j, name := range d.features {
		col := make([]float64, len(idx))
		for k, i := range idx {
			col[k] = d.x[i][j]
		}
		h, err := modelrepo.NewHistogram(col, modelrepo.Bins)
		if err != nil {
			t.Fatal(err)
		}
		ref.Features[name] = h
	}
	y := make([]float64, len(idx))
	for k, i := range idx {
		y[k] = d.y[i]
	}
	h, err := modelrepo.NewHistogram(y, modelrepo.Bins)
	if err != nil {
		t.Fatal(err)
	}
	ref.Prediction = &h
	return ref
}

// serve feeds rows idx to the monitor one request at a time.
func (d *chicago) serve(m *Monitor, version int, idx []int) {
	for _, i := range idx {
		in := make([]float32, len(d.x[i]))
		for j, v := range d.x[i] {
			in[j] = float32(v)
		}
		for !m.Observe("ridership", version, in, []float32{float32(d.y[i])}) {
			m.Sync() // queue full: apply what is queued, then retry
		}
	}
	m.Sync()
}

func TestChicagoDrift(t *testing.T) {
	d := loadChicago(t)
	train := d.between("2001-01-22", "2011-12-31")
	recent := d.between("2015-01-01", "2016-08-28")
	if len(train) < 3000 || len(recent) < 500 {
		t.Fatalf("unexpected dataset: %d training rows, %d recent rows", len(train), len(recent))
	}
	ref := d.reference(t, train)
	m, _ := newMonitor(t, DefaultConfig())

	// Version 1 serves a window of 1,000 rows drawn from the training period.
	m.Add("ridership", 1, d.features, ref)
	rng := rand.New(rand.NewPCG(1, 2))
	like := make([]int, DefaultConfig().Window)
	for k := range like {
		like[k] = train[rng.IntN(len(train))]
	}
	d.serve(m, 1, like)
	st, _ := m.Status("ridership", 1)
	if st.Rows != 1000 || len(st.Features) != len(d.features) || st.Prediction == nil {
		t.Fatalf("status of the in-distribution window: rows %d, %d features, prediction %v", st.Rows, len(st.Features), st.Prediction)
	}
	worst, worstName := 0.0, ""
	for name, psi := range st.Features {
		if psi >= 0.1 {
			t.Errorf("2001–2011 rows: PSI(%s) = %.4f, want < 0.1", name, psi)
		}
		if psi > worst {
			worst, worstName = psi, name
		}
	}
	if *st.Prediction >= 0.1 {
		t.Errorf("2001–2011 rows: prediction PSI = %.4f, want < 0.1", *st.Prediction)
	}
	t.Logf("2001–2011 sample (1000 rows): max feature PSI %.4f (%s), prediction PSI %.4f", worst, worstName, *st.Prediction)

	// Version 2 (same reference) serves 2015–2016 in date order.
	m.Add("ridership", 2, d.features, ref)
	d.serve(m, 2, recent)
	st, _ = m.Status("ridership", 2)
	if st.Rows != len(recent) {
		t.Fatalf("rows = %d, want %d", st.Rows, len(recent))
	}
	var lines []string
	for _, name := range stationLags {
		psi := st.Features[name]
		if psi <= 0.2 {
			t.Errorf("2015–2016 rows: PSI(%s) = %.4f, want > 0.2", name, psi)
		}
		lines = append(lines, fmt.Sprintf("%s=%.2f", name, psi))
	}
	var other []string
	for name, psi := range st.Features {
		if psi > 0.2 && !contains(stationLags, name) {
			other = append(other, fmt.Sprintf("%s=%.2f", name, psi))
		}
	}
	sort.Strings(other)
	t.Logf("2015–2016 (%d rows): lagged ridership PSI %s", len(recent), strings.Join(lines, " "))
	t.Logf("2015–2016: other features above 0.2: %v; prediction PSI %.2f", other, *st.Prediction)
}

func contains(xs []string, x string) bool {
	for _, v := range xs {
		if v == x {
			return true
		}
	}
	return false
}
