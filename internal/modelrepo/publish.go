package modelrepo

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// ErrVersionExists is returned by Publish when the version it was asked to
// publish is already in the repository.
var ErrVersionExists = errors.New("version already exists")

// WriteFunc writes the files of a version into dir, for the given version
// number (a card records it). Publish may call it more than once, with
// other versions, when concurrent publishers race for the next version.
type WriteFunc func(dir string, version int64) error

// Publish adds a version to the model in modelDir atomically: write fills
// a hidden temporary folder modelDir/.tmp-*, every file in it is synced, and
// the folder is renamed to modelDir/<version> in one step, then modelDir is
// synced, so a watching server never sees half a version and a crash leaves
// either the whole version or none.
//
// With version > 0 exactly that version is published, and ErrVersionExists
// returned when it is taken. With version 0 the next free version is used,
// retrying when another publisher takes it first. Publish returns the
// version published.
func Publish(modelDir string, version int64, write WriteFunc) (int64, error) {
	if err := os.MkdirAll(modelDir, 0o755); err != nil {
		return 0, fmt.Errorf("publish: %w", err)
	}
	tmp, err := os.MkdirTemp(modelDir, ".tmp-")
	if err != nil {
		return 0, fmt.Errorf("publish: %w", err)
	}
	defer os.RemoveAll(tmp) // gone after a successful rename
	if err := os.Chmod(tmp, 0o755); err != nil {
		return 0, fmt.Errorf("publish: %w", err)
	}
	const attempts = 20
	for range attempts {
		v := version
		if v == 0 {
			if v, err = NextVersion(modelDir); err != nil {
				return 0, fmt.Errorf("publish: %w", err)
			}
		}
		if err := write(tmp, v); err != nil {
			return 0, fmt.Errorf("publish version %d: %w", v, err)
		}
		if err := syncTree(tmp); err != nil {
			return 0, fmt.Errorf("publish version %d: %w", v, err)
		}
		dst := VersionDir(modelDir, v)
		if _, err := os.Lstat(dst); err == nil {
			if version != 0 {
				return 0, fmt.Errorf("publish: %w: %s", ErrVersionExists, dst)
			}
			continue // another publisher took this version; try the next
		}
		if err := os.Rename(tmp, dst); err != nil {
			if version == 0 && errors.Is(err, os.ErrExist) {
				continue
			}
			return 0, fmt.Errorf("publish: renaming into place: %w", err)
		}
		if err := syncDir(modelDir); err != nil {
			return 0, fmt.Errorf("publish: %w", err)
		}
		return v, nil
	}
	return 0, fmt.Errorf("publish: no free version after %d attempts (too many concurrent publishers)", attempts)
}

// syncTree syncs every regular file in dir, then dir itself.
func syncTree(dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, de := range entries {
		if !de.Type().IsRegular() {
			continue
		}
		f, err := os.Open(filepath.Join(dir, de.Name()))
		if err != nil {
			return err
		}
		err = f.Sync()
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("syncing %s: %w", de.Name(), err)
		}
	}
	return syncDir(dir)
}

// syncDir makes a folder's entries (a rename into it) durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("syncing folder %s: %w", dir, err)
	}
	return nil
}
