package pipeline

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"

	"github.com/flywheel-ml/flywheel/train/card"
)

// Model version files.
const (
	ModelFile = "model.onnx"
	// ProvenanceFile in a published version names the job that published
	// it, so a retried job never publishes twice.
	ProvenanceFile = "job.json"
)

// versions returns the integer version directories of a model, ascending.
func versions(modelDir string) ([]int, error) {
	ents, err := os.ReadDir(modelDir)
	if err != nil {
		return nil, fmt.Errorf("reading model directory: %w", err)
	}
	var out []int
	for _, e := range ents {
		if !e.IsDir() {
			continue
		}
		v, err := strconv.Atoi(e.Name())
		if err != nil || v < 1 || strconv.Itoa(v) != e.Name() {
			continue
		}
		out = append(out, v)
	}
	for i := 1; i < len(out); i++ { // ReadDir sorts by name: "10" < "9"
		for j := i; j > 0 && out[j] < out[j-1]; j-- {
			out[j], out[j-1] = out[j-1], out[j]
		}
	}
	return out, nil
}

// champion returns the newest version with a card: the version serve serves
// under the default policy.
func champion(modelDir string) (int, *card.Card, error) {
	vs, err := versions(modelDir)
	if err != nil {
		return 0, nil, err
	}
	if len(vs) == 0 {
		return 0, nil, fmt.Errorf("no versions in %s", modelDir)
	}
	v := vs[len(vs)-1]
	c, err := card.Load(filepath.Join(modelDir, strconv.Itoa(v), card.FileName))
	if err != nil {
		return 0, nil, fmt.Errorf("champion version %d: %w", v, err)
	}
	return v, c, nil
}

type provenance struct {
	JobID   string `json:"job_id"`
	Attempt int    `json:"attempt"`
	RunID   string `json:"run_id,omitempty"`
}

// publishedBy returns the version a job already published, or 0.
func publishedBy(modelDir, jobID string) (int, error) {
	vs, err := versions(modelDir)
	if err != nil {
		return 0, err
	}
	for _, v := range vs {
		b, err := os.ReadFile(filepath.Join(modelDir, strconv.Itoa(v), ProvenanceFile))
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return 0, err
		}
		var p provenance
		if json.Unmarshal(b, &p) == nil && p.JobID == jobID {
			return v, nil
		}
	}
	return 0, nil
}

// publish copies model.onnx and the card into modelDir/.tmp-<job>/ and
// renames it to modelDir/<version>/ in one step.
func publish(modelDir string, version int, srcModel string, c *card.Card, p provenance) error {
	tmp := filepath.Join(modelDir, ".tmp-"+p.JobID)
	if err := os.RemoveAll(tmp); err != nil {
		return err
	}
	if err := os.MkdirAll(tmp, 0o755); err != nil {
		return err
	}
	if err := copyFile(srcModel, filepath.Join(tmp, ModelFile)); err != nil {
		return err
	}
	if err := c.Write(filepath.Join(tmp, card.FileName)); err != nil {
		return err
	}
	b, _ := json.MarshalIndent(p, "", "  ")
	if err := os.WriteFile(filepath.Join(tmp, ProvenanceFile), append(b, '\n'), 0o644); err != nil {
		return err
	}
	if err := syncDir(tmp); err != nil {
		return err
	}
	dst := filepath.Join(modelDir, strconv.Itoa(version))
	if _, err := os.Stat(dst); err == nil {
		return fmt.Errorf("version directory %s already exists", dst)
	}
	if err := os.Rename(tmp, dst); err != nil {
		return fmt.Errorf("publishing version %d: %w", version, err)
	}
	return syncDir(modelDir)
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
	if err := out.Sync(); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
