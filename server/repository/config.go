package repository

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/flywheel-ml/flywheel/internal/modelrepo"
	"io"
	"log/slog"
	"os"
	"sort"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/flywheel-ml/flywheel/server/batch"
	"github.com/flywheel-ml/flywheel/server/ort"
)

// Config is the repository's own configuration (from serve's flags).
type Config struct {
	// Root is the model repository folder: <Root>/<model>/<version>/model.onnx.
	Root string
	// RescanInterval is the periodic full rescan, the fallback for missed
	// file system events. 0 disables it.
	RescanInterval time.Duration
	// Debounce delays a rescan after a file system event so that bursts
	// (a directory renamed into place, a file replaced) settle first.
	Debounce time.Duration
	// WarmupTimeout bounds the warm-up run of a new version.
	WarmupTimeout time.Duration
	// Session are the session options for models whose config.yaml does
	// not set them.
	Session ort.SessionOptions
}

// DefaultConfig returns the defaults: rescan every 5 s, 100 ms debounce,
// 30 s warm-up timeout, ort.DefaultSessionOptions.
func DefaultConfig() Config {
	return Config{RescanInterval: 5 * time.Second, Debounce: 100 * time.Millisecond, WarmupTimeout: 30 * time.Second, Session: ort.DefaultSessionOptions()}
}

// Validate checks the configuration.
func (c Config) Validate() error {
	if c.Root == "" {
		return errors.New("model repository folder is not set")
	}
	if c.RescanInterval < 0 {
		return fmt.Errorf("rescan interval %s is negative", c.RescanInterval)
	}
	if c.Debounce < 0 {
		return fmt.Errorf("debounce %s is negative", c.Debounce)
	}
	if err := c.Session.Validate(); err != nil {
		return fmt.Errorf("session options: %w", err)
	}
	return nil
}

// ModelConfig is the content of models/<name>/config.yaml:
//
//	version_policy:          # at most one of latest, all, specific
//	  latest: 2              # serve the 2 highest versions (default: latest 1)
//	  # all: true            # serve every version
//	  # specific: [1, 3]     # serve exactly these versions
//	session:
//	  intra_op_threads: 1    # default 1
//	  inter_op_threads: 1    # default 1
//	  graph_optimization_level: all   # disabled | basic | extended | all
//	  max_output_elements: 8388608    # per output of one run (default: serve's --max-output-elements)
//	  mem_arena: false                # keep ORT's CPU arena (default false: memory returns after a run); no effect while serve's --ort-max-memory caps ORT (the shared arena is used)
//	warmup: true             # run once on zeros before serving (default true)
//	dynamic_batching:        # merge concurrent requests into one session run (default: off)
//	  max_batch_size: 64
//	  max_queue_delay_microseconds: 0
//	  queue_capacity: 1024
type ModelConfig struct {
	VersionPolicy VersionPolicy `yaml:"version_policy"`
	Session       SessionConfig `yaml:"session"`
	Warmup        *bool         `yaml:"warmup"`
	// DynamicBatching, when set, puts a batch.Batcher in front of every
	// version's session (through Options.Wrap; the repository only parses it).
	DynamicBatching *batch.Config `yaml:"dynamic_batching"`
}

// VersionPolicy selects which versions on disk are served.
type VersionPolicy struct {
	Latest   int     `yaml:"latest,omitempty"`
	All      bool    `yaml:"all,omitempty"`
	Specific []int64 `yaml:"specific,omitempty"`
}

// SessionConfig overrides the repository's session options; zero fields
// keep the default.
type SessionConfig struct {
	IntraOpThreads         int    `yaml:"intra_op_threads"`
	InterOpThreads         int    `yaml:"inter_op_threads"`
	GraphOptimizationLevel string `yaml:"graph_optimization_level"`
	MaxOutputElements      int64  `yaml:"max_output_elements"`
	MemArena               *bool  `yaml:"mem_arena"`
}

// DefaultModelConfig is the configuration of a model without config.yaml.
func DefaultModelConfig() ModelConfig {
	return ModelConfig{VersionPolicy: VersionPolicy{Latest: 1}}
}

