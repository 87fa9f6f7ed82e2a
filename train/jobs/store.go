// Package jobs is the trainer's durable job queue: one job per Alertmanager
// alert group within a cooldown, steps with timings, and crash recovery,
// stored in SQLite (one trainer) or in a shared PostgreSQL database, where
// several trainers claim jobs with SELECT … FOR UPDATE SKIP LOCKED and hold
// them by a lease they renew: a trainer that dies loses its job when the
// lease expires and another one retries it.
package jobs

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/flywheel-ml/flywheel/internal/database"
)

// Job states. queued and running are live; the other three are final.
const (
	StateQueued    = "queued"
	StateRunning   = "running"
	StateSucceeded = "succeeded"
	StateRejected  = "rejected"
	StateFailed    = "failed"
)

// Step states.
const (
	StepRunning     = "running"
	StepSucceeded   = "succeeded"
	StepFailed      = "failed"
	StepRejected    = "rejected"
	StepSkipped     = "skipped"
	StepInterrupted = "interrupted"
)

// Triggers.
const (
	TriggerAlert  = "alert"
	TriggerManual = "manual"
)

// ErrNotFound is returned for an unknown job id.
var ErrNotFound = errors.New("job not found")

// ErrLeaseLost is returned when this store no longer holds a job's claim: its
// lease expired and another trainer took the job over.
var ErrLeaseLost = errors.New("job lease lost")

// Job is one retraining job with its steps.
type Job struct {
	ID         string          `json:"id"`
	Model      string          `json:"model"`
	Trigger    string          `json:"trigger"`
	GroupKey   string          `json:"group_key"`
	Alerts     []string        `json:"alerts,omitempty"`
	Params     json.RawMessage `json:"params,omitempty"`
	State      string          `json:"state"`
	Attempt    int             `json:"attempt"`
	Step       string          `json:"step,omitempty"` // the step running or last run
	Reason     string          `json:"reason,omitempty"`
	Result     map[string]any  `json:"result,omitempty"`
	Deliveries int             `json:"deliveries"` // notifications folded into this job
	CreatedAt  time.Time       `json:"created_at"`
	FiredAt    *time.Time      `json:"fired_at,omitempty"`
	StartedAt  *time.Time      `json:"started_at,omitempty"`
	FinishedAt *time.Time      `json:"finished_at,omitempty"`
	Steps      []Step          `json:"steps,omitempty"`
}

// Final reports whether the job reached a final state.
func (j *Job) Final() bool {
	return j.State == StateSucceeded || j.State == StateRejected || j.State == StateFailed
}

// Step is one pipeline step of one attempt.
type Step struct {
	Attempt    int        `json:"attempt"`
	Name       string     `json:"name"`
	State      string     `json:"state"`
	StartedAt  time.Time  `json:"started_at"`
	FinishedAt *time.Time `json:"finished_at,omitempty"`
	Seconds    float64    `json:"seconds"`
	Detail     string     `json:"detail,omitempty"`
	Log        string     `json:"log,omitempty"`
}

// Request asks for a job.
type Request struct {
	Model    string
	Trigger  string // TriggerAlert or TriggerManual
	GroupKey string // Alertmanager groupKey; empty for a manual job = always a new job
	Alerts   []string
	FiredAt  time.Time // earliest startsAt of the alerts; zero for manual jobs
	Params   json.RawMessage
}

// Options configures a Store.
type Options struct {
	Path  string // SQLite file, or a postgres:// URL of a database shared by several trainers
	Owner string // this trainer's name in claims; host-pid-random when empty
	// Exclusive takes a lock on a SQLite store's file (<path>.lock) and
	// fails with ErrLocked while another process holds it: the trainer
	// sets it, so a second trainer on the same SQLite file refuses to start
	// (PostgreSQL stores are shared by lease instead; ignored there).
	Exclusive   bool
	Lease       time.Duration    // how long a claim holds without renewal (DefaultLease when zero)
	Cooldown    time.Duration    // a group key seen within this long maps to the same job
	MaxAttempts int              // attempts per job, counting the first (2 = retried once after a crash)
	Now         func() time.Time // clock; time.Now when nil
	NewID       func() string    // job ids; random when nil
	Logger      *slog.Logger
}

