// Package ort owns the process-wide ONNX Runtime environment: finding the
// shared library, checking its version and initialising onnxruntime_go once.
// Sessions and tensors live beside it in this package.
package ort

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"

	ortgo "github.com/yalue/onnxruntime_go"
)

// RequiredVersion is the ONNX Runtime release this build is made for; it must
// match the library `make deps` fetches (ORT_VERSION in the Makefile).
const RequiredVersion = "1.24"

// LibraryName is the file name of the shared library inside a lib/ folder.
const LibraryName = "libonnxruntime.so.1"

// EnvVar names the environment variable that points at the library.
const EnvVar = "FLYWHEEL_ORT_LIB"

// ErrLibraryNotFound is returned by FindLibrary when no candidate exists.
var ErrLibraryNotFound = errors.New("ONNX Runtime library not found")

// FindLibrary returns the library path to use: explicit when set, else
// $FLYWHEEL_ORT_LIB, else lib/libonnxruntime.so.1 in the working directory or
// the nearest parent that holds a go.mod (the project root when running tests).
func FindLibrary(explicit string) (string, error) {
	hint := "run `make deps` or pass --ort-lib / set " + EnvVar
	for _, p := range []string{explicit, os.Getenv(EnvVar)} {
		if p == "" {
			continue
		}
		if st, err := os.Stat(p); err != nil || st.IsDir() {
			return "", fmt.Errorf("%w at %s: %s", ErrLibraryNotFound, p, hint)
		}
		return p, nil
	}
	wd, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("%w: %s", ErrLibraryNotFound, hint)
	}
	for d := wd; ; d = filepath.Dir(d) {
		p := filepath.Join(d, "lib", LibraryName)
		if st, err := os.Stat(p); err == nil && !st.IsDir() {
			return p, nil
		}
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil || filepath.Dir(d) == d {
			break
		}
	}
	return "", fmt.Errorf("%w in ./lib: %s", ErrLibraryNotFound, hint)
}

var initMu sync.Mutex // guards the one-time initialisation below (onnxruntime_go's environment is process-wide)

// Init loads the library at path and initialises ONNX Runtime, once per
// process; later calls with the same library are no-ops. It returns the
// library's version. A wrong version is an error that says how to fix it.
func Init(path string) (string, error) {
	initMu.Lock()
	defer initMu.Unlock()
	if ortgo.IsInitialized() {
		return ortgo.GetVersion(), nil
	}
	ortgo.SetSharedLibraryPath(path)
	if err := ortgo.InitializeEnvironment(ortgo.WithLogLevelError()); err != nil {
		return "", fmt.Errorf("loading ONNX Runtime from %s (need %s.x; run `make deps`): %w", path, RequiredVersion, err)
	}
	v := ortgo.GetVersion()
	if !strings.HasPrefix(v, RequiredVersion+".") && v != RequiredVersion {
		_ = ortgo.DestroyEnvironment()
		return v, fmt.Errorf("ONNX Runtime at %s is version %s, need %s.x: run `make deps` or point --ort-lib at a %s library", path, v, RequiredVersion, RequiredVersion)
	}
	return v, nil
}

// Setup finds the library (see FindLibrary) and initialises it (see Init).
func Setup(explicit string) (path, version string, err error) {
	path, err = FindLibrary(explicit)
	if err != nil {
		return "", "", err
	}
	version, err = Init(path)
	return path, version, err
}

// DefaultMaxMemory is the default cap of ONNX Runtime's CPU memory for all
// sessions together (see LimitMemory): 1 GiB.
const DefaultMaxMemory = 1 << 30

// ErrMemoryLimit is returned by Run when ONNX Runtime could not allocate a
// tensor within the memory cap set by LimitMemory.
var ErrMemoryLimit = errors.New("ONNX Runtime memory limit reached")

// ErrMemoryBusy is returned by Run when a tensor would fit within the cap
// set by LimitMemory but other runs hold the memory at the time; it wraps
// ErrMemoryLimit.
var ErrMemoryBusy = fmt.Errorf("%w while other runs hold memory", ErrMemoryLimit)

// memLimit is the cap registered by LimitMemory (0: none); guarded by initMu.
var memLimit int64

// MemoryLimit returns the cap registered by LimitMemory (0: none).
func MemoryLimit() int64 {
	initMu.Lock()
	defer initMu.Unlock()
	return memLimit
}

// LimitMemory caps the CPU memory ONNX Runtime may allocate for the
// sessions created afterwards (all together): it registers one shared CPU
// arena with max_mem = maxBytes on the environment, and NewSession makes
// sessions use it ("session.use_env_allocators"). A run whose tensors do
// not fit fails inside ONNX Runtime, before the memory is taken and before
// onnxruntime_go copies an output into Go memory; Run answers
// ErrMemoryLimit. The arena grows by what is requested
// (kSameAsRequested), so a process that never needs much memory holds
// little. 0 sets no cap. ONNX Runtime must be initialised; the cap can be
// set once per process (a second call with the same value is a no-op).
func LimitMemory(maxBytes int64) error {
	initMu.Lock()
	defer initMu.Unlock()
	if maxBytes < 0 {
		return fmt.Errorf("ONNX Runtime memory cap %d must not be negative", maxBytes)
	}
	if maxBytes == memLimit {
		return nil
	}
	if memLimit != 0 {
		return fmt.Errorf("ONNX Runtime memory cap is already %d bytes", memLimit)
	}
	if !ortgo.IsInitialized() {
		return errors.New("ONNX Runtime is not initialised")
	}
	cfg, err := ortgo.NewArenaCfg(int(maxBytes), 1, 0, 0)
	if err != nil {
		return fmt.Errorf("configuring ONNX Runtime's memory arena: %w", err)
	}
	defer cfg.Destroy()
	mi, err := ortgo.GetMemoryInfo()
	if err != nil {
		return fmt.Errorf("configuring ONNX Runtime's memory arena: %w", err)
	}
	if err := ortgo.CreateAndRegisterAllocator(mi, cfg); err != nil {
		return fmt.Errorf("registering ONNX Runtime's memory arena: %w", err)
	}
	memLimit = maxBytes
	return nil
}
