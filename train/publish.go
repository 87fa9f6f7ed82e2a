package train

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"github.com/flywheel-ml/flywheel/train/card"
)

// ModelFile is the graph's file name inside a version directory.
const ModelFile = "model.onnx"

// NextVersion returns 1 + the highest integer version directory under
// repoDir/name (1 when there is none). Hidden and non-integer entries are
// ignored.
func NextVersion(repoDir, name string) (int, error) {
	entries, err := os.ReadDir(filepath.Join(repoDir, name))
	if errors.Is(err, os.ErrNotExist) {
		return 1, nil
	}
	if err != nil {
		return 0, fmt.Errorf("listing model versions: %w", err)
	}
	highest := 0
	for _, e := range entries {
		if v, err := strconv.Atoi(e.Name()); err == nil && v > highest && e.IsDir() {
			highest = v
		}
	}
	return highest + 1, nil
}

// Publish writes r as the next version of model name in the repository at
// repoDir: model.onnx and model.json go into a hidden temporary directory
// models/<name>/.tmp-*, which is then renamed to models/<name>/<version>, so
// a watching server never sees half a version. It sets r.Version, r.Dir,
// r.Paths and the card's name and version.
func Publish(repoDir, name string, r *Result) (version int, dir string, err error) {
	if r == nil || r.Card == nil || len(r.ONNX) == 0 {
		return 0, "", errors.New("publish: empty result")
	}
	if name == "" {
		name = r.Card.Name
	}
	modelDir := filepath.Join(repoDir, name)
	if err := os.MkdirAll(modelDir, 0o755); err != nil {
		return 0, "", fmt.Errorf("publish: %w", err)
	}
	tmp, err := os.MkdirTemp(modelDir, ".tmp-")
	if err != nil {
		return 0, "", fmt.Errorf("publish: %w", err)
	}
	defer func() {
		if err != nil {
			os.RemoveAll(tmp)
		}
	}()
	if err = os.Chmod(tmp, 0o755); err != nil {
		return 0, "", fmt.Errorf("publish: %w", err)
	}
	if err = writeSynced(filepath.Join(tmp, ModelFile), r.ONNX); err != nil {
		return 0, "", err
	}
	c := *r.Card
	c.Name = name
	for attempt := 0; attempt < 20; attempt++ {
		if version, err = NextVersion(repoDir, name); err != nil {
			return 0, "", err
		}
		c.Version = version
		if err = c.Validate(); err != nil {
			return 0, "", fmt.Errorf("publish: model card: %w", err)
		}
		if err = c.Write(filepath.Join(tmp, card.FileName)); err != nil {
			return 0, "", fmt.Errorf("publish: %w", err)
		}
		dir = filepath.Join(modelDir, strconv.Itoa(version))
		if _, serr := os.Stat(dir); serr == nil {
			continue // another publisher took this version; try the next
		}
		if err = os.Rename(tmp, dir); err == nil {
			syncDir(modelDir)
			r.Version, r.Dir = version, dir
			r.Paths = []string{filepath.Join(dir, ModelFile), filepath.Join(dir, card.FileName)}
			*r.Card = c
			return version, dir, nil
		}
	}
	if err == nil {
		err = errors.New("too many concurrent publishers")
	}
	return 0, "", fmt.Errorf("publish: renaming into place: %w", err)
}

func writeSynced(path string, b []byte) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("publish: %w", err)
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return fmt.Errorf("publish: writing %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("publish: syncing %s: %w", path, err)
	}
	return f.Close()
}

func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
}
