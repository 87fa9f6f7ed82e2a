package pipeline

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/flywheel-ml/flywheel/internal/modelrepo"
)

// ProvenanceFile in a published version names the job that published it,
// so a retried job never publishes twice.
const ProvenanceFile = "job.json"

// champion returns the newest version with a card: the version serve serves
// under the default policy.
func champion(modelDir string) (int, *modelrepo.Card, error) {
	vs, err := modelrepo.Versions(modelDir)
	if err != nil {
		return 0, nil, err
	}
	if len(vs) == 0 {
		return 0, nil, fmt.Errorf("no versions in %s", modelDir)
	}
	v := vs[len(vs)-1]
	c, err := modelrepo.LoadCard(filepath.Join(modelrepo.VersionDir(modelDir, v), modelrepo.CardFile))
	if err != nil {
		return 0, nil, fmt.Errorf("champion version %d: %w", v, err)
	}
	return int(v), c, nil
}

type provenance struct {
	JobID      string `json:"job_id"`
	Attempt    int    `json:"attempt"`
	RunID      string `json:"run_id,omitempty"`
	Registered string `json:"registered_version,omitempty"` // the registry's version, when tracked
	Version    int    `json:"-"`                            // the folder's
}

// publishedBy returns the provenance of the version a job already
// published (Version 0: none).
func publishedBy(modelDir, jobID string) (provenance, error) {
	vs, err := modelrepo.Versions(modelDir)
	if err != nil {
		return provenance{}, err
	}
	for _, v := range vs {
		b, err := os.ReadFile(filepath.Join(modelrepo.VersionDir(modelDir, v), ProvenanceFile))
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return provenance{}, err
		}
		var p provenance
		if json.Unmarshal(b, &p) == nil && p.JobID == jobID {
			p.Version = int(v)
			return p, nil
		}
	}
	return provenance{}, nil
}

// publish publishes model.onnx, the card and the job's provenance as
// modelDir/<version> with modelrepo.Publish.
func publish(modelDir string, version int, srcModel string, c *modelrepo.Card, p provenance) error {
	_, err := modelrepo.Publish(modelDir, int64(version), func(tmp string, _ int64) error {
		if err := copyFile(srcModel, filepath.Join(tmp, modelrepo.ModelFile)); err != nil {
			return err
		}
		if err := c.Write(filepath.Join(tmp, modelrepo.CardFile)); err != nil {
			return err
		}
		b, err := json.MarshalIndent(p, "", "  ")
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(tmp, ProvenanceFile), append(b, '\n'), 0o644)
	})
	return err
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
