package pipeline

import (
	"bufio"
	"crypto/sha256"
	"encoding/csv"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"time"
)

// snapshot is the data of one job: every usable row, split into the training
// window and the freshest labelled holdout.
type snapshot struct {
	Digest        string // "sha256:<hex>" of the snapshot file: the data version
	Path          string // snapshot.csv: all rows with source and split
	TrainPath     string // train.csv: what the trainer sees
	Names         []string
	Train         []Row
	Holdout       []Row
	BaseRows      int
	FeedbackRows  int
	SkippedRows   int // feedback rows without a date or without every feature
	HoldoutSource string
}

type taggedRow struct {
	Row
	source string
	split  string
}

// feedbackRows turns exported feedback into rows in names order. A row's date
// is its "date" parameter (set by replay), else the day it was predicted.
func feedbackRows(fb []Feedback, names []string) (rows []Row, skipped int) {
	latest := map[string]Feedback{}
	var order []string
	for _, f := range fb {
		key := f.ID
		if key == "" {
			key = fmt.Sprintf("#%d", len(order))
		}
		prev, seen := latest[key]
		if !seen {
			order = append(order, key)
		}
		if !seen || !f.LabelledAt.Before(prev.LabelledAt) {
			latest[key] = f
		}
	}
	for _, key := range order {
		f := latest[key]
		date := f.PredictedAt.UTC().Truncate(24 * time.Hour)
		if s, ok := f.Parameters["date"].(string); ok {
			d, err := time.Parse(DateLayout, s)
			if err != nil {
				skipped++
				continue
			}
			date = d
		}
		if date.IsZero() {
			skipped++
			continue
		}
		x := make([]float64, len(names))
		ok := true
		for i, n := range names {
			v, has := f.Features[n]
			if !has {
				ok = false
				break
			}
			x[i] = v
		}
		if !ok {
			skipped++
			continue
		}
		rows = append(rows, Row{Date: date, Features: x, Label: f.Label})
	}
	return rows, skipped
}

// reorder maps base rows to the champion's feature order.
func reorder(b *Base, names []string) ([]Row, error) {
	idx := make([]int, len(names))
	pos := map[string]int{}
	for i, n := range b.Names {
		pos[n] = i
	}
	for i, n := range names {
		j, ok := pos[n]
		if !ok {
			return nil, fmt.Errorf("base dataset %s has no feature %q", b.Name, n)
		}
		idx[i] = j
	}
	out := make([]Row, len(b.Rows))
	for r, row := range b.Rows {
		x := make([]float64, len(names))
		for i, j := range idx {
			x[i] = row.Features[j]
		}
		out[r] = Row{Date: row.Date, Features: x, Label: row.Label}
	}
	return out, nil
}

// split builds the snapshot's training and holdout rows.
func split(base, feedback []Row, cfg Config, windowDays int) (train, holdout []Row, all []taggedRow, source string) {
	for _, r := range base {
		all = append(all, taggedRow{Row: r, source: "base"})
	}
	for _, r := range feedback {
		all = append(all, taggedRow{Row: r, source: "feedback"})
	}
	sort.SliceStable(all, func(i, j int) bool { return all[i].Date.Before(all[j].Date) })

	// The holdout is the freshest labelled feedback; without enough feedback,
	// the freshest rows of all.
	pool := "feedback"
	var cand []int
	for i, r := range all {
		if r.source == "feedback" {
			cand = append(cand, i)
		}
	}
	if len(cand) < cfg.MinHoldout {
		pool = "all rows"
		cand = cand[:0]
		for i := range all {
			cand = append(cand, i)
		}
	}
	if len(cand) == 0 {
		return nil, nil, all, pool
	}
	last := all[cand[len(cand)-1]].Date
	start := last.AddDate(0, 0, -(cfg.HoldoutDays - 1))
	var hold []int
	for _, i := range cand {
		if !all[i].Date.Before(start) {
			hold = append(hold, i)
		}
	}
	if len(hold) < cfg.MinHoldout {
		hold = cand[max(0, len(cand)-cfg.MinHoldout):]
		start = all[hold[0]].Date
	}
	inHold := map[int]bool{}
	for _, i := range hold {
		inHold[i] = true
		all[i].split = "holdout"
		holdout = append(holdout, all[i].Row)
	}
	var from time.Time
	if windowDays > 0 {
		from = start.AddDate(0, 0, -windowDays)
	}
	for i := range all {
		if inHold[i] {
			continue
		}
		if all[i].Date.Before(start) && !all[i].Date.Before(from) {
			all[i].split = "train"
			train = append(train, all[i].Row)
		} else {
			all[i].split = "unused"
		}
	}
	return train, holdout, all, pool
}

func formatFloat(v float64) string { return strconv.FormatFloat(v, 'g', -1, 64) }

// writeSnapshot writes every row with its source and split and returns the
// file's digest.
func writeSnapshot(path string, names []string, target string, all []taggedRow) (string, error) {
	f, err := os.Create(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	w := csv.NewWriter(io.MultiWriter(f, h))
	header := append(append([]string{"date"}, names...), target, "source", "split")
	if err := w.Write(header); err != nil {
		return "", err
	}
	rec := make([]string, len(header))
	for _, r := range all {
		rec[0] = r.Date.Format(DateLayout)
		for i, v := range r.Features {
			rec[1+i] = formatFloat(v)
		}
		rec[1+len(names)] = formatFloat(r.Label)
		rec[2+len(names)] = r.source
		rec[3+len(names)] = r.split
		if err := w.Write(rec); err != nil {
			return "", err
		}
	}
	w.Flush()
	if err := w.Error(); err != nil {
		return "", err
	}
	if err := f.Sync(); err != nil {
		return "", err
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil)), f.Close()
}

// writeRows writes the trainer's CSV: date, features, target.
func writeRows(path string, names []string, target string, rows []Row) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	bw := bufio.NewWriter(f)
	w := csv.NewWriter(bw)
	header := append(append([]string{"date"}, names...), target)
	if err := w.Write(header); err != nil {
		return err
	}
	rec := make([]string, len(header))
	for _, r := range rows {
		rec[0] = r.Date.Format(DateLayout)
		for i, v := range r.Features {
			rec[1+i] = formatFloat(v)
		}
		rec[len(rec)-1] = formatFloat(r.Label)
		if err := w.Write(rec); err != nil {
			return err
		}
	}
	w.Flush()
	if err := w.Error(); err != nil {
		return err
	}
	if err := bw.Flush(); err != nil {
		return err
	}
	return f.Close()
}