// DefaultCooldown and DefaultMaxAttempts are the defaults of Options.
const (
	DefaultCooldown    = time.Hour
	DefaultMaxAttempts = 2
	DefaultLease       = 30 * time.Second
)

// Store is the job queue. Its methods are safe for concurrent use.
type Store struct {
	db     *database.DB
	opts   Options
	logger *slog.Logger
	lock   *os.File // flock held on <Path>.lock while the store is open
}

var migrations = database.Migrations{database.SQLite: {
	`CREATE TABLE jobs (
		id          TEXT PRIMARY KEY,
		model       TEXT NOT NULL,
		trigger     TEXT NOT NULL,
		group_key   TEXT NOT NULL,
		alerts      TEXT NOT NULL DEFAULT '[]',
		params      TEXT,
		state       TEXT NOT NULL,
		attempt     INTEGER NOT NULL DEFAULT 0,
		step        TEXT NOT NULL DEFAULT '',
		reason      TEXT NOT NULL DEFAULT '',
		result      TEXT NOT NULL DEFAULT '{}',
		deliveries  INTEGER NOT NULL DEFAULT 1,
		created_at  INTEGER NOT NULL,
		fired_at    INTEGER,
		started_at  INTEGER,
		finished_at INTEGER
	);
	CREATE INDEX jobs_state ON jobs(state, created_at);
	CREATE INDEX jobs_group ON jobs(group_key, created_at);
	CREATE TABLE job_steps (
		job_id      TEXT NOT NULL REFERENCES jobs(id),
		attempt     INTEGER NOT NULL,
		seq         INTEGER NOT NULL,
		name        TEXT NOT NULL,
		state       TEXT NOT NULL,
		started_at  INTEGER NOT NULL,
		finished_at INTEGER,
		detail      TEXT NOT NULL DEFAULT '',
		log         TEXT NOT NULL DEFAULT '',
		PRIMARY KEY (job_id, attempt, seq)
	);`,
	// 2: claims with a lease (owner, lease_until in Unix ms).
	`ALTER TABLE jobs ADD COLUMN owner TEXT NOT NULL DEFAULT '';
	ALTER TABLE jobs ADD COLUMN lease_until INTEGER;`,
}, database.Postgres: {
	`CREATE TABLE jobs (
		id          TEXT PRIMARY KEY,
		model       TEXT NOT NULL,
		trigger     TEXT NOT NULL,
		group_key   TEXT NOT NULL,
		alerts      TEXT NOT NULL DEFAULT '[]',
		params      TEXT,
		state       TEXT NOT NULL,
		attempt     INTEGER NOT NULL DEFAULT 0,
		step        TEXT NOT NULL DEFAULT '',
		reason      TEXT NOT NULL DEFAULT '',
		result      TEXT NOT NULL DEFAULT '{}',
		deliveries  INTEGER NOT NULL DEFAULT 1,
		created_at  BIGINT NOT NULL,
		fired_at    BIGINT,
		started_at  BIGINT,
		finished_at BIGINT,
		owner       TEXT NOT NULL DEFAULT '',
		lease_until BIGINT
	);
	CREATE INDEX jobs_state ON jobs(state, created_at);
	CREATE INDEX jobs_group ON jobs(group_key, created_at);
	CREATE TABLE job_steps (
		job_id      TEXT NOT NULL REFERENCES jobs(id),
		attempt     INTEGER NOT NULL,
		seq         INTEGER NOT NULL,
		name        TEXT NOT NULL,
		state       TEXT NOT NULL,
		started_at  BIGINT NOT NULL,
		finished_at BIGINT,
		detail      TEXT NOT NULL DEFAULT '',
		log         TEXT NOT NULL DEFAULT '',
		PRIMARY KEY (job_id, attempt, seq)
	);`,
}}

