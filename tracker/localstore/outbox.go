package localstore

import (
	"context"
	"database/sql"
	"errors"
	"strconv"
	"time"

	"github.com/flywheel-ml/flywheel/internal/database"
	"github.com/flywheel-ml/flywheel/tracker"
)

// Sync states of a run in the outbox (see tracker/fallback).
const (
	// StateLocal: not in the outbox (no MLflow configured when it ran, or
	// MLflow rejected it); replayed only by sync --all.
	StateLocal = "local"
	// StateStarting: StartRun is creating the run in MLflow; no sync, in
	// any process, replays it until it is older than the start timeout.
	StateStarting = "starting"
	StateMirrored = "mirrored" // every write also reached MLflow so far
	StateUnsynced = "unsynced" // MLflow missed something: sync must replay
	StateSynced   = "synced"   // replayed completely (as of its revision then)
)

// Outbox is what MLflow still has to receive: each run's MLflow id and
// sync state, the MLflow number of each model version, and the aliases
// not sent yet. It lives in the store's database (tables outbox_*), so the
// run and its outbox entry are written in one transaction, and a shared
// PostgreSQL store shares it between processes.
type Outbox struct{ s *Store }

// OutboxRun is a run's outbox entry.
type OutboxRun struct {
	RemoteID string // MLflow's run id, "" while unknown
	State    string
	Since    int64 // ms, when the run entered the outbox
}

// state is a run's state: a synced run written since its replay is
// unsynced again.
const state = `CASE WHEN o.state IS NULL THEN 'local' WHEN o.state = 'synced' AND r.rev > o.synced_rev THEN 'unsynced' ELSE o.state END`

func (o *Outbox) enqueue(ctx context.Context, tx *database.Tx, runID, st string) error {
	if st == "" || st == StateLocal {
		return nil
	}
	_, err := tx.ExecContext(ctx, "INSERT INTO outbox_runs (run_id, state, since) VALUES (?, ?, ?)", runID, st, o.s.now().UnixMilli())
	return err
}

// Run returns a run's entry (State local when it has none).
func (o *Outbox) Run(ctx context.Context, runID string) (OutboxRun, error) {
	var r OutboxRun
	err := o.s.db.QueryRowContext(ctx, `SELECT COALESCE(o.remote_id, ''), `+state+`, COALESCE(o.since, 0)
		FROM runs r LEFT JOIN outbox_runs o ON o.run_id = r.id WHERE r.id = ?`, runID).Scan(&r.RemoteID, &r.State, &r.Since)
	if errors.Is(err, sql.ErrNoRows) {
		return OutboxRun{}, tracker.Errorf(tracker.ErrNotFound, "run %s", runID)
	}
	return r, err
}

// Resolve maps a local or an MLflow run id onto the local id.
func (o *Outbox) Resolve(ctx context.Context, id string) (string, error) {
	if local, err := o.s.Resolve(ctx, id); err == nil || !errors.Is(err, tracker.ErrNotFound) {
		return local, err
	}
	var local string
	err := o.s.db.QueryRowContext(ctx, "SELECT run_id FROM outbox_runs WHERE remote_id = ?", id).Scan(&local)
	if errors.Is(err, sql.ErrNoRows) {
		return "", tracker.Errorf(tracker.ErrNotFound, "run %s", id)
	}
	return local, err
}

// Started records that a starting run exists in MLflow as remoteID and is
// mirrored from now on; false if the run was no longer starting (a sync
// took it over after the start timeout).
func (o *Outbox) Started(ctx context.Context, runID, remoteID string) (bool, error) {
	return o.update(ctx, "UPDATE outbox_runs SET remote_id = ?, state = ? WHERE run_id = ? AND state = ?", remoteID, StateMirrored, runID, StateStarting)
}

// SetState moves a run to state to; from (when not empty) guards the
// transition so a concurrent writer's state is not overwritten.
func (o *Outbox) SetState(ctx context.Context, runID, from, to string) error {
	if from != "" {
		_, err := o.update(ctx, "UPDATE outbox_runs SET state = ? WHERE run_id = ? AND state = ?", to, runID, from)
		return err
	}
	_, err := o.update(ctx, `INSERT INTO outbox_runs (run_id, state, since) VALUES (?, ?, ?)
		ON CONFLICT (run_id) DO UPDATE SET state = excluded.state`, runID, to, o.s.now().UnixMilli())
	return err
}

