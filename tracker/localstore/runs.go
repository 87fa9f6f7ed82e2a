package localstore

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/flywheel-ml/flywheel/internal/database"
	"github.com/flywheel-ml/flywheel/tracker"
)

// --- experiments ------------------------------------------------------------

// GetExperimentByName returns the experiment or ErrNotFound.
func (s *Store) GetExperimentByName(ctx context.Context, name string) (tracker.Experiment, error) {
	var id int64
	err := s.db.QueryRowContext(ctx, "SELECT id FROM experiments WHERE name = ?", name).Scan(&id)
	if errors.Is(err, sql.ErrNoRows) {
		return tracker.Experiment{}, tracker.Errorf(tracker.ErrNotFound, "experiment %q", name)
	}
	if err != nil {
		return tracker.Experiment{}, fmt.Errorf("looking up experiment %q: %w", name, err)
	}
	return tracker.Experiment{ID: strconv.FormatInt(id, 10), Name: name, ArtifactLocation: s.artifactLocation(), Tags: map[string]string{}}, nil
}

// GetOrCreateExperiment creates the experiment when missing.
func (s *Store) GetOrCreateExperiment(ctx context.Context, name string) (tracker.Experiment, error) {
	if name == "" {
		return tracker.Experiment{}, tracker.Errorf(tracker.ErrInvalid, "experiment name is empty")
	}
	err := s.tx(ctx, func(tx *database.Tx) error {
		_, err := tx.ExecContext(ctx, "INSERT INTO experiments(name, created) VALUES (?, ?) ON CONFLICT (name) DO NOTHING", name, s.now().UnixMilli())
		return err
	})
	if err != nil {
		return tracker.Experiment{}, fmt.Errorf("creating experiment %q: %w", name, err)
	}
	return s.GetExperimentByName(ctx, name)
}

// ExperimentName returns the name of a local experiment id.
func (s *Store) ExperimentName(ctx context.Context, id string) (string, error) {
	n, err := parseID(tracker.ErrNotFound, "experiment id", id)
	if err != nil {
		return "", err
	}
	var name string
	err = s.db.QueryRowContext(ctx, "SELECT name FROM experiments WHERE id = ?", n).Scan(&name)
	if errors.Is(err, sql.ErrNoRows) {
		return "", tracker.Errorf(tracker.ErrNotFound, "experiment id %s", id)
	}
	return name, err
}

// --- runs -------------------------------------------------------------------

// NewRunID returns 32 random hex characters, like MLflow's run ids.
func NewRunID() string {
	var b [16]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// StartRun creates a run (not in the outbox: nothing to send to MLflow).
func (s *Store) StartRun(ctx context.Context, experimentID string, opts tracker.RunOptions) (tracker.RunInfo, error) {
	return s.StartRunWithID(ctx, experimentID, NewRunID(), StateLocal, opts)
}

// StartRunWithID creates a run with a given id and, in the same
// transaction, its outbox entry in state (StateLocal: none).
func (s *Store) StartRunWithID(ctx context.Context, experimentID, id, state string, opts tracker.RunOptions) (tracker.RunInfo, error) {
	if _, err := s.ExperimentName(ctx, experimentID); err != nil {
		return tracker.RunInfo{}, err
	}
	exp, _ := strconv.ParseInt(experimentID, 10, 64)
	tags := opts.SystemTags()
	name := opts.Name
	if name == "" {
		name = "run-" + id[:8]
		tags[tracker.TagRunName] = name
	}
	start := tracker.NowMillis(opts.StartTime)
	err := s.tx(ctx, func(tx *database.Tx) error {
		if _, err := tx.ExecContext(ctx, "INSERT INTO runs(id, experiment_id, name, status, start_time) VALUES (?,?,?,?,?)",
			id, exp, name, tracker.StatusRunning, start); err != nil {
			return err
		}
		if err := upsertTags(ctx, tx, id, tags); err != nil {
			return err
		}
		return s.Outbox().enqueue(ctx, tx, id, state)
	})
	if err != nil {
		return tracker.RunInfo{}, fmt.Errorf("starting run: %w", err)
	}
	return tracker.RunInfo{ID: id, ExperimentID: experimentID, Name: name, Status: tracker.StatusRunning, StartTime: start,
		ArtifactURI: s.runArtifactURI(id), LifecycleStage: "active"}, nil
}

func upsertTags(ctx context.Context, tx *database.Tx, runID string, tags map[string]string) error {
	for k, v := range tags {
		if _, err := tx.ExecContext(ctx, "INSERT INTO tags(run_id, key, value) VALUES (?,?,?) ON CONFLICT(run_id, key) DO UPDATE SET value = excluded.value", runID, k, v); err != nil {
			return err
		}
	}
	return nil
}

// touch records a write to a run: its revision counts up (the outbox
// compares it with the revision it replayed).
func touch(ctx context.Context, tx *database.Tx, runID string) error {
	res, err := tx.ExecContext(ctx, `UPDATE runs SET rev = rev + 1 WHERE id = ?`, runID)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return tracker.Errorf(tracker.ErrNotFound, "run %s", runID)
	}
	return nil
}

