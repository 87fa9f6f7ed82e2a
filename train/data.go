package train

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/flywheel-ml/flywheel/train/dataset"
	"github.com/flywheel-ml/flywheel/train/features"
)

// Example is one labelled row: the model's feature vector (features.Names
// order), the target and the day it describes.
type Example struct {
	Date     time.Time
	Features []float64
	Target   float64
}

// Data is what a model is fitted and tested on. Build it with LoadData from
// a dataset file and date ranges, or fill it in memory (e.g. the base dataset
// plus labelled feedback rows); an empty Digest is then computed from the rows.
type Data struct {
	Name         string    // dataset name for the card, e.g. "chicago"
	Source       string    // where it came from (a path), optional
	FeatureNames []string  // names of Example.Features; nil means features.Names()
	Weather      string    // the feature set's weather choice, for the card ("" when unknown)
	Train        []Example // fitting rows (at least one)
	Test         []Example // evaluation rows (at least one)
	TrainDigest  string    // "sha256:…" identifying Train; computed when empty
	TestDigest   string    // "sha256:…" identifying Test; computed when empty
}

// Range names the inclusive date range of a split; a zero time is open.
type Range struct{ From, Until time.Time }

func (r Range) String() string {
	f := func(t time.Time) string {
		if t.IsZero() {
			return "…"
		}
		return t.Format(features.DateLayout)
	}
	return f(r.From) + " … " + f(r.Until)
}

// ErrNoRows is returned (wrapped) when a split has no rows.
var ErrNoRows = dataset.ErrNoRows

// LoadData reads and validates the dataset file at path and selects the
// training and test ranges; weather is the feature set's choice
// (features.WeatherObserved or features.WeatherNone). The digests are the
// file's sha256 plus each row range (dataset.Digest).
func LoadData(path, weather string, trainRange, testRange Range) (*Data, error) {
	d, err := dataset.Load(path)
	if err != nil {
		return nil, err
	}
	return FromDataset(d, weather, trainRange, testRange)
}

// FromDataset selects the training and test ranges of a loaded dataset. The
// lags come from the dataset itself; rows whose lags reach before its first
// day (its first 405 days) are left out of both ranges.
func FromDataset(d *dataset.Dataset, weather string, trainRange, testRange Range) (*Data, error) {
	if weather == "" {
		weather = features.WeatherObserved
	}
	set := d.FeatureSet(weather)
	if err := set.Validate(); err != nil {
		return nil, err
	}
	var warm time.Time
	for _, r := range d.Rows {
		if set.HasLags(r.Date) {
			warm = r.Date
			break
		}
	}
	if warm.IsZero() {
		return nil, fmt.Errorf("dataset %s: no day has a year of history for the lag features: %w", d.Name, ErrNoRows)
	}
	clip := func(r Range) Range {
		if r.From.Before(warm) {
			r.From = warm
		}
		return r
	}
	tr, err := d.Select(clip(trainRange).From, trainRange.Until)
	if err != nil {
		return nil, fmt.Errorf("training range %s (lags known from %s): %w", trainRange, warm.Format(features.DateLayout), err)
	}
	te, err := d.Select(clip(testRange).From, testRange.Until)
	if err != nil {
		return nil, fmt.Errorf("test range %s (lags known from %s): %w", testRange, warm.Format(features.DateLayout), err)
	}
	return &Data{Name: d.Name, Source: d.Source, FeatureNames: set.Names(), Weather: set.Weather,
		Train: Examples(tr.Rows, set), Test: Examples(te.Rows, set),
		TrainDigest: tr.Digest, TestDigest: te.Digest}, nil
}

// Examples turns dataset rows into examples of feature set s.
func Examples(rows []dataset.Row, s features.Set) []Example {
	out := make([]Example, len(rows))
	for i, r := range rows {
		out[i] = Example{Date: r.Date, Features: r.Vector(s), Target: r.Target}
	}
	return out
}

// Digest identifies in-memory examples: "sha256:" + hex sha256 over each
// example's date (YYYY-MM-DD), then the IEEE-754 bits (little endian) of its
// features and target.
func Digest(ex []Example) string {
	h := sha256.New()
	var buf [8]byte
	for _, e := range ex {
		h.Write([]byte(e.Date.Format(features.DateLayout)))
		for _, v := range e.Features {
			binary.LittleEndian.PutUint64(buf[:], math.Float64bits(v))
			h.Write(buf[:])
		}
		binary.LittleEndian.PutUint64(buf[:], math.Float64bits(e.Target))
		h.Write(buf[:])
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil))
}

// validate checks shapes and values and fills the defaults.
func (d *Data) validate() error {
	if d.FeatureNames == nil {
		d.FeatureNames = features.Names()
	}
	if d.Name == "" {
		d.Name = "dataset"
	}
	for _, s := range []struct {
		name string
		ex   []Example
	}{{"training", d.Train}, {"test", d.Test}} {
		if len(s.ex) == 0 {
			return fmt.Errorf("%s data: %w", s.name, ErrNoRows)
		}
		for i, e := range s.ex {
			if len(e.Features) != len(d.FeatureNames) {
				return fmt.Errorf("%s row %d (%s): %d features, want %d", s.name, i, e.Date.Format(features.DateLayout), len(e.Features), len(d.FeatureNames))
			}
			for j, v := range e.Features {
				if math.IsNaN(v) || math.IsInf(v, 0) {
					return fmt.Errorf("%s row %d (%s), feature %q: %v is not a finite number", s.name, i, e.Date.Format(features.DateLayout), d.FeatureNames[j], v)
				}
			}
			if math.IsNaN(e.Target) || math.IsInf(e.Target, 0) {
				return fmt.Errorf("%s row %d (%s): target %v is not a finite number", s.name, i, e.Date.Format(features.DateLayout), e.Target)
			}
		}
	}
	if d.TrainDigest == "" {
		d.TrainDigest = Digest(d.Train)
	}
	if d.TestDigest == "" {
		d.TestDigest = Digest(d.Test)
	}
	return nil
}

func span(ex []Example) (from, until time.Time) {
	from, until = ex[0].Date, ex[0].Date
	for _, e := range ex {
		if e.Date.Before(from) {
			from = e.Date
		}
		if e.Date.After(until) {
			until = e.Date
		}
	}
	return from, until
}

var errNoData = errors.New("train: no data (set Config.Data, e.g. from LoadData)")