// Open opens (creating and migrating) the store. Call Recover before the
// worker starts.
func Open(ctx context.Context, o Options) (*Store, error) {
	if o.Path == "" {
		return nil, errors.New("jobs: Path is empty")
	}
	if o.Cooldown < 0 {
		return nil, fmt.Errorf("jobs: cooldown %s is negative", o.Cooldown)
	}
	if o.MaxAttempts == 0 {
		o.MaxAttempts = DefaultMaxAttempts
	}
	if o.MaxAttempts < 1 {
		return nil, fmt.Errorf("jobs: max attempts %d must be at least 1", o.MaxAttempts)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.NewID == nil {
		o.NewID = RandomID
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Lease == 0 {
		o.Lease = DefaultLease
	}
	if o.Lease < time.Second {
		return nil, fmt.Errorf("jobs: lease %s must be at least 1s", o.Lease)
	}
	if o.Owner == "" {
		host, _ := os.Hostname()
		o.Owner = fmt.Sprintf("%s-%d-%s", host, os.Getpid(), RandomID()[4:])
	}
	// One trainer per SQLite job database: a second one would run the same
	// jobs and publish clashing versions (PostgreSQL stores share jobs by
	// lease instead). The kernel releases the lock if the process dies.
	var lock *os.File
	if path := database.SQLitePath(o.Path); path != "" && o.Exclusive {
		var err error
		if lock, err = lockFile(path + ".lock"); err != nil {
			return nil, err
		}
	}
	// SQLite: one connection, one writer; the queue is small and
	// serialising keeps it simple.
	db, err := database.Open(ctx, o.Path, database.Options{MaxOpenConns: 1, SQLite: url.Values{
		"_journal_mode": {"WAL"}, "_busy_timeout": {"10000"}, "_foreign_keys": {"on"},
		"_synchronous": {"NORMAL"}, "_txlock": {"immediate"},
	}})
	if err != nil {
		if lock != nil {
			lock.Close()
		}
		return nil, fmt.Errorf("opening job store: %w", err)
	}
	if db.Dialect == database.Postgres {
		db.SetMaxOpenConns(4)
	}
	s := &Store{db: db, opts: o, logger: o.Logger, lock: lock}
	if err := db.Migrate(ctx, "jobs", migrations); err != nil {
		s.Close()
		return nil, fmt.Errorf("job store %s: %w", db.Name, err)
	}
	return s, nil
}

// Owner returns the name this store claims jobs under.
func (s *Store) Owner() string { return s.opts.Owner }

// Lease returns the claim lease.
func (s *Store) Lease() time.Duration { return s.opts.Lease }

// Shared reports whether the queue lives in a database several trainers
// may share (PostgreSQL).
func (s *Store) Shared() bool { return s.db.Dialect == database.Postgres }

// RandomID returns "job-" and 12 random hex digits.
func RandomID() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return "job-" + hex.EncodeToString(b[:])
}

// Close closes the database.
func (s *Store) Close() error {
	err := s.db.Close()
	if s.lock != nil {
		s.lock.Close() // releases the flock
	}
	return err
}

// ErrLocked is returned by Open when another process holds the job store.
var ErrLocked = errors.New("job store is in use by another trainer")

// lockFile takes an exclusive, non-blocking flock on path.
func lockFile(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("job store lock: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("%w (%s is locked): stop it first, or give this one its own --db", ErrLocked, path)
		}
		return nil, fmt.Errorf("job store lock %s: %w", path, err)
	}
	return f, nil
}

func (s *Store) now() time.Time { return s.opts.Now().UTC() }

func (s *Store) tx(ctx context.Context, fn func(*database.Tx) error) error {
	return s.db.InTx(ctx, fn)
}

// forUpdate locks the selected rows in PostgreSQL, skipping those another
// trainer holds; SQLite's immediate transactions already serialise writers.
func (s *Store) forUpdate() string {
	if s.db.Dialect == database.Postgres {
		return ` FOR UPDATE SKIP LOCKED`
	}
	return ``
}

