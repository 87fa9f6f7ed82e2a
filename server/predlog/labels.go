package predlog

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/flywheel-ml/flywheel/internal/database"
)

// ErrNoLabel is returned by Label when no label has the requested id.
var ErrNoLabel = errors.New("label not found")

// Label is a feedback label as stored: the ground-truth value of a
// prediction id with what it copies from its prediction, so labelled rows
// survive the prediction log's retention.
type Label struct {
	ID    string
	Model string
	// Version is the model version of the prediction; 0: unknown (the
	// prediction was not logged and the label named none).
	Version    int
	Value      float64
	LabelledAt time.Time
	// PredictedAt is zero when the prediction was not logged.
	PredictedAt time.Time
	// Features is a JSON object, feature name → value.
	Features json.RawMessage
	// Parameters is a JSON object of request parameters; nil: none.
	Parameters json.RawMessage
	// Prediction is the prediction's first output; nil when not logged.
	Prediction *float64
	// Revisions counts the values stored for the id (1 for a first label);
	// set by reads, ignored by PutLabels.
	Revisions int
}

// LabelChange is what PutLabels did with one label.
type LabelChange int

// Label changes.
const (
	LabelCreated   LabelChange = iota + 1 // no label had the id
	LabelUpdated                          // the id had another value: the new one wins, revisions + 1
	LabelUnchanged                        // the id had this value already: nothing written
)

