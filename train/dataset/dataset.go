// Package dataset loads and validates the Chicago ridership CSV, selects date
// ranges and identifies exactly which rows a model was trained on (the
// project's data versioning: a digest of the file bytes plus the row range).
package dataset

import (
	"bytes"
	"crypto/sha256"
	"encoding/csv"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/flywheel-ml/flywheel/train/features"
)

// ErrNoRows is returned when a file or a date range holds no rows.
var ErrNoRows = errors.New("no rows")

// Row is one day: its date, the numeric input columns in
// features.NumericColumns order, and the target.
type Row struct {
	Date   time.Time
	Values []float64
	Target float64
}

// History returns the target of every row by date, for the lag features.
func (d *Dataset) History() features.History {
	h := make(features.History, len(d.Rows))
	for _, r := range d.Rows {
		h.Add(r.Date, r.Target)
	}
	return h
}

// FeatureSet returns the feature set with the given weather choice whose
// lags come from this dataset.
func (d *Dataset) FeatureSet(weather string) features.Set {
	return features.Set{Weather: weather, History: d.History()}
}

// Vector returns the row's feature vector in set s.
func (r Row) Vector(s features.Set) []float64 {
	v, err := s.Vector(r.Values, r.Date)
	if err != nil { // Values always has the right length for rows made by Parse
		panic(err)
	}
	return v
}

// Dataset is a validated dataset file held in memory.
type Dataset struct {
	Name   string // e.g. "chicago" (the file name without extension)
	Source string // the path it was read from
	SHA256 string // hex sha256 of the file bytes
	Rows   []Row  // in file order, dates strictly increasing
}

// Load reads and validates the CSV file at path.
func Load(path string) (*Dataset, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading dataset: %w", err)
	}
	name := strings.TrimSuffix(filepath.Base(path), filepath.Ext(path))
	d, err := Parse(name, b)
	if err != nil {
		return nil, fmt.Errorf("dataset %s: %w", path, err)
	}
	d.Source = path
	return d, nil
}

// Parse validates CSV bytes: a header with the target, the date and every
// numeric feature column (extra columns are ignored), then one row a day with
// a number in every used cell. Errors name the row (and its file line) and the column.
func Parse(name string, data []byte) (*Dataset, error) {
	sum := sha256.Sum256(data)
	d := &Dataset{Name: name, SHA256: hex.EncodeToString(sum[:])}
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, fmt.Errorf("empty file: %w", ErrNoRows)
	}
	r := csv.NewReader(bytes.NewReader(data))
	r.ReuseRecord = true
	header, err := r.Read()
	if err != nil {
		return nil, fmt.Errorf("reading header: %w", err)
	}
	col := make(map[string]int, len(header))
	for i, h := range header {
		h = strings.TrimSpace(strings.TrimPrefix(h, "\ufeff"))
		if _, dup := col[h]; dup {
			return nil, fmt.Errorf("header: column %q appears twice", h)
		}
		col[h] = i
	}
	want := append([]string{features.Target, features.DateColumn}, features.NumericColumns()...)
	var missing []string
	for _, w := range want {
		if _, ok := col[w]; !ok {
			missing = append(missing, w)
		}
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("header: missing column(s) %s", strings.Join(quote(missing), ", "))
	}
	numIdx := make([]int, features.NumNumeric)
	for i, n := range features.NumericColumns() {
		numIdx[i] = col[n]
	}
	numNames := features.NumericColumns()
	for {
		rec, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		line, _ := r.FieldPos(0)
		if err != nil {
			return nil, fmt.Errorf("row %d: %w", len(d.Rows)+1, err)
		}
		at := fmt.Sprintf("row %d (line %d", len(d.Rows)+1, line) // closed below, with the date when known
		row := Row{Values: make([]float64, features.NumNumeric)}
		ds := strings.TrimSpace(rec[col[features.DateColumn]])
		if ds == "" || ds == "NA" {
			return nil, fmt.Errorf("%s), column %q: missing value", at, features.DateColumn)
		}
		row.Date, err = time.Parse(features.DateLayout, ds)
		if err != nil {
			return nil, fmt.Errorf("%s), column %q: %q is not a date (want YYYY-MM-DD)", at, features.DateColumn, ds)
		}
		if n := len(d.Rows); n > 0 && !row.Date.After(d.Rows[n-1].Date) {
			return nil, fmt.Errorf("%s), column %q: %s does not follow %s (dates must increase)", at,
				features.DateColumn, ds, d.Rows[n-1].Date.Format(features.DateLayout))
		}
		if row.Target, err = number(rec[col[features.Target]]); err != nil {
			return nil, fmt.Errorf("%s, %s), column %q: %w", at, ds, features.Target, err)
		}
		for i, ci := range numIdx {
			if row.Values[i], err = number(rec[ci]); err != nil {
				return nil, fmt.Errorf("%s, %s), column %q: %w", at, ds, numNames[i], err)
			}
		}
		d.Rows = append(d.Rows, row)
	}
	if len(d.Rows) == 0 {
		return nil, fmt.Errorf("header but no data rows: %w", ErrNoRows)
	}
	return d, nil
}

func number(s string) (float64, error) {
	s = strings.TrimSpace(s)
	if s == "" || s == "NA" || strings.EqualFold(s, "nan") {
		return 0, errors.New("missing value")
	}
	v, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsInf(v, 0) || math.IsNaN(v) {
		return 0, fmt.Errorf("%q is not a number", s)
	}
	return v, nil
}

func quote(ss []string) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = strconv.Quote(s)
	}
	return out
}

// Selection is the rows of a dataset between two dates, inclusive, with the
// digest that identifies them.
type Selection struct {
	Name   string
	Source string
	From   time.Time // date of the first row
	Until  time.Time // date of the last row
	Rows   []Row
	Digest string // "sha256:…", see Digest
}

// Select returns the rows with from ≤ date ≤ until. A zero from or until is
// open. No rows in the range is an error wrapping ErrNoRows.
func (d *Dataset) Select(from, until time.Time) (*Selection, error) {
	var rows []Row
	for _, r := range d.Rows {
		if (!from.IsZero() && r.Date.Before(from)) || (!until.IsZero() && r.Date.After(until)) {
			continue
		}
		rows = append(rows, r)
	}
	if len(rows) == 0 {
		return nil, fmt.Errorf("dataset %s has no rows from %s until %s: %w", d.Name, fmtDate(from), fmtDate(until), ErrNoRows)
	}
	s := &Selection{Name: d.Name, Source: d.Source, Rows: rows, From: rows[0].Date, Until: rows[len(rows)-1].Date}
	s.Digest = Digest(d.SHA256, s.From, s.Until, len(rows))
	return s, nil
}

func fmtDate(t time.Time) string {
	if t.IsZero() {
		return "(open)"
	}
	return t.Format(features.DateLayout)
}

// Digest identifies a row range of a file: "sha256:" + hex sha256 of the line
// "<file sha256 hex> <from> <until> <rows>\n" (dates YYYY-MM-DD).
func Digest(fileSHA256 string, from, until time.Time, rows int) string {
	line := fmt.Sprintf("%s %s %s %d\n", fileSHA256, from.Format(features.DateLayout), until.Format(features.DateLayout), rows)
	sum := sha256.Sum256([]byte(line))
	return "sha256:" + hex.EncodeToString(sum[:])
}

// ParseDate parses YYYY-MM-DD; "" is the zero time (an open end).
func ParseDate(s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	t, err := time.Parse(features.DateLayout, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("date %q: want YYYY-MM-DD", s)
	}
	return t, nil
}