// Enqueue creates a job for r, or returns the job it folds into: the job
// created for the same group key within the cooldown (an Alertmanager re-send
// or retry), or a job for the same model that is still queued (a second alert
// group before work started). created is true for a new job.
func (s *Store) Enqueue(ctx context.Context, r Request) (job Job, created bool, err error) {
	if r.Model == "" {
		return Job{}, false, errors.New("jobs: request without a model")
	}
	if r.Trigger == "" {
		r.Trigger = TriggerManual
	}
	now := s.now()
	var id string
	err = s.tx(ctx, func(tx *database.Tx) error {
		if s.db.Dialect == database.Postgres {
			// Trainers sharing the queue enqueue one at a time, so an alert
			// group re-sent to two of them still maps to one job.
			if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock(7346282)`); err != nil {
				return err
			}
		}
		if r.GroupKey != "" {
			err := tx.QueryRowContext(ctx, `SELECT id FROM jobs WHERE group_key = ? AND created_at >= ? ORDER BY created_at DESC LIMIT 1`,
				r.GroupKey, now.Add(-s.opts.Cooldown).UnixMilli()).Scan(&id)
			if err == nil {
				_, err = tx.ExecContext(ctx, `UPDATE jobs SET deliveries = deliveries + 1 WHERE id = ?`, id)
				return err
			}
			if !errors.Is(err, sql.ErrNoRows) {
				return err
			}
			err = tx.QueryRowContext(ctx, `SELECT id FROM jobs WHERE model = ? AND state = ? ORDER BY created_at LIMIT 1`, r.Model, StateQueued).Scan(&id)
			if err == nil {
				_, err = tx.ExecContext(ctx, `UPDATE jobs SET deliveries = deliveries + 1 WHERE id = ?`, id)
				return err
			}
			if !errors.Is(err, sql.ErrNoRows) {
				return err
			}
		}
		id = s.opts.NewID()
		key := r.GroupKey
		if key == "" {
			key = r.Trigger + ":" + id
		}
		alerts, _ := json.Marshal(nonNil(r.Alerts))
		var params any
		if len(r.Params) > 0 {
			params = string(r.Params)
		}
		var fired any
		if !r.FiredAt.IsZero() {
			fired = r.FiredAt.UTC().UnixMilli()
		}
		created = true
		_, err := tx.ExecContext(ctx, `INSERT INTO jobs(id, model, trigger, group_key, alerts, params, state, created_at, fired_at) VALUES (?,?,?,?,?,?,?,?,?)`,
			id, r.Model, r.Trigger, key, string(alerts), params, StateQueued, now.UnixMilli(), fired)
		return err
	})
	if err != nil {
		return Job{}, false, fmt.Errorf("enqueueing job: %w", err)
	}
	job, err = s.Get(ctx, id)
	return job, created, err
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// Recover resolves jobs left running by a process that died: each is queued
// again if it has attempts left, else failed with the reason. Steps that were
// running are marked interrupted. It returns the jobs it touched. With
// SQLite (one trainer) every running job is such a job; in a shared
// database only those whose lease expired are, since the others belong to
// live trainers.
func (s *Store) Recover(ctx context.Context) ([]Job, error) {
	var ids []string
	err := s.tx(ctx, func(tx *database.Tx) error {
		var err error
		ids, err = s.expire(ctx, tx, s.db.Dialect == database.SQLite)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("recovering jobs: %w", err)
	}
	out := make([]Job, 0, len(ids))
	for _, id := range ids {
		j, err := s.Get(ctx, id)
		if err != nil {
			return nil, err
		}
		out = append(out, j)
	}
	return out, nil
}

// expire requeues (or fails, without attempts left) the running jobs whose
// lease expired, or every running job when all is set, and returns their ids.
func (s *Store) expire(ctx context.Context, tx *database.Tx, all bool) ([]string, error) {
	q := `SELECT id, attempt, step, owner FROM jobs WHERE state = ?`
	args := []any{StateRunning}
	now := s.now().UnixMilli()
	if !all {
		q += ` AND (lease_until IS NULL OR lease_until < ?)`
		args = append(args, now)
	}
	rows, err := tx.QueryContext(ctx, q+s.forUpdate(), args...)
	if err != nil {
		return nil, err
	}
	type stale struct {
		id, step, owner string
		attempt         int
	}
	var list []stale
	for rows.Next() {
		var st stale
		if err := rows.Scan(&st.id, &st.attempt, &st.step, &st.owner); err != nil {
			rows.Close()
			return nil, err
		}
		list = append(list, st)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	var ids []string
	for _, st := range list {
		if _, err := tx.ExecContext(ctx, `UPDATE job_steps SET state = ?, finished_at = ?, detail = CASE WHEN detail = '' THEN 'process stopped during this step' ELSE detail END WHERE job_id = ? AND state = ?`,
			StepInterrupted, now, st.id, StepRunning); err != nil {
			return nil, err
		}
		where := "before any step"
		if st.step != "" {
			where = "during step " + st.step
		}
		if !all {
			where += " (lease of " + st.owner + " expired)"
		}
		if st.attempt < s.opts.MaxAttempts {
			reason := fmt.Sprintf("attempt %d interrupted %s; retrying", st.attempt, where)
			if _, err := tx.ExecContext(ctx, `UPDATE jobs SET state = ?, reason = ?, owner = '', lease_until = NULL WHERE id = ?`, StateQueued, reason, st.id); err != nil {
				return nil, err
			}
			s.logger.Warn("requeued interrupted job", "job_id", st.id, "attempt", st.attempt, "step", st.step, "owner", st.owner)
		} else {
			reason := fmt.Sprintf("attempt %d of %d interrupted %s; no attempts left", st.attempt, s.opts.MaxAttempts, where)
			if _, err := tx.ExecContext(ctx, `UPDATE jobs SET state = ?, reason = ?, finished_at = ?, owner = '', lease_until = NULL WHERE id = ?`, StateFailed, reason, now, st.id); err != nil {
				return nil, err
			}
			s.logger.Warn("failed interrupted job", "job_id", st.id, "attempt", st.attempt, "step", st.step, "owner", st.owner)
		}
		ids = append(ids, st.id)
	}
	return ids, nil
}

// Claim moves the oldest queued job to running under this store's owner
// with a fresh lease and counts the attempt; it returns ErrNotFound when
// the queue is empty. Jobs whose lease expired (their trainer died) are
// requeued first, so a live trainer takes them over without a restart.
// In PostgreSQL the row is locked with FOR UPDATE SKIP LOCKED: trainers
// claiming at once get different jobs and never wait on each other.
func (s *Store) Claim(ctx context.Context) (Job, error) {
	var id string
	err := s.tx(ctx, func(tx *database.Tx) error {
		if _, err := s.expire(ctx, tx, false); err != nil {
			return err
		}
		if err := tx.QueryRowContext(ctx, `SELECT id FROM jobs WHERE state = ? ORDER BY created_at, id LIMIT 1`+s.forUpdate(), StateQueued).Scan(&id); err != nil {
			if errors.Is(err, sql.ErrNoRows) {
				return ErrNotFound
			}
			return err
		}
		now := s.now()
		_, err := tx.ExecContext(ctx, `UPDATE jobs SET state = ?, attempt = attempt + 1, step = '', started_at = COALESCE(started_at, ?), owner = ?, lease_until = ? WHERE id = ?`,
			StateRunning, now.UnixMilli(), s.opts.Owner, now.Add(s.opts.Lease).UnixMilli(), id)
		return err
	})
	if err != nil {
		if errors.Is(err, ErrNotFound) {
			return Job{}, ErrNotFound
		}
		return Job{}, fmt.Errorf("claiming job: %w", err)
	}
	return s.Get(ctx, id)
}

// Renew extends this store's lease on a running job; ErrLeaseLost when the
// job is no longer running under this owner (it expired and was taken over).
func (s *Store) Renew(ctx context.Context, jobID string) error {
	res, err := s.db.ExecContext(ctx, `UPDATE jobs SET lease_until = ? WHERE id = ? AND state = ? AND owner = ?`,
		s.now().Add(s.opts.Lease).UnixMilli(), jobID, StateRunning, s.opts.Owner)
	if err != nil {
		return fmt.Errorf("renewing the lease of job %s: %w", jobID, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("job %s: %w", jobID, ErrLeaseLost)
	}
	return nil
}

// StartStep records that a step of the job's current attempt began.
func (s *Store) StartStep(ctx context.Context, jobID, name string) (time.Time, error) {
	now := s.now()
	err := s.tx(ctx, func(tx *database.Tx) error {
		var (
			attempt      int
			owner, state string
		)
		if err := tx.QueryRowContext(ctx, `SELECT attempt, owner, state FROM jobs WHERE id = ?`, jobID).Scan(&attempt, &owner, &state); err != nil {
			if errors.Is(err, sql.ErrNoRows) {
				return ErrNotFound
			}
			return err
		}
		if state != StateRunning || owner != s.opts.Owner {
			return ErrLeaseLost
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO job_steps(job_id, attempt, seq, name, state, started_at)
			VALUES (?, ?, (SELECT COALESCE(MAX(seq), 0) + 1 FROM job_steps WHERE job_id = ? AND attempt = ?), ?, ?, ?)`,
			jobID, attempt, jobID, attempt, name, StepRunning, now.UnixMilli()); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, `UPDATE jobs SET step = ? WHERE id = ?`, name, jobID)
		return err
	})
	if err != nil {
		return time.Time{}, fmt.Errorf("starting step %s of job %s: %w", name, jobID, err)
	}
	return now, nil
}

