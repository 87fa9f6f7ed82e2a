// Package modelrepo is the contract between the trainer and the server: the
// layout of the model repository, models/<name>/<version>/{model.onnx,
// model.json} with an optional models/<name>/config.yaml; the rule for
// version folder names; the one atomic way to publish a version; and the
// model card with its reference histograms, binned by the one rule that the
// trainer, the retraining pipeline and drift monitoring share.
package modelrepo

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
)

// Files of the model repository.
const (
	// ModelFile is the ONNX graph inside a version folder.
	ModelFile = "model.onnx"
	// CardFile is the model card inside a version folder.
	CardFile = "model.json"
	// ConfigFile is the optional per-model configuration, beside the
	// version folders.
	ConfigFile = "config.yaml"
)

// ErrBadVersion is returned for a version that is not a positive integer
// written canonically.
var ErrBadVersion = errors.New("versions are positive integers")

// ParseVersion parses a version folder name or a version in a URL: a
// positive integer in canonical decimal form, so "007", "+3", "0" and
// "1e3" are rejected (serve would never load "007" as version 7, so
// nothing else may count it either).
func ParseVersion(s string) (int64, error) {
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil || v <= 0 || strconv.FormatInt(v, 10) != s {
		return 0, fmt.Errorf("%w: %q", ErrBadVersion, s)
	}
	return v, nil
}

// VersionDir is the folder of one version of the model in modelDir.
func VersionDir(modelDir string, version int64) string {
	return filepath.Join(modelDir, strconv.FormatInt(version, 10))
}

// IsDir reports whether the entry de of folder dir is a folder or a
// symbolic link to one.
func IsDir(dir string, de os.DirEntry) bool {
	if de.IsDir() {
		return true
	}
	if de.Type()&os.ModeSymlink != 0 {
		st, err := os.Stat(filepath.Join(dir, de.Name()))
		return err == nil && st.IsDir()
	}
	return false
}

// VersionsIn returns the versions among the entries of modelDir (as read by
// os.ReadDir), ascending: folders (or links to folders) named by
// ParseVersion's rule. Hidden temporary folders of a publish in progress
// and anything else are ignored.
func VersionsIn(modelDir string, entries []os.DirEntry) []int64 {
	var out []int64
	for _, de := range entries {
		if v, err := ParseVersion(de.Name()); err == nil && IsDir(modelDir, de) {
			out = append(out, v)
		}
	}
	slices.Sort(out) // ReadDir sorts by name: "10" < "9"
	return out
}

// Versions lists the versions in modelDir, ascending.
func Versions(modelDir string) ([]int64, error) {
	entries, err := os.ReadDir(modelDir)
	if err != nil {
		return nil, fmt.Errorf("listing model versions: %w", err)
	}
	return VersionsIn(modelDir, entries), nil
}

// NextVersion is 1 + the highest version in modelDir, 1 when there is none
// or the folder does not exist yet.
func NextVersion(modelDir string) (int64, error) {
	vs, err := Versions(modelDir)
	if errors.Is(err, os.ErrNotExist) {
		return 1, nil
	}
	if err != nil {
		return 0, err
	}
	if len(vs) == 0 {
		return 1, nil
	}
	return vs[len(vs)-1] + 1, nil
}