// SetRemoteIDIf records the MLflow id of a run only if its recorded MLflow
// id is still old ("" = none); it reports whether it did, so a replay never
// replaces the id another writer recorded meanwhile.
func (o *Outbox) SetRemoteIDIf(ctx context.Context, runID, old, remoteID string) (bool, error) {
	if old == "" {
		return o.update(ctx, `INSERT INTO outbox_runs (run_id, remote_id, state, since) VALUES (?, ?, ?, ?)
			ON CONFLICT (run_id) DO UPDATE SET remote_id = excluded.remote_id WHERE outbox_runs.remote_id IS NULL`,
			runID, remoteID, StateLocal, o.s.now().UnixMilli())
	}
	return o.update(ctx, "UPDATE outbox_runs SET remote_id = ? WHERE run_id = ? AND remote_id = ?", remoteID, runID, old)
}

// MarkSynced marks a run synced if nothing was written to it since the
// snapshot with revision rev; it reports whether it did.
func (o *Outbox) MarkSynced(ctx context.Context, runID string, rev int64) (bool, error) {
	return o.update(ctx, "UPDATE outbox_runs SET state = ?, synced_rev = ? WHERE run_id = ? AND ? = (SELECT rev FROM runs WHERE id = ?)",
		StateSynced, rev, runID, rev, runID)
}

func (o *Outbox) update(ctx context.Context, q string, args ...any) (bool, error) {
	var n int64
	err := o.s.tx(ctx, func(tx *database.Tx) error {
		res, err := tx.ExecContext(ctx, q, args...)
		if err != nil {
			return err
		}
		n, _ = res.RowsAffected()
		return nil
	})
	return n == 1, err
}

// Pending lists the runs a sync replays, oldest first: unsynced runs, and
// runs still starting since before staleStart (their process died while
// MLflow was creating the run). all adds every other run, except those
// starting since staleStart, whose StartRun may still be waiting for MLflow.
func (o *Outbox) Pending(ctx context.Context, all bool, staleStart time.Time) ([]string, error) {
	where := state + ` = ? OR (o.state = ? AND o.since < ?)`
	if all {
		where = `NOT (COALESCE(o.state, '') = ? AND o.since >= ?)`
	}
	args := []any{StateUnsynced, StateStarting, staleStart.UnixMilli()}
	if all {
		args = args[1:]
	}
	return o.ids(ctx, `SELECT r.id FROM runs r LEFT JOIN outbox_runs o ON o.run_id = r.id WHERE `+where+` ORDER BY r.start_time, r.id`, args...)
}

// RunsInState lists the runs in a state, oldest first.
func (o *Outbox) RunsInState(ctx context.Context, st string) ([]string, error) {
	return o.ids(ctx, `SELECT r.id FROM runs r LEFT JOIN outbox_runs o ON o.run_id = r.id WHERE `+state+` = ? ORDER BY r.start_time, r.id`, st)
}

func (o *Outbox) ids(ctx context.Context, q string, args ...any) ([]string, error) {
	return queryAll(ctx, o.s.db, q, args, func(scan func(...any) error) (id string, err error) {
		return id, scan(&id)
	})
}

// Claim reserves a run for owner's sync until until; false while another
// sync holds it (two syncs of one run, in processes sharing the store,
// would both create it in MLflow). A claim ends with Release, or expires
// (its process died).
func (o *Outbox) Claim(ctx context.Context, runID, owner string, until time.Time) (bool, error) {
	now := o.s.now().UnixMilli()
	return o.update(ctx, `INSERT INTO outbox_runs (run_id, state, since, sync_owner, sync_until) VALUES (?, ?, ?, ?, ?)
		ON CONFLICT (run_id) DO UPDATE SET sync_owner = excluded.sync_owner, sync_until = excluded.sync_until
		WHERE outbox_runs.sync_until < ? OR outbox_runs.sync_owner = excluded.sync_owner`,
		runID, StateLocal, now, owner, until.UnixMilli(), now)
}

