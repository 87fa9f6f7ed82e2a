package cmem

import "testing"

func TestLimitArenas(t *testing.T) {
	tests := []struct {
		name string
		env  string // "" = unset
		n    int
	}{
		{"sets the limit", "", DefaultArenas},
		{"leaves an explicit MALLOC_ARENA_MAX alone", "4", DefaultArenas},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.env != "" {
				t.Setenv("MALLOC_ARENA_MAX", tt.env)
			}
			if err := LimitArenas(tt.n); err != nil {
				t.Fatal(err)
			}
		})
	}
}
