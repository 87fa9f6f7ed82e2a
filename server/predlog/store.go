// Package predlog is the prediction log: every served prediction (id, time,
// model, version, request parameters, named input features, outputs) is
// written asynchronously, off the request path, by a bounded queue and a
// batching flusher, to an embedded SQLite file or to a PostgreSQL database
// shared by every serve replica. The same database holds the feedback labels
// (package feedback; the label queries are in labels.go) so labelled rows
// can be joined and exported.
package predlog

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"runtime"
	"sync"
	"time"

	"github.com/flywheel-ml/flywheel/internal/database"
)

// ErrNotFound is returned when no prediction has the requested id.
var ErrNotFound = errors.New("prediction not found")

// migrations are applied in order, each once, in its own transaction; the
// applied versions are recorded in schema_migrations. Append, never edit.
var migrations = database.Migrations{database.SQLite: sqliteMigrations, database.Postgres: postgresMigrations}

// postgresMigrations: the schema SQLite reached after its migration 2.
var postgresMigrations = []string{
	`CREATE TABLE feature_sets (
		id    BIGSERIAL PRIMARY KEY,
		names TEXT NOT NULL UNIQUE
	);
	CREATE TABLE predictions (
		id             TEXT PRIMARY KEY,
		predicted_at   BIGINT NOT NULL,
		model          TEXT NOT NULL,
		version        INTEGER NOT NULL,
		parameters     TEXT,
		features       TEXT,
		outputs        TEXT,
		prediction     DOUBLE PRECISION,
		feature_set    BIGINT,
		feature_values BYTEA,
		output_values  BYTEA
	);
	CREATE INDEX predictions_predicted_at ON predictions (predicted_at);
	CREATE TABLE labels (
		id           TEXT PRIMARY KEY,
		model        TEXT NOT NULL,
		version      INTEGER,
		value        DOUBLE PRECISION NOT NULL,
		labelled_at  BIGINT NOT NULL,
		predicted_at BIGINT,
		features     TEXT NOT NULL,
		parameters   TEXT,
		prediction   DOUBLE PRECISION,
		revisions    INTEGER NOT NULL DEFAULT 1
	);
	CREATE INDEX labels_model_labelled_at ON labels (model, labelled_at);`,
}

var sqliteMigrations = []string{
	// 1: the prediction log and the labels.
	`CREATE TABLE predictions (
		id           TEXT PRIMARY KEY,
		predicted_at INTEGER NOT NULL, -- Unix microseconds
		model        TEXT NOT NULL,
		version      INTEGER NOT NULL,
		parameters   TEXT,             -- JSON object, request parameters
		features     TEXT,             -- JSON object, feature name → value
		outputs      TEXT,             -- JSON array, the row's output values
		prediction   REAL              -- first output value
	);
	CREATE INDEX predictions_predicted_at ON predictions (predicted_at);
	-- A label copies what it needs from its prediction, so labelled rows
	-- survive the prediction log's retention.
	CREATE TABLE labels (
		id           TEXT PRIMARY KEY,
		model        TEXT NOT NULL,
		version      INTEGER,          -- NULL when the prediction was not logged
		value        REAL NOT NULL,
		labelled_at  INTEGER NOT NULL, -- Unix microseconds of the latest label
		predicted_at INTEGER,
		features     TEXT NOT NULL,    -- JSON object
		parameters   TEXT,             -- JSON object
		prediction   REAL,
		revisions    INTEGER NOT NULL DEFAULT 1
	);
	CREATE INDEX labels_model_labelled_at ON labels (model, labelled_at);`,
	// 2: packed values (values.go) instead of JSON text, and feature names
	// stored once per set instead of in every row. Rows written before keep
	// their JSON columns; Get reads both.
	`CREATE TABLE feature_sets (
		id    INTEGER PRIMARY KEY,
		names TEXT NOT NULL UNIQUE     -- JSON array of feature names
	);
	ALTER TABLE predictions ADD COLUMN feature_set INTEGER;  -- feature_sets.id; NULL: x0, x1, …
	ALTER TABLE predictions ADD COLUMN feature_values BLOB;  -- packed
	ALTER TABLE predictions ADD COLUMN output_values BLOB;   -- packed`,
}

// Store is the database of predictions and labels.
type Store struct {
	db *database.DB
	// Write transactions are group-committed: SQLite has one writer at a
	// time and every commit pays an fsync (synchronous=FULL; PostgreSQL's
	// commit waits for its WAL flush likewise), so the writer holding
	// writeMu commits everything pending in one transaction.
	writeMu sync.Mutex
	pendMu  sync.Mutex
	pending []*writeReq
	// sets caches feature_sets ids by the names' JSON; bySlice by the first
	// element of a names slice seen before (cards share one slice per
	// version, and the cache keeps it alive, so the address is not reused).
	setsMu  sync.Mutex
	sets    map[string]int64
	bySlice map[*string]featureSet
}