// PutLabels stores labels in one group-committed transaction, in order (a
// later label with the same id wins), and returns one change per label. A
// label whose id holds the same value already is left alone; another value
// replaces the stored label and counts a revision. Either every label is
// stored or, with an error, none.
//
// Several writers (serve replicas on one database) may put the same id at
// once: one row results, and its revisions equal the number of changes
// reported Created or Updated.
func (s *Store) PutLabels(ctx context.Context, labels []Label) ([]LabelChange, error) {
	changes := make([]LabelChange, len(labels))
	err := s.write(ctx, func(tx *database.Tx) error {
		for i := range labels {
			l := &labels[i]
			var old float64
			err := tx.QueryRowContext(ctx, `SELECT value FROM labels WHERE id = ?`, l.ID).Scan(&old)
			exists := err == nil
			if err != nil && !errors.Is(err, sql.ErrNoRows) {
				return fmt.Errorf("reading label %q: %w", l.ID, err)
			}
			if exists && old == l.Value {
				changes[i] = LabelUnchanged
				continue
			}
			var version, predictedAt, params, prediction any
			if l.Version != 0 {
				version = l.Version
			}
			if !l.PredictedAt.IsZero() {
				predictedAt = l.PredictedAt.UnixMicro()
			}
			if l.Parameters != nil {
				params = string(l.Parameters)
			}
			if l.Prediction != nil {
				prediction = *l.Prediction
			}
			features := string(l.Features)
			if features == "" {
				features = "{}"
			}
			res, err := tx.ExecContext(ctx, `INSERT INTO labels
				(id, model, version, value, labelled_at, predicted_at, features, parameters, prediction)
				VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
				ON CONFLICT (id) DO UPDATE SET model = excluded.model, version = excluded.version,
					value = excluded.value, labelled_at = excluded.labelled_at, predicted_at = excluded.predicted_at,
					features = excluded.features, parameters = excluded.parameters, prediction = excluded.prediction,
					revisions = labels.revisions + 1
				WHERE labels.value <> excluded.value`,
				l.ID, l.Model, version, l.Value, l.LabelledAt.UnixMicro(), predictedAt, features, params, prediction)
			if err != nil {
				return fmt.Errorf("storing label %q: %w", l.ID, err)
			}
			// Another writer may have stored the same value since the
			// read above (a load balancer retrying a label on a second
			// replica): the conditional update leaves it alone.
			if n, err := res.RowsAffected(); err == nil && n == 0 {
				changes[i] = LabelUnchanged
				continue
			}
			changes[i] = LabelCreated
			if exists {
				changes[i] = LabelUpdated
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return changes, nil
}

// PruneLabels deletes the feedback labels received before cutoff, in
// chunks, and returns how many went.
func (s *Store) PruneLabels(ctx context.Context, cutoff time.Time) (int64, error) {
	var deleted int64
	rowid := "rowid" // PostgreSQL: ctid
	if s.db.Dialect == database.Postgres {
		rowid = "ctid"
	}
	for {
		var n int64
		err := s.write(ctx, func(tx *database.Tx) error {
			res, err := tx.ExecContext(ctx, `DELETE FROM labels WHERE `+rowid+` IN (SELECT `+rowid+` FROM labels WHERE labelled_at < ? LIMIT ?)`,
				cutoff.UnixMicro(), pruneChunk)
			if err != nil {
				return fmt.Errorf("pruning labels: %w", err)
			}
			n, _ = res.RowsAffected()
			return nil
		})
		deleted += n
		if err != nil || n < pruneChunk {
			return deleted, err
		}
	}
}

// labelColumns are the columns scanLabel reads, in order.
const labelColumns = `id, model, version, value, labelled_at, predicted_at, features, parameters, prediction, revisions`

type rowScanner interface{ Scan(dest ...any) error }

func scanLabel(r rowScanner) (Label, error) {
	var (
		l                    Label
		version, predictedAt sql.NullInt64
		labelledAt           int64
		features             string
		params               sql.NullString
		prediction           sql.NullFloat64
	)
	if err := r.Scan(&l.ID, &l.Model, &version, &l.Value, &labelledAt, &predictedAt, &features, &params, &prediction, &l.Revisions); err != nil {
		return Label{}, err
	}
	l.Version = int(version.Int64)
	l.LabelledAt = time.UnixMicro(labelledAt).UTC()
	if predictedAt.Valid {
		l.PredictedAt = time.UnixMicro(predictedAt.Int64).UTC()
	}
	l.Features = json.RawMessage(features)
	if params.Valid && params.String != "" {
		l.Parameters = json.RawMessage(params.String)
	}
	if prediction.Valid {
		l.Prediction = &prediction.Float64
	}
	return l, nil
}

// Label returns the label of id, or ErrNoLabel.
func (s *Store) Label(ctx context.Context, id string) (Label, error) {
	l, err := scanLabel(s.db.QueryRowContext(ctx, `SELECT `+labelColumns+` FROM labels WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return Label{}, ErrNoLabel
	}
	if err != nil {
		return Label{}, fmt.Errorf("reading label %q: %w", id, err)
	}
	return l, nil
}

// Labels starts reading the labels of model labelled at or after since,
// oldest label first (ties by id). The query runs now, so a failing
// database is reported before anything is read; the caller must Close the
// result.
func (s *Store) Labels(ctx context.Context, model string, since time.Time) (*LabelRows, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+labelColumns+`
		FROM labels WHERE model = ? AND labelled_at >= ? ORDER BY labelled_at, id`, model, since.UnixMicro())
	if err != nil {
		return nil, fmt.Errorf("reading labels: %w", err)
	}
	return &LabelRows{rows: rows}, nil
}

// LabelRows is a read of labels in progress, streamed from the database.
type LabelRows struct {
	rows *sql.Rows
	l    Label
	err  error
}

// Next reads the next label; it returns false at the end or on an error
// (see Err).
func (r *LabelRows) Next() bool {
	if r.err != nil || !r.rows.Next() {
		return false
	}
	r.l, r.err = scanLabel(r.rows)
	return r.err == nil
}

// Label is the label Next read.
func (r *LabelRows) Label() Label { return r.l }

// Err is the error that ended the read, if any.
func (r *LabelRows) Err() error {
	err := r.err
	if err == nil {
		err = r.rows.Err()
	}
	if err != nil {
		return fmt.Errorf("reading labels: %w", err)
	}
	return nil
}

// Close releases the query.
func (r *LabelRows) Close() error { return r.rows.Close() }

// LabelStats are the totals of one model version's labels that were joined
// to a logged prediction.
type LabelStats struct {
	Model      string
	Version    int
	Labels     int64
	AbsErr     float64 // sum of |value - prediction|
	SquaredErr float64 // sum of (value - prediction)²
}

// LabelStats returns the totals per model version of the labels joined to a
// logged prediction, ordered by model and version.
func (s *Store) LabelStats(ctx context.Context) ([]LabelStats, error) {
	rs, err := s.db.QueryContext(ctx, `SELECT model, version, COUNT(*), SUM(ABS(value - prediction)),
			SUM((value - prediction) * (value - prediction))
		FROM labels WHERE prediction IS NOT NULL AND version IS NOT NULL GROUP BY model, version ORDER BY model, version`)
	if err != nil {
		return nil, fmt.Errorf("reading label totals: %w", err)
	}
	defer rs.Close()
	var out []LabelStats
	for rs.Next() {
		var st LabelStats
		if err := rs.Scan(&st.Model, &st.Version, &st.Labels, &st.AbsErr, &st.SquaredErr); err != nil {
			return nil, fmt.Errorf("reading label totals: %w", err)
		}
		out = append(out, st)
	}
	if err := rs.Err(); err != nil {
		return nil, fmt.Errorf("reading label totals: %w", err)
	}
	return out, nil
}
