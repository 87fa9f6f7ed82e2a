// Package external runs a training program outside the process as the
// pipeline's Trainer: any command (a Python/PyTorch script, a container
// wrapper, another binary) that reads a CSV dataset and writes model.onnx and
// model.json into an output directory. The contract is in docs/retraining.md
// ("External trainer contract").
package external

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/flywheel-ml/flywheel/internal/modelrepo"
	"github.com/flywheel-ml/flywheel/train/pipeline"
)

// Environment variables the command receives (besides the two arguments).
const (
	EnvDataset   = "FLYWHEEL_DATASET"
	EnvModel     = "FLYWHEEL_MODEL"
	EnvOutputDir = "FLYWHEEL_OUTPUT_DIR"
	EnvFeatures  = "FLYWHEEL_FEATURES" // comma-separated, in column order
	EnvTarget    = "FLYWHEEL_TARGET"
	EnvAlgorithm = "FLYWHEEL_ALGORITHM"
	EnvParams    = "FLYWHEEL_PARAMS" // JSON object
	EnvSeed      = "FLYWHEEL_SEED"
	EnvChampion  = "FLYWHEEL_CHAMPION_CARD" // path of the champion's model.json
)

// DefaultTimeout bounds a training run.
const DefaultTimeout = 30 * time.Minute

// Trainer runs Command with the dataset path and the output directory
// appended as its last two arguments.
type Trainer struct {
	Command []string      // program and leading arguments, e.g. ["/usr/bin/python3", "train.py"]
	Timeout time.Duration // DefaultTimeout when zero
	Env     []string      // extra KEY=VALUE pairs
	Dir     string        // working directory; the process's when empty
}

var _ pipeline.Trainer = (*Trainer)(nil)

// Fit implements pipeline.Trainer.
func (t *Trainer) Fit(ctx context.Context, req pipeline.FitRequest) error {
	if len(t.Command) == 0 {
		return errors.New("external trainer: no command configured")
	}
	timeout := t.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	log := req.Log
	if log == nil {
		log = io.Discard
	}
	params, err := json.Marshal(req.Params)
	if err != nil {
		return fmt.Errorf("external trainer params: %w", err)
	}
	env := filteredEnviron()
	env = append(env,
		EnvDataset+"="+req.Dataset,
		EnvOutputDir+"="+req.OutputDir,
		EnvModel+"="+req.Model,
		EnvFeatures+"="+strings.Join(req.Features, ","),
		EnvTarget+"="+req.Target,
		EnvAlgorithm+"="+req.Algorithm,
		EnvParams+"="+string(params),
		EnvSeed+"="+strconv.FormatInt(req.Seed, 10),
	)
	if req.Champion != nil {
		p := filepath.Join(filepath.Dir(req.OutputDir), "champion.json")
		if err := req.Champion.Write(p); err != nil {
			return err
		}
		env = append(env, EnvChampion+"="+p)
	}
	env = append(env, t.Env...)

	args := append(append([]string{}, t.Command[1:]...), req.Dataset, req.OutputDir)
	cmd := exec.CommandContext(ctx, t.Command[0], args...)
	cmd.Env = env
	cmd.Dir = t.Dir
	lw := &lastLine{w: log}
	cmd.Stdout, cmd.Stderr = lw, lw
	// The command may start children (a shell, python workers): kill the group.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	fmt.Fprintf(log, "$ %s\n", strings.Join(append([]string{t.Command[0]}, args...), " "))
	start := time.Now()
	err = cmd.Run()
	fmt.Fprintf(log, "external trainer finished in %.2fs\n", time.Since(start).Seconds())
	if err != nil {
		switch {
		case errors.Is(ctx.Err(), context.DeadlineExceeded):
			return fmt.Errorf("external trainer timed out after %s (last output: %q)", timeout, lw.last())
		case ctx.Err() != nil:
			return ctx.Err()
		}
		return fmt.Errorf("external trainer %s: %w (last output: %q)", t.Command[0], err, lw.last())
	}
	for _, f := range []string{modelrepo.ModelFile, modelrepo.CardFile} {
		if st, err := os.Stat(filepath.Join(req.OutputDir, f)); err != nil || st.Size() == 0 {
			return fmt.Errorf("external trainer exited 0 but did not write %s in %s", f, req.OutputDir)
		}
	}
	return nil
}

// filteredEnviron is the process environment without secrets: no FLYWHEEL_*
// variable and nothing named like a token, password or secret.
func filteredEnviron() []string {
	var out []string
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		u := strings.ToUpper(name)
		if strings.HasPrefix(u, "FLYWHEEL_") || strings.Contains(u, "TOKEN") || strings.Contains(u, "PASSWORD") || strings.Contains(u, "SECRET") {
			continue
		}
		out = append(out, kv)
	}
	return out
}

// lastLine forwards writes and remembers the last non-empty line.
type lastLine struct {
	w    io.Writer
	buf  []byte
	line string
}

func (l *lastLine) Write(p []byte) (int, error) {
	l.buf = append(l.buf, p...)
	for {
		i := strings.IndexByte(string(l.buf), '\n')
		if i < 0 {
			break
		}
		if s := strings.TrimSpace(string(l.buf[:i])); s != "" {
			l.line = s
		}
		l.buf = l.buf[i+1:]
	}
	if len(l.buf) > 4096 {
		l.buf = l.buf[len(l.buf)-4096:]
	}
	return l.w.Write(p)
}

func (l *lastLine) last() string {
	if s := strings.TrimSpace(string(l.buf)); s != "" {
		return s
	}
	return l.line
}