// Resolve returns id if it is a run of this store, else ErrNotFound (the
// outbox also maps MLflow ids: Outbox.Resolve).
func (s *Store) Resolve(ctx context.Context, id string) (string, error) {
	var one int
	err := s.db.QueryRowContext(ctx, "SELECT 1 FROM runs WHERE id = ?", id).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return "", tracker.Errorf(tracker.ErrNotFound, "run %s", id)
	}
	if err != nil {
		return "", err
	}
	return id, nil
}

// LogBatch stores metrics (appended), params (immutable) and tags (upserted)
// in one transaction.
func (s *Store) LogBatch(ctx context.Context, runID string, metrics []tracker.Metric, params []tracker.Param, tags []tracker.Tag) error {
	for _, m := range metrics {
		if err := tracker.ValidateKey(m.Key); err != nil {
			return err
		}
	}
	for _, p := range params {
		if err := tracker.ValidateKey(p.Key); err != nil {
			return err
		}
		if len(p.Value) > tracker.MaxParamValueLength {
			return tracker.Errorf(tracker.ErrInvalid, "param %q: value of %d bytes exceeds %d", p.Key, len(p.Value), tracker.MaxParamValueLength)
		}
	}
	for _, t := range tags {
		if err := tracker.ValidateKey(t.Key); err != nil {
			return err
		}
	}
	err := s.tx(ctx, func(tx *database.Tx) error {
		if err := touch(ctx, tx, runID); err != nil {
			return err
		}
		for _, p := range params {
			res, err := tx.ExecContext(ctx, "INSERT INTO params(run_id, key, value) VALUES (?,?,?) ON CONFLICT (run_id, key) DO NOTHING", runID, p.Key, p.Value)
			if err != nil {
				return err
			}
			if n, _ := res.RowsAffected(); n == 1 {
				continue
			}
			var old string
			if err := tx.QueryRowContext(ctx, "SELECT value FROM params WHERE run_id = ? AND key = ?", runID, p.Key).Scan(&old); err != nil {
				return err
			}
			if old != p.Value {
				return tracker.Errorf(tracker.ErrInvalid, "changing param values is not allowed: param %q of run %s is %q, got %q", p.Key, runID, old, p.Value)
			}
		}
		tm := map[string]string{}
		for _, t := range tags {
			tm[t.Key] = t.Value
		}
		if err := upsertTags(ctx, tx, runID, tm); err != nil {
			return err
		}
		if len(metrics) == 0 {
			return nil
		}
		stmt, err := tx.PrepareContext(ctx, "INSERT INTO metrics(run_id, key, value, is_nan, timestamp, step) VALUES (?,?,?,?,?,?)")
		if err != nil {
			return err
		}
		defer stmt.Close()
		for _, m := range metrics {
			var v any = m.Value
			nan := 0
			if math.IsNaN(m.Value) {
				v, nan = nil, 1
			}
			if _, err := stmt.ExecContext(ctx, runID, m.Key, v, nan, m.Timestamp, m.Step); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("logging to run %s: %w", runID, err)
	}
	return nil
}

// LogInputs links datasets to the run (once per name, digest and context).
func (s *Store) LogInputs(ctx context.Context, runID string, datasets []tracker.Dataset) error {
	for _, d := range datasets {
		if err := tracker.ValidateDataset(d); err != nil {
			return err
		}
	}
	return s.tx(ctx, func(tx *database.Tx) error {
		if err := touch(ctx, tx, runID); err != nil {
			return err
		}
		for _, d := range datasets {
			if _, err := tx.ExecContext(ctx, `INSERT INTO datasets(run_id, name, digest, source_type, source, schema, profile, context)
				VALUES (?,?,?,?,?,?,?,?) ON CONFLICT (run_id, name, digest, context) DO NOTHING`,
				runID, d.Name, d.Digest, d.SourceType, d.Source, d.Schema, d.Profile, d.Context); err != nil {
				return err
			}
		}
		return nil
	})
}

// EndRun sets status and end time.
func (s *Store) EndRun(ctx context.Context, runID string, status tracker.RunStatus, end time.Time) error {
	if !status.Valid() {
		return tracker.Errorf(tracker.ErrInvalid, "run status %q", status)
	}
	return s.tx(ctx, func(tx *database.Tx) error {
		if err := touch(ctx, tx, runID); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, "UPDATE runs SET status = ?, end_time = ? WHERE id = ?", status, tracker.NowMillis(end), runID)
		return err
	})
}

// --- reading ----------------------------------------------------------------

// LocalRun is a run with its experiment's name and its revision.
type LocalRun struct {
	tracker.Run
	ExperimentName string
	Rev            int64 // write counter, see Outbox.MarkSynced
}

// GetRun returns a run by id.
func (s *Store) GetRun(ctx context.Context, runID string) (tracker.Run, error) {
	lr, err := s.GetLocalRun(ctx, runID)
	return lr.Run, err
}

// GetLocalRun returns a run with its experiment name and revision.
func (s *Store) GetLocalRun(ctx context.Context, runID string) (LocalRun, error) {
	runs, err := s.loadRuns(ctx, "r.id = ?", runID)
	if err != nil {
		return LocalRun{}, err
	}
	if len(runs) == 0 {
		return LocalRun{}, tracker.Errorf(tracker.ErrNotFound, "run %s", runID)
	}
	return runs[0], nil
}

func (s *Store) loadRuns(ctx context.Context, where string, args ...any) ([]LocalRun, error) {
	runs, err := queryAll(ctx, s.db, `SELECT r.id, r.experiment_id, e.name, r.name, r.status, r.start_time, r.end_time, r.rev
		FROM runs r JOIN experiments e ON e.id = r.experiment_id WHERE `+where+` ORDER BY r.start_time DESC, r.id`, args,
		func(scan func(...any) error) (lr LocalRun, err error) {
			err = scan(&lr.Info.ID, &lr.Info.ExperimentID, &lr.ExperimentName, &lr.Info.Name, &lr.Info.Status, &lr.Info.StartTime, &lr.Info.EndTime, &lr.Rev)
			lr.Info.ArtifactURI = s.runArtifactURI(lr.Info.ID)
			lr.Info.LifecycleStage = "active"
			lr.Params, lr.Tags, lr.Metrics = map[string]string{}, map[string]string{}, map[string]tracker.Metric{}
			return lr, err
		})
	if err != nil {
		return nil, err
	}
	order := "rowid" // the order datasets were logged in
	if s.db.Dialect == database.Postgres {
		order = "seq"
	}
	for i := range runs {
		r := &runs[i]
		id := r.Info.ID
		for table, m := range map[string]map[string]string{"params": r.Params, "tags": r.Tags} {
			kvs, err := queryAll(ctx, s.db, "SELECT key, value FROM "+table+" WHERE run_id = ?", []any{id},
				func(scan func(...any) error) (kv [2]string, err error) { return kv, scan(&kv[0], &kv[1]) })
			if err != nil {
				return nil, err
			}
			for _, kv := range kvs {
				m[kv[0]] = kv[1]
			}
		}
		ms, err := s.metrics(ctx, id, "")
		if err != nil {
			return nil, err
		}
		for _, m := range ms {
			cur, ok := r.Metrics[m.Key]
			if !ok || m.Step > cur.Step || m.Step == cur.Step && m.Timestamp >= cur.Timestamp {
				r.Metrics[m.Key] = m
			}
		}
		r.Datasets, err = queryAll(ctx, s.db, "SELECT name, digest, source_type, source, schema, profile, context FROM datasets WHERE run_id = ? ORDER BY "+order, []any{id},
			func(scan func(...any) error) (d tracker.Dataset, err error) {
				return d, scan(&d.Name, &d.Digest, &d.SourceType, &d.Source, &d.Schema, &d.Profile, &d.Context)
			})
		if err != nil {
			return nil, err
		}
	}
	return runs, nil
}

func (s *Store) metrics(ctx context.Context, runID, key string) ([]tracker.Metric, error) {
	q := "SELECT key, value, is_nan, timestamp, step FROM metrics WHERE run_id = ?"
	args := []any{runID}
	if key != "" {
		q += " AND key = ?"
		args = append(args, key)
	}
	return queryAll(ctx, s.db, q+" ORDER BY seq", args, func(scan func(...any) error) (m tracker.Metric, err error) {
		var v sql.NullFloat64
		var nan int
		err = scan(&m.Key, &v, &nan, &m.Timestamp, &m.Step)
		m.Value = v.Float64
		if nan == 1 {
			m.Value = math.NaN()
		}
		return m, err
	})
}

// Metrics returns every metric value of a run in logging order.
func (s *Store) Metrics(ctx context.Context, runID string) ([]tracker.Metric, error) {
	return s.metrics(ctx, runID, "")
}

// MetricHistory returns every value of key.
func (s *Store) MetricHistory(ctx context.Context, runID, key string) ([]tracker.Metric, error) {
	id, err := s.Resolve(ctx, runID)
	if err != nil {
		return nil, err
	}
	return s.metrics(ctx, id, key)
}

// SearchRuns filters and orders runs in Go with tracker.ParseFilter.
func (s *Store) SearchRuns(ctx context.Context, q tracker.SearchQuery) ([]tracker.Run, error) {
	lrs, err := s.SearchLocalRuns(ctx, q)
	if err != nil {
		return nil, err
	}
	out := make([]tracker.Run, len(lrs))
	for i, r := range lrs {
		out[i] = r.Run
	}
	return out, nil
}

// SearchLocalRuns is SearchRuns with experiment names and revisions.
func (s *Store) SearchLocalRuns(ctx context.Context, q tracker.SearchQuery) ([]LocalRun, error) {
	f, err := tracker.ParseFilter(q.Filter)
	if err != nil {
		return nil, err
	}
	where, args := "1 = 1", []any{}
	if len(q.ExperimentIDs) > 0 {
		var ids []string
		for _, id := range q.ExperimentIDs {
			if n, err := strconv.ParseInt(id, 10, 64); err == nil {
				args = append(args, n)
				ids = append(ids, "?")
			}
		}
		if len(ids) == 0 {
			return nil, nil // no such experiment here
		}
		where = "r.experiment_id IN (" + strings.Join(ids, ",") + ")"
	}
	all, err := s.loadRuns(ctx, where, args...)
	if err != nil {
		return nil, err
	}
	var runs []tracker.Run
	byID := map[string]LocalRun{}
	for _, r := range all {
		if f.Match(r.Run) {
			runs = append(runs, r.Run)
			byID[r.Info.ID] = r
		}
	}
	if err := tracker.SortRuns(runs, q.OrderBy); err != nil {
		return nil, err
	}
	if q.MaxResults > 0 && len(runs) > q.MaxResults {
		runs = runs[:q.MaxResults]
	}
	out := make([]LocalRun, len(runs))
	for i, r := range runs {
		out[i] = byID[r.Info.ID]
	}
	return out, nil
}
