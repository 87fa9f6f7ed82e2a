package localstore

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/flywheel-ml/flywheel/internal/database"
	"github.com/flywheel-ml/flywheel/tracker"
)

// CreateRegisteredModel creates name if missing.
func (s *Store) CreateRegisteredModel(ctx context.Context, name string) error {
	if name == "" {
		return tracker.Errorf(tracker.ErrInvalid, "model name is empty")
	}
	return s.tx(ctx, func(tx *database.Tx) error {
		_, err := tx.ExecContext(ctx, "INSERT INTO registered_models(name, created) VALUES (?, ?) ON CONFLICT (name) DO NOTHING", name, s.now().UnixMilli())
		return err
	})
}

// CreateModelVersion registers the artifact; versions count up per model.
func (s *Store) CreateModelVersion(ctx context.Context, name, runID, artifactPath string) (tracker.ModelVersion, error) {
	id, err := s.Resolve(ctx, runID)
	if err != nil {
		return tracker.ModelVersion{}, err
	}
	artifactPath = strings.Trim(artifactPath, "/")
	var version int64
	err = s.tx(ctx, func(tx *database.Tx) error {
		// The model's row is locked so concurrent writers number one at a time.
		var one int
		if err := tx.QueryRowContext(ctx, "SELECT 1 FROM registered_models WHERE name = ?"+s.forUpdate(), name).Scan(&one); errors.Is(err, sql.ErrNoRows) {
			return tracker.Errorf(tracker.ErrNotFound, "registered model %q", name)
		} else if err != nil {
			return err
		}
		if err := tx.QueryRowContext(ctx, "SELECT COALESCE(MAX(version), 0) + 1 FROM model_versions WHERE name = ?", name).Scan(&version); err != nil {
			return err
		}
		if err := touch(ctx, tx, id); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, "INSERT INTO model_versions(name, version, run_id, artifact_path, created) VALUES (?,?,?,?,?)",
			name, version, id, artifactPath, s.now().UnixMilli())
		return err
	})
	if err != nil {
		return tracker.ModelVersion{}, fmt.Errorf("creating a version of %q: %w", name, err)
	}
	return tracker.ModelVersion{Name: name, Version: strconv.FormatInt(version, 10), Source: s.runArtifactURI(id) + "/" + artifactPath, RunID: id, Status: "READY"}, nil
}

// SetAlias points alias at version.
func (s *Store) SetAlias(ctx context.Context, name, alias, version string) error {
	return s.setAlias(ctx, name, alias, version, false)
}