// FinishStep records the end of the job's running step called name.
func (s *Store) FinishStep(ctx context.Context, jobID, name, state, detail, log string) (time.Time, error) {
	now := s.now()
	res, err := s.db.ExecContext(ctx, `UPDATE job_steps SET state = ?, finished_at = ?, detail = ?, log = ?
		WHERE job_id = ? AND name = ? AND state = ? AND attempt = (SELECT attempt FROM jobs WHERE id = ? AND owner = ?)`,
		state, now.UnixMilli(), detail, log, jobID, name, StepRunning, jobID, s.opts.Owner)
	if err != nil {
		return time.Time{}, fmt.Errorf("finishing step %s of job %s: %w", name, jobID, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return time.Time{}, fmt.Errorf("finishing step %s of job %s: no such running step, or %w", name, jobID, ErrLeaseLost)
	}
	return now, nil
}

// UpdateStepLog stores the log so far of the job's running step name.
func (s *Store) UpdateStepLog(ctx context.Context, jobID, name, log string) error {
	_, err := s.db.ExecContext(ctx, `UPDATE job_steps SET log = ? WHERE job_id = ? AND name = ? AND state = ? AND attempt = (SELECT attempt FROM jobs WHERE id = ? AND owner = ?)`,
		log, jobID, name, StepRunning, jobID, s.opts.Owner)
	if err != nil {
		return fmt.Errorf("saving the log of step %s of job %s: %w", name, jobID, err)
	}
	return nil
}

// MergeResult adds keys to the job's result (figures the API shows).
func (s *Store) MergeResult(ctx context.Context, jobID string, add map[string]any) error {
	return s.tx(ctx, func(tx *database.Tx) error {
		var raw string
		if err := tx.QueryRowContext(ctx, `SELECT result FROM jobs WHERE id = ?`, jobID).Scan(&raw); err != nil {
			if errors.Is(err, sql.ErrNoRows) {
				return ErrNotFound
			}
			return err
		}
		m := map[string]any{}
		if err := json.Unmarshal([]byte(raw), &m); err != nil {
			return fmt.Errorf("job %s result: %w", jobID, err)
		}
		for k, v := range add {
			m[k] = v
		}
		b, err := json.Marshal(m)
		if err != nil {
			return fmt.Errorf("encoding job result: %w", err)
		}
		_, err = tx.ExecContext(ctx, `UPDATE jobs SET result = ? WHERE id = ?`, string(b), jobID)
		return err
	})
}

// Finish moves a running job to a final state with a reason.
func (s *Store) Finish(ctx context.Context, jobID, state, reason string) (Job, error) {
	switch state {
	case StateSucceeded, StateRejected, StateFailed:
	default:
		return Job{}, fmt.Errorf("finishing job %s: %q is not a final state", jobID, state)
	}
	res, err := s.db.ExecContext(ctx, `UPDATE jobs SET state = ?, reason = ?, finished_at = ?, lease_until = NULL WHERE id = ? AND state = ? AND owner = ?`,
		state, reason, s.now().UnixMilli(), jobID, StateRunning, s.opts.Owner)
	if err != nil {
		return Job{}, fmt.Errorf("finishing job %s: %w", jobID, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return Job{}, fmt.Errorf("finishing job %s: not running, or %w", jobID, ErrLeaseLost)
	}
	return s.Get(ctx, jobID)
}

const jobColumns = `id, model, trigger, group_key, alerts, COALESCE(params, ''), state, attempt, step, reason, result, deliveries, created_at, fired_at, started_at, finished_at`

type scanner interface{ Scan(...any) error }

func scanJob(r scanner) (Job, error) {
	var (
		j                        Job
		alerts, params, result   string
		created                  int64
		fired, started, finished sql.NullInt64
	)
	if err := r.Scan(&j.ID, &j.Model, &j.Trigger, &j.GroupKey, &alerts, &params, &j.State, &j.Attempt, &j.Step, &j.Reason, &result, &j.Deliveries, &created, &fired, &started, &finished); err != nil {
		return Job{}, err
	}
	_ = json.Unmarshal([]byte(alerts), &j.Alerts)
	if params != "" {
		j.Params = json.RawMessage(params)
	}
	_ = json.Unmarshal([]byte(result), &j.Result)
	j.CreatedAt = time.UnixMilli(created).UTC()
	j.FiredAt, j.StartedAt, j.FinishedAt = msPtr(fired), msPtr(started), msPtr(finished)
	return j, nil
}

func msPtr(v sql.NullInt64) *time.Time {
	if !v.Valid {
		return nil
	}
	t := time.UnixMilli(v.Int64).UTC()
	return &t
}

// Get returns a job with its steps, or ErrNotFound.
func (s *Store) Get(ctx context.Context, id string) (Job, error) {
	j, err := scanJob(s.db.QueryRowContext(ctx, `SELECT `+jobColumns+` FROM jobs WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return Job{}, fmt.Errorf("%w: %q", ErrNotFound, id)
	}
	if err != nil {
		return Job{}, fmt.Errorf("reading job %s: %w", id, err)
	}
	rows, err := s.db.QueryContext(ctx, `SELECT attempt, name, state, started_at, finished_at, detail, log FROM job_steps WHERE job_id = ? ORDER BY attempt, seq`, id)
	if err != nil {
		return Job{}, fmt.Errorf("reading steps of job %s: %w", id, err)
	}
	defer rows.Close()
	for rows.Next() {
		var (
			st       Step
			started  int64
			finished sql.NullInt64
		)
		if err := rows.Scan(&st.Attempt, &st.Name, &st.State, &started, &finished, &st.Detail, &st.Log); err != nil {
			return Job{}, fmt.Errorf("reading steps of job %s: %w", id, err)
		}
		st.StartedAt = time.UnixMilli(started).UTC()
		st.FinishedAt = msPtr(finished)
		if st.FinishedAt != nil {
			st.Seconds = st.FinishedAt.Sub(st.StartedAt).Seconds()
		}
		j.Steps = append(j.Steps, st)
	}
	return j, rows.Err()
}

// ListOptions filters List.
type ListOptions struct {
	State string // empty for all
	Limit int    // 0 for 100
}

// List returns jobs newest first, without their steps' logs.
func (s *Store) List(ctx context.Context, o ListOptions) ([]Job, error) {
	if o.Limit <= 0 {
		o.Limit = 100
	}
	q := `SELECT ` + jobColumns + ` FROM jobs`
	args := []any{}
	if o.State != "" {
		q += ` WHERE state = ?`
		args = append(args, o.State)
	}
	q += ` ORDER BY created_at DESC, id DESC LIMIT ?`
	args = append(args, o.Limit)
	rows, err := s.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("listing jobs: %w", err)
	}
	defer rows.Close()
	out := []Job{}
	for rows.Next() {
		j, err := scanJob(rows)
		if err != nil {
			return nil, fmt.Errorf("listing jobs: %w", err)
		}
		out = append(out, j)
	}
	return out, rows.Err()
}

// CountState returns how many jobs are in a state.
func (s *Store) CountState(ctx context.Context, state string) (int, error) {
	var n int
	if err := s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM jobs WHERE state = ?`, state).Scan(&n); err != nil {
		return 0, fmt.Errorf("counting %s jobs: %w", state, err)
	}
	return n, nil
}

// ValidState reports whether s names a job state.
func ValidState(s string) bool {
	return strings.Contains(" queued running succeeded rejected failed ", " "+s+" ") && s != ""
}
