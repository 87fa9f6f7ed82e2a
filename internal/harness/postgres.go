package harness

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" driver

	"github.com/flywheel-ml/flywheel/internal/database"
)

// PostgresBinDir holds Debian's PostgreSQL 15 server binaries (package
// postgresql-15, installed by `make pg-deps`); FLYWHEEL_PG_BIN overrides it.
const PostgresBinDir = "/usr/lib/postgresql/15/bin"

// PostgresOptions tune StartPostgres.
type PostgresOptions struct {
	// Settings are extra server settings (-c name=value), e.g. fsync=off
	// for contract tests that do not measure durability.
	Settings map[string]string
}

// Postgres is a PostgreSQL server started for a test.
type Postgres struct {
	Addr     string // 127.0.0.1:port
	Dir      string // data directory
	user     string
	password string
	bin      string
	sysUser  string // the unprivileged system user running the server ("" = the current user)

	mu  sync.Mutex
	seq int
}

// StartPostgres initialises a cluster in a temporary data directory as an
// unprivileged user (postgres, with runuser, when the test runs as root),
// starts it on a free 127.0.0.1 port with password authentication and stops
// it (and removes the directory) when the test ends.
func StartPostgres(t testing.TB, o PostgresOptions) *Postgres {
	t.Helper()
	bin := os.Getenv("FLYWHEEL_PG_BIN")
	if bin == "" {
		bin = PostgresBinDir
	}
	if _, err := os.Stat(filepath.Join(bin, "postgres")); err != nil {
		t.Fatalf("PostgreSQL 15 server not installed (%v): run `make pg-deps`", err)
	}
	pg := &Postgres{bin: bin, user: "flywheel", password: randomHex(12)}
	if os.Geteuid() == 0 {
		pg.sysUser = "postgres"
	}
	// t.TempDir's parents are private to root: the cluster gets a directory
	// of its own owned by the server's user.
	dir, err := os.MkdirTemp("", "flywheel-pg-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if pg.sysUser != "" {
		u, err := user.Lookup(pg.sysUser)
		if err != nil {
			t.Fatalf("user %s (from Debian's postgresql package): %v", pg.sysUser, err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		if err := os.Chown(dir, uid, gid); err != nil {
			t.Fatal(err)
		}
	}
	pg.Dir = filepath.Join(dir, "data")
	pwfile := filepath.Join(dir, "pw")
	if err := os.WriteFile(pwfile, []byte(pg.password+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := pg.run("initdb", "-D", pg.Dir, "-U", pg.user, "--pwfile="+pwfile, "--auth=scram-sha-256",
		"-E", "UTF8", "--locale=C", "--no-instructions"); err != nil {
		t.Fatalf("initdb: %v\n%s", err, out)
	}
	os.Remove(pwfile)
	// A free port: PostgreSQL may lose a race for it, so a failed start is
	// retried on another.
	var lastOut string
	for try := 0; try < 3; try++ {
		pg.Addr = FreeAddr(t)
		_, port, _ := net.SplitHostPort(pg.Addr)
		opts := []string{"-p " + port, "-c listen_addresses=127.0.0.1", "-k " + dir, "-c max_connections=200"}
		for k, v := range o.Settings {
			opts = append(opts, "-c "+k+"="+v)
		}
		out, err := pg.run("pg_ctl", "-D", pg.Dir, "-l", filepath.Join(dir, "server.log"), "-w", "-t", "60",
			"-o", strings.Join(opts, " "), "start")
		if err == nil {
			lastOut = ""
			break
		}
		log, _ := os.ReadFile(filepath.Join(dir, "server.log"))
		lastOut = fmt.Sprintf("%v\n%s\n%s", err, out, tail(string(log), 4000))
	}
	if lastOut != "" {
		t.Fatalf("starting PostgreSQL: %s", lastOut)
	}
	t.Cleanup(func() {
		if out, err := pg.run("pg_ctl", "-D", pg.Dir, "-m", "fast", "-w", "stop"); err != nil {
			t.Errorf("stopping PostgreSQL: %v\n%s", err, out)
		}
		if t.Failed() {
			log, _ := os.ReadFile(filepath.Join(dir, "server.log"))
			t.Logf("---- postgres log ----\n%s", tail(string(log), 4000))
		}
	})
	return pg
}

// run runs one of the server's binaries as its system user.
func (pg *Postgres) run(name string, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	path := filepath.Join(pg.bin, name)
	var cmd *exec.Cmd
	if pg.sysUser != "" {
		cmd = exec.CommandContext(ctx, "runuser", append([]string{"-u", pg.sysUser, "--", path}, args...)...)
	} else {
		cmd = exec.CommandContext(ctx, path, args...)
	}
	cmd.Dir = os.TempDir()
	return cmd.CombinedOutput()
}

// URL returns the URL of database db (the maintenance database "postgres"
// when empty).
func (pg *Postgres) URL(db string) string {
	if db == "" {
		db = "postgres"
	}
	return fmt.Sprintf("postgres://%s:%s@%s/%s?sslmode=disable", pg.user, pg.password, pg.Addr, db)
}

// NewDatabase creates an empty database and returns its URL.
func (pg *Postgres) NewDatabase(t testing.TB) string {
	t.Helper()
	pg.mu.Lock()
	pg.seq++
	name := fmt.Sprintf("test_%d_%s", pg.seq, randomHex(4))
	pg.mu.Unlock()
	db, err := sql.Open("pgx", pg.URL(""))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := db.ExecContext(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatalf("creating database %s: %v", name, err)
	}
	return pg.URL(name)
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// Backend is one database backend of a contract test: NewURL returns the
// URL of a fresh, empty database.
type Backend struct {
	Name   string
	NewURL func(t testing.TB) string
}

// Backends returns the two backends every storage contract suite runs
// against: SQLite files in temporary directories and databases on a real
// PostgreSQL server started for t (fsync off: the suites test behaviour,
// not durability).
func Backends(t testing.TB) []Backend {
	t.Helper()
	pg := StartPostgres(t, PostgresOptions{Settings: map[string]string{"fsync": "off", "synchronous_commit": "off"}})
	return []Backend{
		{Name: "sqlite", NewURL: func(t testing.TB) string { return filepath.Join(t.TempDir(), "flywheel.db") }},
		{Name: "postgres", NewURL: pg.NewDatabase},
	}
}

// OpenDB opens the database at url (a SQLite path or a PostgreSQL URL)
// directly, for what a test checks behind the stores; it closes when the
// test ends.
func OpenDB(t testing.TB, url string) *database.DB {
	t.Helper()
	db, err := database.Open(context.Background(), url, database.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}