type featureSet struct {
	names []string
	id    int64
}

type writeReq struct {
	ctx  context.Context
	fn   func(tx *database.Tx) error
	done chan error
}

// write runs fn in a write transaction and returns once it is committed
// (durable) or failed. Concurrent calls share one transaction and one commit
// (group commit); each fn runs inside its own savepoint, so a failing fn is
// rolled back alone and only its caller sees its error. fn must not keep tx.
func (s *Store) write(ctx context.Context, fn func(tx *database.Tx) error) error {
	req := &writeReq{ctx: ctx, fn: fn, done: make(chan error, 1)}
	s.pendMu.Lock()
	s.pending = append(s.pending, req)
	s.pendMu.Unlock()

	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	select {
	case err := <-req.done: // committed by the previous writer
		return err
	default:
	}
	s.pendMu.Lock()
	batch := s.pending
	s.pending = nil
	s.pendMu.Unlock()
	s.commit(batch)
	return <-req.done
}

func (s *Store) commit(batch []*writeReq) {
	ctx := context.Background() // one caller giving up must not abort the others
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		for _, r := range batch {
			r.done <- fmt.Errorf("beginning transaction: %w", err)
		}
		return
	}
	results := make([]error, len(batch))
	for i, r := range batch {
		if err := r.ctx.Err(); err != nil {
			results[i] = err
			continue
		}
		if _, err := tx.ExecContext(ctx, `SAVEPOINT write`); err != nil {
			results[i] = fmt.Errorf("savepoint: %w", err)
			continue
		}
		results[i] = r.fn(tx)
		if results[i] != nil {
			tx.ExecContext(ctx, `ROLLBACK TO write`)
		}
		tx.ExecContext(ctx, `RELEASE write`)
	}
	if err := tx.Commit(); err != nil {
		for i := range results {
			if results[i] == nil {
				results[i] = fmt.Errorf("committing transaction: %w", err)
			}
		}
	}
	for i, r := range batch {
		r.done <- results[i]
	}
}

// Open opens the database u names — a SQLite file (created if needed, in
// WAL mode with a busy timeout) or a postgres:// URL — and applies pending
// migrations.
func Open(ctx context.Context, u string, busyTimeout time.Duration) (*Store, error) {
	q := url.Values{}
	q.Set("_journal_mode", "WAL")
	q.Set("_synchronous", "FULL") // a commit survives power loss: labels are durable when Add returns
	q.Set("_busy_timeout", fmt.Sprint(busyTimeout.Milliseconds()))
	q.Set("_txlock", "immediate") // writers take the lock up front: no upgrade deadlocks
	q.Set("_foreign_keys", "on")
	db, err := database.Open(ctx, u, database.Options{SQLite: q})
	if err != nil {
		return nil, fmt.Errorf("opening prediction log: %w", err)
	}
	s := &Store{db: db, sets: map[string]int64{}, bySlice: map[*string]featureSet{}}
	if err := db.Migrate(ctx, "predlog", migrations); err != nil {
		db.Close()
		return nil, fmt.Errorf("prediction log %s: %w", db.Name, err)
	}
	return s, nil
}

// Name is the database's name for logs: the SQLite path, or the URL
// without its password.
func (s *Store) Name() string { return s.db.Name }

// Dialect is the database's SQL dialect.
func (s *Store) Dialect() database.Dialect { return s.db.Dialect }

// Close closes the database.
func (s *Store) Close() error { return s.db.Close() }

// SchemaVersion returns the applied schema version.
func (s *Store) SchemaVersion(ctx context.Context) (int, error) {
	return s.db.SchemaVersion(ctx, "predlog")
}

// Record is a logged prediction as stored.
type Record struct {
	ID          string             `json:"id"`
	Model       string             `json:"model"`
	Version     int                `json:"version"`
	PredictedAt time.Time          `json:"predicted_at"`
	Parameters  map[string]any     `json:"parameters,omitempty"`
	Features    map[string]float64 `json:"features,omitempty"`
	Outputs     []float64          `json:"outputs,omitempty"`
	Prediction  *float64           `json:"prediction,omitempty"`
}

