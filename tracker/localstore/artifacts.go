package localstore

import (
	"bytes"
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/flywheel-ml/flywheel/internal/database"
	"github.com/flywheel-ml/flywheel/tracker"
)

// artifactLocation is where the store keeps artifacts: a directory, or
// the database.
func (s *Store) artifactLocation() string {
	if s.artifact == "" {
		return artifactScheme
	}
	return s.artifact
}

// artifactScheme prefixes the artifact URIs of a PostgreSQL store.
const artifactScheme = "flywheel-db:"

func (s *Store) runArtifactURI(id string) string {
	if s.artifact == "" {
		return artifactScheme + "/" + id
	}
	return "file://" + filepath.ToSlash(filepath.Join(s.artifact, id))
}

// cleanRel validates a relative artifact path.
func cleanRel(p string) (string, error) {
	c := strings.Trim(path.Clean("/"+strings.ReplaceAll(p, "\\", "/")), "/")
	if c == "" || c == "." {
		return "", tracker.Errorf(tracker.ErrInvalid, "artifact path %q", p)
	}
	return c, nil
}

// LogArtifact writes the file atomically under <artifact dir>/<run>/<path>.
func (s *Store) LogArtifact(ctx context.Context, runID, rel string, r io.Reader) error {
	rel, err := cleanRel(rel)
	if err != nil {
		return err
	}
	if _, err := s.Resolve(ctx, runID); err != nil {
		return err
	}
	if s.artifact == "" {
		return s.logArtifactRow(ctx, runID, rel, r)
	}
	dst := filepath.Join(s.artifact, runID, filepath.FromSlash(rel))
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Dir(dst), ".upload-*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(f, h), r)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("writing artifact %s: %w", rel, err)
	}
	if err := os.Rename(f.Name(), dst); err != nil {
		return err
	}
	return s.tx(ctx, func(tx *database.Tx) error {
		if err := touch(ctx, tx, runID); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO artifacts(run_id, path, size, sha256) VALUES (?,?,?,?)
			ON CONFLICT(run_id, path) DO UPDATE SET size = excluded.size, sha256 = excluded.sha256`, runID, rel, n, hex.EncodeToString(h.Sum(nil)))
		return err
	})
}

// logArtifactRow stores the artifact's content in the database.
func (s *Store) logArtifactRow(ctx context.Context, runID, rel string, r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return fmt.Errorf("reading artifact %s: %w", rel, err)
	}
	sum := sha256.Sum256(b)
	return s.tx(ctx, func(tx *database.Tx) error {
		if err := touch(ctx, tx, runID); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO artifacts(run_id, path, size, sha256, content) VALUES (?,?,?,?,?)
			ON CONFLICT(run_id, path) DO UPDATE SET size = excluded.size, sha256 = excluded.sha256, content = excluded.content`,
			runID, rel, len(b), hex.EncodeToString(sum[:]), b)
		return err
	})
}

// ListArtifacts lists one directory level of a run's artifacts.
func (s *Store) ListArtifacts(ctx context.Context, runID, dir string) ([]tracker.FileInfo, error) {
	id, err := s.Resolve(ctx, runID)
	if err != nil {
		return nil, err
	}
	all, err := s.AllArtifacts(ctx, id)
	if err != nil {
		return nil, err
	}
	dir = strings.Trim(dir, "/")
	prefix := ""
	if dir != "" {
		prefix = dir + "/"
	}
	seen := map[string]bool{}
	var out []tracker.FileInfo
	for _, f := range all {
		rest, ok := strings.CutPrefix(f.Path, prefix)
		if !ok {
			continue
		}
		name, _, isDir := strings.Cut(rest, "/")
		p := prefix + name
		if seen[p] {
			continue
		}
		seen[p] = true
		fi := tracker.FileInfo{Path: p, IsDir: isDir}
		if !isDir {
			fi.Size = f.Size
		}
		out = append(out, fi)
	}
	return out, nil
}

// AllArtifacts lists every artifact file of a run (recursively).
func (s *Store) AllArtifacts(ctx context.Context, runID string) ([]tracker.FileInfo, error) {
	return queryAll(ctx, s.db, "SELECT path, size FROM artifacts WHERE run_id = ? ORDER BY path", []any{runID},
		func(scan func(...any) error) (f tracker.FileInfo, err error) { return f, scan(&f.Path, &f.Size) })
}

// OpenArtifact opens an artifact file.
func (s *Store) OpenArtifact(ctx context.Context, runID, rel string) (io.ReadCloser, error) {
	id, err := s.Resolve(ctx, runID)
	if err != nil {
		return nil, err
	}
	rel, err = cleanRel(rel)
	if err != nil {
		return nil, err
	}
	if s.artifact == "" {
		var b []byte
		err := s.db.QueryRowContext(ctx, "SELECT content FROM artifacts WHERE run_id = ? AND path = ?", id, rel).Scan(&b)
		if errors.Is(err, sql.ErrNoRows) {
			return nil, tracker.Errorf(tracker.ErrNotFound, "artifact %s of run %s", rel, runID)
		}
		if err != nil {
			return nil, err
		}
		return io.NopCloser(bytes.NewReader(b)), nil
	}
	f, err := os.Open(filepath.Join(s.artifact, id, filepath.FromSlash(rel)))
	if errors.Is(err, os.ErrNotExist) {
		return nil, tracker.Errorf(tracker.ErrNotFound, "artifact %s of run %s in %s", rel, runID, s.artifact)
	}
	return f, err
}