// Release ends owner's claim on a run.
func (o *Outbox) Release(ctx context.Context, runID, owner string) error {
	_, err := o.update(ctx, "UPDATE outbox_runs SET sync_owner = NULL, sync_until = 0 WHERE run_id = ? AND sync_owner = ?", runID, owner)
	return err
}

// --- model versions and aliases ---------------------------------------------

// SetRemoteVersion records the MLflow version of a local version.
func (o *Outbox) SetRemoteVersion(ctx context.Context, name, version, remote string) error {
	v, err := parseID(tracker.ErrInvalid, "model version", version)
	if err != nil {
		return err
	}
	_, err = o.update(ctx, `INSERT INTO outbox_versions (name, version, remote_version) VALUES (?, ?, ?)
		ON CONFLICT (name, version) DO UPDATE SET remote_version = excluded.remote_version`, name, v, remote)
	return err
}

// RemoteVersion is MLflow's number of a local version, "" if it has none.
func (o *Outbox) RemoteVersion(ctx context.Context, name, version string) (string, error) {
	v, err := parseID(tracker.ErrInvalid, "model version", version)
	if err != nil {
		return "", err
	}
	var remote string
	err = o.s.db.QueryRowContext(ctx, "SELECT remote_version FROM outbox_versions WHERE name = ? AND version = ?", name, v).Scan(&remote)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	return remote, err
}

// LocalVersion finds the local version that MLflow knows as version, or
// else the local version with that number; remote is its MLflow number.
func (o *Outbox) LocalVersion(ctx context.Context, name, version string) (lv LocalVersion, remote string, err error) {
	var local int64
	err = o.s.db.QueryRowContext(ctx, "SELECT version FROM outbox_versions WHERE name = ? AND remote_version = ?", name, version).Scan(&local)
	switch {
	case err == nil:
		lv, err = o.s.ModelVersion(ctx, name, strconv.FormatInt(local, 10))
		return lv, version, err
	case !errors.Is(err, sql.ErrNoRows):
		return LocalVersion{}, "", err
	}
	if lv, err = o.s.ModelVersion(ctx, name, version); err != nil {
		return LocalVersion{}, "", err
	}
	remote, err = o.RemoteVersion(ctx, name, lv.Version)
	return lv, remote, err
}

// SetAlias points alias at version in the store and records it as not yet
// sent to MLflow.
func (o *Outbox) SetAlias(ctx context.Context, name, alias, version string) error {
	return o.s.setAlias(ctx, name, alias, version, true)
}

func (o *Outbox) aliasPending(ctx context.Context, tx *database.Tx, name, alias string, version int64, pending bool) error {
	if !pending {
		_, err := tx.ExecContext(ctx, "DELETE FROM outbox_aliases WHERE name = ? AND alias = ?", name, alias)
		return err
	}
	_, err := tx.ExecContext(ctx, `INSERT INTO outbox_aliases (name, alias, version) VALUES (?, ?, ?)
		ON CONFLICT (name, alias) DO UPDATE SET version = excluded.version`, name, alias, version)
	return err
}

// PendingAlias is an alias MLflow has not received.
type PendingAlias struct {
	Name, Alias, Version string
}

// PendingAliases lists aliases not yet replayed.
func (o *Outbox) PendingAliases(ctx context.Context) ([]PendingAlias, error) {
	return queryAll(ctx, o.s.db, "SELECT name, alias, version FROM outbox_aliases ORDER BY name, alias", nil,
		func(scan func(...any) error) (p PendingAlias, err error) {
			var v int64
			err = scan(&p.Name, &p.Alias, &v)
			p.Version = strconv.FormatInt(v, 10)
			return p, err
		})
}

// MarkAliasSynced marks an alias replayed if it still points at version.
func (o *Outbox) MarkAliasSynced(ctx context.Context, name, alias, version string) error {
	v, err := parseID(tracker.ErrInvalid, "model version", version)
	if err != nil {
		return err
	}
	_, err = o.update(ctx, "DELETE FROM outbox_aliases WHERE name = ? AND alias = ? AND version = ?", name, alias, v)
	return err
}