// Get returns the logged prediction with id, or ErrNotFound.
func (s *Store) Get(ctx context.Context, id string) (Record, error) {
	var (
		r                         Record
		ts                        int64
		params, features, outputs sql.NullString
		names                     sql.NullString
		fvals, ovals              []byte
		pred                      sql.NullFloat64
	)
	err := s.db.QueryRowContext(ctx, `SELECT p.id, p.predicted_at, p.model, p.version, p.parameters, p.features, p.outputs,
			p.prediction, fs.names, p.feature_values, p.output_values
		FROM predictions p LEFT JOIN feature_sets fs ON fs.id = p.feature_set WHERE p.id = ?`, id).Scan(
		&r.ID, &ts, &r.Model, &r.Version, &params, &features, &outputs, &pred, &names, &fvals, &ovals)
	if errors.Is(err, sql.ErrNoRows) {
		return Record{}, ErrNotFound
	}
	if err != nil {
		return Record{}, fmt.Errorf("reading prediction %q: %w", id, err)
	}
	r.PredictedAt = time.UnixMicro(ts).UTC()
	if err := unmarshalNull(params, &r.Parameters); err != nil {
		return Record{}, err
	}
	// Rows from before migration 2 hold JSON text.
	if err := unmarshalNull(features, &r.Features); err != nil {
		return Record{}, err
	}
	if err := unmarshalNull(outputs, &r.Outputs); err != nil {
		return Record{}, err
	}
	if len(fvals) > 0 {
		var fnames []string
		if err := unmarshalNull(names, &fnames); err != nil {
			return Record{}, err
		}
		v, err := unpack(fvals)
		if err != nil {
			return Record{}, fmt.Errorf("prediction %q features: %w", id, err)
		}
		r.Features = make(map[string]float64, len(v))
		for i, x := range v {
			r.Features[featureName(fnames, i)] = x
		}
	}
	if len(ovals) > 0 {
		if r.Outputs, err = unpack(ovals); err != nil {
			return Record{}, fmt.Errorf("prediction %q outputs: %w", id, err)
		}
	}
	if pred.Valid {
		r.Prediction = &pred.Float64
	}
	return r, nil
}

