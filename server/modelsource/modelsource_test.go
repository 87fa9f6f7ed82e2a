package modelsource

import "testing"

func TestParseRef(t *testing.T) {
	tests := []struct {
		in   string
		want Ref
		ok   bool
	}{
		{"models:/ridership@champion", Ref{Name: "ridership", Alias: "champion"}, true},
		{"models:/ridership/7", Ref{Name: "ridership", Version: "7"}, true},
		{"models:/my.model-2@canary_1", Ref{Name: "my.model-2", Alias: "canary_1"}, true},
		{"models:/ridership", Ref{}, false},
		{"models:/ridership/0", Ref{}, false},
		{"models:/ridership/07", Ref{}, false},
		{"models:/../etc@x", Ref{}, false},
		{"models:/ridership@", Ref{}, false},
		{"models:/ridership@a b", Ref{}, false},
		{"runs:/abc/model", Ref{}, false},
	}
	for _, tc := range tests {
		got, err := ParseRef(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("ParseRef(%q) = %+v, %v; want %+v ok=%v", tc.in, got, err, tc.want, tc.ok)
		}
		if tc.ok && got.String() != tc.in {
			t.Errorf("%+v.String() = %q, want %q", got, got.String(), tc.in)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	twice := Config{Refs: []Ref{{Name: "a", Alias: "x"}, {Name: "a", Version: "1"}}, Dir: "d"}
	if err := twice.Validate(); err == nil {
		t.Error("a model referenced twice: no error")
	}
	ok := Config{Refs: []Ref{{Name: "a", Alias: "x"}}, Dir: "d"}
	if err := ok.Validate(); err != nil || ok.Interval == 0 || ok.MaxModelBytes == 0 {
		t.Errorf("defaults: %+v %v", ok, err)
	}
	if err := (&Config{Dir: "d"}).Validate(); err == nil {
		t.Error("no references: no error")
	}
}
