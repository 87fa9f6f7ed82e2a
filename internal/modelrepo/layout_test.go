package modelrepo

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"testing"
)

func TestParseVersion(t *testing.T) {
	cases := []struct {
		in   string
		want int64
	}{
		{"1", 1}, {"42", 42}, {"9223372036854775807", 1<<63 - 1},
		{"0", 0}, {"007", 0}, {"+3", 0}, {"-1", 0}, {"", 0}, {"1e3", 0}, {" 1", 0}, {"9223372036854775808", 0}, {".tmp-1", 0},
	}
	for _, c := range cases {
		got, err := ParseVersion(c.in)
		if c.want == 0 {
			if err == nil || !errors.Is(err, ErrBadVersion) {
				t.Errorf("ParseVersion(%q) = %d, %v; want ErrBadVersion", c.in, got, err)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("ParseVersion(%q) = %d, %v; want %d", c.in, got, err, c.want)
		}
	}
}

func TestVersions(t *testing.T) {
	dir := t.TempDir()
	for _, d := range []string{"1", "2", "10", "9", "007", "+3", "0", ".tmp-123", "x"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	os.WriteFile(filepath.Join(dir, "11"), nil, 0o644) // a file, not a version
	os.Symlink(filepath.Join(dir, "2"), filepath.Join(dir, "12"))
	got, err := Versions(dir)
	if err != nil {
		t.Fatal(err)
	}
	if want := []int64{1, 2, 9, 10, 12}; !slices.Equal(got, want) {
		t.Fatalf("Versions %v, want %v", got, want)
	}
	if n, err := NextVersion(dir); n != 13 || err != nil {
		t.Fatalf("NextVersion %d, %v; want 13", n, err)
	}
	if n, err := NextVersion(filepath.Join(dir, "missing")); n != 1 || err != nil {
		t.Fatalf("NextVersion of a missing model %d, %v; want 1", n, err)
	}
	if _, err := Versions(filepath.Join(dir, "missing")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Versions of a missing folder: %v", err)
	}
}

func writeOne(name, content string) WriteFunc {
	return func(dir string, v int64) error {
		return os.WriteFile(filepath.Join(dir, name), []byte(content+strconv.FormatInt(v, 10)), 0o644)
	}
}

func TestPublish(t *testing.T) {
	modelDir := filepath.Join(t.TempDir(), "m")
	v, err := Publish(modelDir, 0, writeOne(ModelFile, "v"))
	if err != nil || v != 1 {
		t.Fatalf("first publish: %d, %v", v, err)
	}
	if b, _ := os.ReadFile(filepath.Join(VersionDir(modelDir, 1), ModelFile)); string(b) != "v1" {
		t.Fatalf("content %q", b)
	}
	if v, err := Publish(modelDir, 5, writeOne(ModelFile, "v")); err != nil || v != 5 {
		t.Fatalf("publish version 5: %d, %v", v, err)
	}
	if _, err := Publish(modelDir, 5, writeOne(ModelFile, "v")); !errors.Is(err, ErrVersionExists) {
		t.Fatalf("publishing version 5 again: %v", err)
	}
	if _, err := Publish(modelDir, 0, func(string, int64) error { return errors.New("disk full") }); err == nil {
		t.Fatal("a failed write published")
	}
	// Concurrent publishers of the next version each get their own.
	var wg sync.WaitGroup
	got := make([]int64, 4)
	for i := range got {
		wg.Add(1)
		go func() {
			defer wg.Done()
			v, err := Publish(modelDir, 0, writeOne(CardFile, "c"))
			if err != nil {
				t.Error(err)
			}
			got[i] = v
		}()
	}
	wg.Wait()
	slices.Sort(got)
	if want := []int64{6, 7, 8, 9}; !slices.Equal(got, want) {
		t.Fatalf("concurrent publishes got versions %v, want %v", got, want)
	}
	for _, v := range got {
		if b, _ := os.ReadFile(filepath.Join(VersionDir(modelDir, v), CardFile)); string(b) != "c"+strconv.FormatInt(v, 10) {
			t.Errorf("version %d holds %q: written for another version", v, b)
		}
	}
	entries, _ := os.ReadDir(modelDir)
	for _, e := range entries {
		if _, err := ParseVersion(e.Name()); err != nil {
			t.Errorf("left behind: %s", e.Name())
		}
	}
}
