package pipeline

import (
	"context"
	"encoding/csv"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// CSVBase reads a base dataset CSV: a date column, the target column and
// numeric columns (any other column must be listed in Ignore). Without
// Features the numeric columns are the features, in file order; with it,
// Features derives the vector from the named values and the date (for
// ridership: train/features.FromMap, which adds day of week and holiday) and
// Names names its elements.
type CSVBase struct {
	Path       string
	DateColumn string // default "date"
	Target     string
	Ignore     []string
	Names      []string
	Features   func(values map[string]float64, date time.Time) ([]float64, error)
}

var _ BaseData = CSVBase{}

// Load implements BaseData.
func (b CSVBase) Load(ctx context.Context) (*Base, error) {
	f, err := os.Open(b.Path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	r := csv.NewReader(f)
	header, err := r.Read()
	if err != nil {
		return nil, fmt.Errorf("%s: header: %w", b.Path, err)
	}
	dateCol := b.DateColumn
	if dateCol == "" {
		dateCol = "date"
	}
	ignore := map[string]bool{}
	for _, n := range b.Ignore {
		ignore[n] = true
	}
	di, ti := -1, -1
	var fi []int
	out := &Base{Name: strings.TrimSuffix(filepath.Base(b.Path), filepath.Ext(b.Path)), Source: b.Path}
	for i, h := range header {
		switch {
		case h == dateCol:
			di = i
		case h == b.Target:
			ti = i
		case ignore[h]:
		default:
			fi = append(fi, i)
			out.Names = append(out.Names, h)
		}
	}
	if di < 0 || ti < 0 {
		return nil, fmt.Errorf("%s: need columns %q and %q", b.Path, dateCol, b.Target)
	}
	if b.Features != nil {
		out.Names = b.Names
	}
	for line := 2; ; line++ {
		if line%1024 == 0 && ctx.Err() != nil {
			return nil, ctx.Err()
		}
		rec, err := r.Read()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", b.Path, err)
		}
		d, err := time.Parse(DateLayout, rec[di])
		if err != nil {
			return nil, fmt.Errorf("%s:%d: date %q: %w", b.Path, line, rec[di], err)
		}
		y, err := strconv.ParseFloat(rec[ti], 64)
		if err != nil {
			return nil, fmt.Errorf("%s:%d: %s %q: %w", b.Path, line, b.Target, rec[ti], err)
		}
		x := make([]float64, len(fi))
		for k, i := range fi {
			if x[k], err = strconv.ParseFloat(rec[i], 64); err != nil {
				return nil, fmt.Errorf("%s:%d: %s %q: %w", b.Path, line, header[i], rec[i], err)
			}
		}
		if b.Features != nil {
			values := make(map[string]float64, len(fi))
			for k, i := range fi {
				values[header[i]] = x[k]
			}
			if x, err = b.Features(values, d); err != nil {
				return nil, fmt.Errorf("%s:%d: features: %w", b.Path, line, err)
			}
			if len(x) != len(b.Names) {
				return nil, fmt.Errorf("%s:%d: %d features for %d names", b.Path, line, len(x), len(b.Names))
			}
		}
		out.Rows = append(out.Rows, Row{Date: d, Features: x, Label: y})
	}
	return out, nil
}