// setAlias points alias at version and records in the outbox whether
// MLflow still has to receive it.
func (s *Store) setAlias(ctx context.Context, name, alias, version string, pending bool) error {
	v, err := parseID(tracker.ErrInvalid, "model version", version)
	if err != nil {
		return err
	}
	return s.tx(ctx, func(tx *database.Tx) error {
		var one int
		if err := tx.QueryRowContext(ctx, "SELECT 1 FROM model_versions WHERE name = ? AND version = ?", name, v).Scan(&one); errors.Is(err, sql.ErrNoRows) {
			return tracker.Errorf(tracker.ErrNotFound, "model version %s of %q", version, name)
		} else if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO aliases(name, alias, version) VALUES (?,?,?)
			ON CONFLICT(name, alias) DO UPDATE SET version = excluded.version`, name, alias, v); err != nil {
			return err
		}
		return s.Outbox().aliasPending(ctx, tx, name, alias, v, pending)
	})
}

// GetModelVersionByAlias resolves an alias.
func (s *Store) GetModelVersionByAlias(ctx context.Context, name, alias string) (tracker.ModelVersion, error) {
	var v int64
	err := s.db.QueryRowContext(ctx, "SELECT version FROM aliases WHERE name = ? AND alias = ?", name, alias).Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
		return tracker.ModelVersion{}, tracker.Errorf(tracker.ErrNotFound, "alias %q of model %q", alias, name)
	}
	if err != nil {
		return tracker.ModelVersion{}, err
	}
	lv, err := s.modelVersions(ctx, "name = ? AND version = ?", name, v)
	if err != nil || len(lv) == 0 {
		return tracker.ModelVersion{}, tracker.Errorf(tracker.ErrNotFound, "model version %d of %q", v, name)
	}
	return lv[0].ModelVersion, nil
}

// LocalVersion is a model version with the artifact path in its run.
type LocalVersion struct {
	tracker.ModelVersion
	ArtifactPath string
}

// ModelVersionsOfRun lists the versions created from a run.
func (s *Store) ModelVersionsOfRun(ctx context.Context, runID string) ([]LocalVersion, error) {
	return s.modelVersions(ctx, "run_id = ?", runID)
}

// ModelVersion returns the version numbered version of name.
func (s *Store) ModelVersion(ctx context.Context, name, version string) (LocalVersion, error) {
	v, err := parseID(tracker.ErrInvalid, "model version", version)
	if err != nil {
		return LocalVersion{}, err
	}
	lvs, err := s.modelVersions(ctx, "name = ? AND version = ?", name, v)
	if err != nil {
		return LocalVersion{}, err
	}
	if len(lvs) == 0 {
		return LocalVersion{}, tracker.Errorf(tracker.ErrNotFound, "model version %s of %q", version, name)
	}
	return lvs[0], nil
}

func (s *Store) modelVersions(ctx context.Context, where string, args ...any) ([]LocalVersion, error) {
	out, err := queryAll(ctx, s.db, "SELECT name, version, run_id, artifact_path, description, tags FROM model_versions WHERE "+where+" ORDER BY name, version", args,
		func(scan func(...any) error) (lv LocalVersion, err error) {
			var v int64
			var tags string
			if err := scan(&lv.Name, &v, &lv.RunID, &lv.ArtifactPath, &lv.Description, &tags); err != nil {
				return lv, err
			}
			if err := json.Unmarshal([]byte(tags), &lv.Tags); err != nil {
				return lv, fmt.Errorf("tags of model version %s/%d: %w", lv.Name, v, err)
			}
			if len(lv.Tags) == 0 {
				lv.Tags = nil
			}
			lv.Version = strconv.FormatInt(v, 10)
			lv.Source = s.runArtifactURI(lv.RunID) + "/" + lv.ArtifactPath
			lv.Status = "READY"
			return lv, nil
		})
	if err != nil {
		return nil, err
	}
	for i := range out {
		if out[i].Aliases, err = s.aliasesOf(ctx, out[i].Name, out[i].Version); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func (s *Store) aliasesOf(ctx context.Context, name, version string) ([]string, error) {
	v, _ := strconv.ParseInt(version, 10, 64)
	return queryAll(ctx, s.db, "SELECT alias FROM aliases WHERE name = ? AND version = ? ORDER BY alias", []any{name, v},
		func(scan func(...any) error) (a string, err error) { return a, scan(&a) })
}

var _ tracker.VersionAnnotator = (*Store)(nil)

// AnnotateModelVersion sets a version's description (when not empty) and
// tags (merged into its tags).
func (s *Store) AnnotateModelVersion(ctx context.Context, name, version string, a tracker.VersionAnnotation) error {
	for k := range a.Tags {
		if err := tracker.ValidateKey(k); err != nil {
			return err
		}
	}
	v, err := parseID(tracker.ErrNotFound, "model version", version)
	if err != nil {
		return fmt.Errorf("%w of %q", err, name)
	}
	return s.tx(ctx, func(tx *database.Tx) error {
		var desc, raw string
		err := tx.QueryRowContext(ctx, "SELECT description, tags FROM model_versions WHERE name = ? AND version = ?"+s.forUpdate(), name, v).Scan(&desc, &raw)
		if errors.Is(err, sql.ErrNoRows) {
			return tracker.Errorf(tracker.ErrNotFound, "model version %s of %q", version, name)
		} else if err != nil {
			return err
		}
		tags := map[string]string{}
		if err := json.Unmarshal([]byte(raw), &tags); err != nil {
			return err
		}
		for k, v := range a.Tags {
			tags[k] = v
		}
		if a.Description != "" {
			desc = a.Description
		}
		b, _ := json.Marshal(tags)
		_, err = tx.ExecContext(ctx, "UPDATE model_versions SET description = ?, tags = ? WHERE name = ? AND version = ?", desc, string(b), name, v)
		return err
	})
}
