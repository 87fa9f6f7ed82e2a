package ort

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestFindLibraryErrors(t *testing.T) {
	dir := t.TempDir()
	cases := []struct {
		name     string
		explicit string
	}{
		{"missing file", filepath.Join(dir, "nope.so")},
		{"directory", dir},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := FindLibrary(c.explicit)
			if !errors.Is(err, ErrLibraryNotFound) {
				t.Fatalf("want ErrLibraryNotFound, got %v", err)
			}
			if !strings.Contains(err.Error(), "make deps") {
				t.Errorf("error does not say how to fix it: %v", err)
			}
		})
	}
}

func TestInitWrongLibrary(t *testing.T) {
	bad := filepath.Join(t.TempDir(), "libonnxruntime.so.1")
	if err := os.WriteFile(bad, []byte("not a library"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := Init(bad)
	if err == nil || !strings.Contains(err.Error(), "make deps") {
		t.Fatalf("want an error naming the fix, got %v", err)
	}
}

func TestSetupRealLibrary(t *testing.T) {
	_, v, err := Setup("")
	if err != nil {
		t.Fatalf("Setup: %v", err)
	}
	if !strings.HasPrefix(v, RequiredVersion) {
		t.Fatalf("version %q", v)
	}
	// a second call is a no-op
	if _, err := Init("/does/not/matter"); err != nil {
		t.Fatalf("second Init: %v", err)
	}
}
