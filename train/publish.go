package train

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/flywheel-ml/flywheel/internal/modelrepo"
)

// Publish writes r as the next version of model name in the repository at
// repoDir with modelrepo.Publish (atomic: a watching server never sees half
// a version). It sets r.Version, r.Dir, r.Paths and the card's name and
// version.
func Publish(repoDir, name string, r *Result) (version int, dir string, err error) {
	return PublishVersion(repoDir, name, r, 0)
}

// PublishVersion is Publish that takes version want (e.g. the number the
// model registry gave the version) when that directory is free, and the
// next version otherwise; want <= 0 is Publish.
func PublishVersion(repoDir, name string, r *Result, want int) (version int, dir string, err error) {
	if r == nil || r.Card == nil || len(r.ONNX) == 0 {
		return 0, "", errors.New("publish: empty result")
	}
	if name == "" {
		name = r.Card.Name
	}
	modelDir := filepath.Join(repoDir, name)
	c := *r.Card
	c.Name = name
	write := func(tmp string, v int64) error {
		if err := os.WriteFile(filepath.Join(tmp, modelrepo.ModelFile), r.ONNX, 0o644); err != nil {
			return err
		}
		c.Version = int(v)
		if err := c.Validate(); err != nil {
			return fmt.Errorf("model card: %w", err)
		}
		return c.Write(filepath.Join(tmp, modelrepo.CardFile))
	}
	var v int64
	if want > 0 {
		v, err = modelrepo.Publish(modelDir, int64(want), write)
	}
	if want <= 0 || errors.Is(err, modelrepo.ErrVersionExists) {
		v, err = modelrepo.Publish(modelDir, 0, write)
	}
	if err != nil {
		return 0, "", err
	}
	dir = modelrepo.VersionDir(modelDir, v)
	r.Version, r.Dir = int(v), dir
	r.Paths = []string{filepath.Join(dir, modelrepo.ModelFile), filepath.Join(dir, modelrepo.CardFile)}
	*r.Card = c
	return int(v), dir, nil
}