// Count returns the number of logged predictions.
func (s *Store) Count(ctx context.Context) (int64, error) {
	var n int64
	err := s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM predictions`).Scan(&n)
	return n, err
}

func unmarshalNull(s sql.NullString, v any) error {
	if !s.Valid || s.String == "" {
		return nil
	}
	if err := json.Unmarshal([]byte(s.String), v); err != nil {
		return fmt.Errorf("decoding stored JSON: %w", err)
	}
	return nil
}

// insert writes entries in one transaction; an entry with an id already
// logged replaces it (the latest prediction for an id wins).
func (s *Store) insert(ctx context.Context, entries []Entry) error {
	sets, err := s.featureSets(ctx, entries)
	if err != nil {
		return err
	}
	if s.db.Dialect == database.Postgres {
		return s.insertPostgres(ctx, entries, sets)
	}
	return s.write(ctx, func(tx *database.Tx) error {
		stmt, err := tx.PrepareContext(ctx, `INSERT OR REPLACE INTO predictions
			(id, predicted_at, model, version, parameters, feature_set, feature_values, output_values, prediction)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`)
		if err != nil {
			return fmt.Errorf("preparing batch: %w", err)
		}
		defer stmt.Close()
		// go-sqlite3 runs a statement whose context can be cancelled on a
		// goroutine of its own (to interrupt it): one goroutine and two
		// hand-offs per row. Rows take microseconds, so they run without
		// the deadline and ctx is checked between them instead.
		rowCtx := context.WithoutCancel(ctx)
		var fbuf, obuf []byte
		for i := range entries {
			e := &entries[i]
			var params, features, outputs, pred any
			var err error
			params, features, outputs, pred, fbuf, obuf, err = e.encode(fbuf, obuf)
			if err != nil {
				return fmt.Errorf("encoding prediction %q: %w", e.ID, err)
			}
			var set any
			if sets[i] != 0 {
				set = sets[i]
			}
			if _, err := stmt.ExecContext(rowCtx, e.ID, e.Time.UnixMicro(), e.Model, e.Version, params, set, features, outputs, pred); err != nil {
				return fmt.Errorf("inserting prediction %q: %w", e.ID, err)
			}
			// A 1,024-row batch is milliseconds of SQLite on one of the
			// cores; yielding every 32 rows lets the request goroutines
			// queued behind the writer run in between (p99 at c=64 on
			// mlp_small 4.4-5.0 ms instead of 5.1-6.0, same req/s).
			if i%32 == 31 {
				if err := ctx.Err(); err != nil {
					return fmt.Errorf("inserting predictions: %w", err)
				}
				runtime.Gosched()
			}
		}
		return nil
	})
}

// featureSets returns the feature_sets id of each entry's names (0: none),
// adding the sets not stored yet in their own transaction first, so the
// cache only ever holds committed ids.
func (s *Store) featureSets(ctx context.Context, entries []Entry) ([]int64, error) {
	ids := make([]int64, len(entries))
	var missing map[string][]int // names JSON → entries
	s.setsMu.Lock()
	for i := range entries {
		names := entries[i].FeatureNames
		if len(names) == 0 {
			continue
		}
		if fs, ok := s.bySlice[&names[0]]; ok && len(fs.names) == len(names) {
			ids[i] = fs.id
			continue
		}
		b, err := json.Marshal(names)
		if err != nil {
			s.setsMu.Unlock()
			return nil, fmt.Errorf("feature names: %w", err)
		}
		if id, ok := s.sets[string(b)]; ok {
			ids[i] = id
			s.remember(names, id)
			continue
		}
		if missing == nil {
			missing = map[string][]int{}
		}
		missing[string(b)] = append(missing[string(b)], i)
	}
	s.setsMu.Unlock()
	if len(missing) == 0 {
		return ids, nil
	}
	found := make(map[string]int64, len(missing))
	err := s.write(ctx, func(tx *database.Tx) error {
		for key := range missing {
			if _, err := tx.ExecContext(ctx, `INSERT INTO feature_sets (names) VALUES (?) ON CONFLICT (names) DO NOTHING`, key); err != nil {
				return fmt.Errorf("adding feature set: %w", err)
			}
			var id int64
			if err := tx.QueryRowContext(ctx, `SELECT id FROM feature_sets WHERE names = ?`, key).Scan(&id); err != nil {
				return fmt.Errorf("reading feature set: %w", err)
			}
			found[key] = id
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	s.setsMu.Lock()
	defer s.setsMu.Unlock()
	for key, idx := range missing {
		s.sets[key] = found[key]
		for _, i := range idx {
			ids[i] = found[key]
			s.remember(entries[i].FeatureNames, found[key])
		}
	}
	return ids, nil
}

// maxSlices bounds the by-slice cache (callers that build a new names slice
// per prediction would otherwise grow it without end); the JSON-keyed cache
// holds one entry per distinct set.
const maxSlices = 1024

// remember caches id for the names slice; setsMu must be held.
func (s *Store) remember(names []string, id int64) {
	if len(s.bySlice) >= maxSlices {
		clear(s.bySlice)
	}
	s.bySlice[&names[0]] = featureSet{names: names, id: id}
}

// pruneChunk bounds the rows one retention transaction deletes: a single
// DELETE of millions of rows holds the write lock for seconds and grows the
// WAL and SQLite's page cache (RSS more than doubled in a 5-minute load run
// once the row cap was reached); chunks keep both flat and let the
// prediction writer interleave.
const pruneChunk = 5000

// prune applies retention: predictions older than maxAge and beyond the
// newest maxRows are deleted (0 disables either rule), in transactions of at
// most chunk rows (≤ 0: pruneChunk), each followed by a pause as long as it
// took. Labels are kept.
func (s *Store) prune(ctx context.Context, now time.Time, maxAge time.Duration, maxRows int64, chunk int) (int64, error) {
	if chunk <= 0 {
		chunk = pruneChunk
	}
	var deleted int64
	// PostgreSQL has no rowid: its rows are found by ctid and ordered by id.
	rowid := "rowid"
	if s.db.Dialect == database.Postgres {
		rowid = "ctid"
	}
	deleteChunks := func(rule, where string, args ...any) error {
		q := `DELETE FROM predictions WHERE ` + rowid + ` IN (SELECT ` + rowid + ` FROM predictions WHERE ` + where + ` LIMIT ?)`
		args = append(args, chunk)
		for {
			var n int64
			t0 := time.Now()
			err := s.write(ctx, func(tx *database.Tx) error {
				res, err := tx.ExecContext(ctx, q, args...)
				if err != nil {
					return fmt.Errorf("pruning by %s: %w", rule, err)
				}
				n, _ = res.RowsAffected()
				return nil
			})
			deleted += n
			if err != nil || n < int64(chunk) {
				return err
			}
			// Leave the write lock to the prediction writer for as long as
			// the chunk held it: at full speed retention took turns with
			// every batch the writer committed, halving its rate, and the
			// queue (and RSS) grew during each pass.
			pause := time.NewTimer(time.Since(t0))
			select {
			case <-ctx.Done():
				pause.Stop()
				return ctx.Err()
			case <-pause.C:
			}
		}
	}
	if maxAge > 0 {
		if err := deleteChunks("age", `predicted_at < ?`, now.Add(-maxAge).UnixMicro()); err != nil {
			return deleted, err
		}
	}
	if maxRows > 0 {
		// The oldest row to keep; everything ordered before it goes.
		order := "rowid"
		if s.db.Dialect == database.Postgres {
			order = "id"
		}
		var at int64
		var key any
		err := s.db.QueryRowContext(ctx, `SELECT predicted_at, `+order+` FROM predictions
			ORDER BY predicted_at DESC, `+order+` DESC LIMIT 1 OFFSET ?`, maxRows-1).Scan(&at, &key)
		if errors.Is(err, sql.ErrNoRows) {
			return deleted, nil
		}
		if err != nil {
			return deleted, fmt.Errorf("pruning by rows: %w", err)
		}
		if err := deleteChunks("rows", `predicted_at < ? OR (predicted_at = ? AND `+order+` < ?)`, at, at, key); err != nil {
			return deleted, err
		}
	}
	return deleted, nil
}

// pgChunk bounds the rows of one PostgreSQL insert statement (one round
// trip each); its arrays stay well below the protocol's limits.
const pgChunk = 512

// insertPostgres writes entries with one INSERT … SELECT FROM unnest(arrays)
// per chunk instead of a round trip per row; a later entry with the same id
// wins, as with SQLite's INSERT OR REPLACE.
func (s *Store) insertPostgres(ctx context.Context, entries []Entry, sets []int64) error {
	// ON CONFLICT cannot touch a row twice in one statement: keep each id's
	// last entry.
	last := make(map[string]int, len(entries))
	for i := range entries {
		last[entries[i].ID] = i
	}
	type cols struct {
		ids, models  []string
		at, versions []int64
		params       []*string
		set          []*int64
		fvals, ovals [][]byte
		preds        []*float64
	}
	var c cols
	reset := func() { c = cols{} }
	var fbuf, obuf []byte
	flush := func(tx *database.Tx) error {
		if len(c.ids) == 0 {
			return nil
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO predictions
			(id, predicted_at, model, version, parameters, feature_set, feature_values, output_values, prediction)
			SELECT * FROM unnest(?::text[], ?::bigint[], ?::text[], ?::int[], ?::text[], ?::bigint[], ?::bytea[], ?::bytea[], ?::float8[])
			ON CONFLICT (id) DO UPDATE SET predicted_at = excluded.predicted_at, model = excluded.model,
				version = excluded.version, parameters = excluded.parameters, features = NULL, outputs = NULL,
				feature_set = excluded.feature_set, feature_values = excluded.feature_values,
				output_values = excluded.output_values, prediction = excluded.prediction`,
			c.ids, c.at, c.models, c.versions, c.params, c.set, c.fvals, c.ovals, c.preds)
		reset()
		if err != nil {
			return fmt.Errorf("inserting predictions: %w", err)
		}
		return nil
	}
	return s.write(ctx, func(tx *database.Tx) error {
		for i := range entries {
			e := &entries[i]
			if last[e.ID] != i {
				continue
			}
			params, features, outputs, pred, fb, ob, err := e.encode(fbuf, obuf)
			fbuf, obuf = fb, ob
			if err != nil {
				return fmt.Errorf("encoding prediction %q: %w", e.ID, err)
			}
			c.ids = append(c.ids, e.ID)
			c.at = append(c.at, e.Time.UnixMicro())
			c.models = append(c.models, e.Model)
			c.versions = append(c.versions, int64(e.Version))
			var p *string
			if v, ok := params.(string); ok {
				p = &v
			}
			c.params = append(c.params, p)
			var set *int64
			if sets[i] != 0 {
				set = &sets[i]
			}
			c.set = append(c.set, set)
			// encode reuses its buffers: the arrays keep copies.
			var f, o []byte
			if b, ok := features.([]byte); ok {
				f = append([]byte(nil), b...)
			}
			if b, ok := outputs.([]byte); ok {
				o = append([]byte(nil), b...)
			}
			c.fvals, c.ovals = append(c.fvals, f), append(c.ovals, o)
			var pp *float64
			if v, ok := pred.(float64); ok {
				pp = &v
			}
			c.preds = append(c.preds, pp)
			if len(c.ids) == pgChunk {
				if err := flush(tx); err != nil {
					return err
				}
				if err := ctx.Err(); err != nil {
					return fmt.Errorf("inserting predictions: %w", err)
				}
			}
		}
		return flush(tx)
	})
}