// Validate checks the policy and session settings, naming key and value.
func (c ModelConfig) Validate() error {
	set := 0
	if c.VersionPolicy.Latest != 0 {
		set++
		if c.VersionPolicy.Latest < 0 {
			return fmt.Errorf("version_policy.latest %d must be positive", c.VersionPolicy.Latest)
		}
	}
	if c.VersionPolicy.All {
		set++
	}
	if c.VersionPolicy.Specific != nil {
		set++
		if len(c.VersionPolicy.Specific) == 0 {
			return errors.New("version_policy.specific is empty")
		}
		for _, v := range c.VersionPolicy.Specific {
			if v <= 0 {
				return fmt.Errorf("version_policy.specific lists %d: versions are positive integers", v)
			}
		}
	}
	if set > 1 {
		return errors.New("at most one of version_policy.latest, version_policy.all and version_policy.specific may be set")
	}
	if c.DynamicBatching != nil {
		if err := c.DynamicBatching.Validate(); err != nil {
			return fmt.Errorf("dynamic_batching: %w", err)
		}
	}
	return c.sessionOptions(ort.DefaultSessionOptions()).Validate()
}

func (c ModelConfig) sessionOptions(def ort.SessionOptions) ort.SessionOptions {
	o := def
	if c.Session.IntraOpThreads != 0 {
		o.IntraOpThreads = c.Session.IntraOpThreads
	}
	if c.Session.InterOpThreads != 0 {
		o.InterOpThreads = c.Session.InterOpThreads
	}
	if c.Session.GraphOptimizationLevel != "" {
		o.GraphOptimization = c.Session.GraphOptimizationLevel
	}
	if c.Session.MaxOutputElements != 0 {
		o.MaxOutputElements = c.Session.MaxOutputElements
	}
	if c.Session.MemArena != nil {
		o.MemArena = *c.Session.MemArena
	}
	return o
}

// fingerprint identifies the configuration's values: it follows the
// pointers (warmup, dynamic_batching), so equal files give equal prints.
func (c ModelConfig) fingerprint() string {
	b, err := json.Marshal(c)
	if err != nil { // only plain values: cannot happen
		return fmt.Sprintf("unencodable config: %v", err)
	}
	return string(b)
}

func (c ModelConfig) warmup() bool { return c.Warmup == nil || *c.Warmup }

// wanted returns the versions the policy selects from those on disk, highest
// first. For latest-N it returns every version, highest first, and the
// caller stops after N load successfully.
func (p VersionPolicy) wanted(onDisk []int64) (list []int64, limit int) {
	sorted := append([]int64(nil), onDisk...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i] > sorted[j] })
	switch {
	case p.All:
		return sorted, len(sorted)
	case p.Specific != nil:
		for _, v := range sorted {
			for _, s := range p.Specific {
				if v == s {
					list = append(list, v)
				}
			}
		}
		return list, len(list)
	}
	n := p.Latest
	if n == 0 {
		n = 1
	}
	return sorted, n
}

// LoadModelConfig reads a config.yaml strictly (unknown keys are errors).
// A missing file gives DefaultModelConfig.
func LoadModelConfig(path string) (ModelConfig, error) {
	c := DefaultModelConfig()
	b, err := modelrepo.ReadRegular(path, modelrepo.MaxSmallBytes)
	if errors.Is(err, os.ErrNotExist) {
		return c, nil
	}
	if err != nil {
		return c, fmt.Errorf("reading %s: %w", path, err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil && !errors.Is(err, io.EOF) {
		return DefaultModelConfig(), fmt.Errorf("parsing YAML file %s: %w", path, err)
	}
	if c.VersionPolicy.All || c.VersionPolicy.Specific != nil {
		if c.VersionPolicy.Latest == 1 {
			c.VersionPolicy.Latest = 0 // the preset default, not set in the file
		}
	}
	if err := c.Validate(); err != nil {
		return DefaultModelConfig(), fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

func nopLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }
