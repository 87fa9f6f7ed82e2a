package validate

import (
	"errors"
	"io"
	"testing"
)

func TestErrors(t *testing.T) {
	nested := errors.New("inner: size 0 must be ≥ 1")
	for _, tc := range []struct {
		name   string
		check  func(*Errors)
		prefix string
		want   string // "" = nil error
	}{
		{name: "none failed", check: func(e *Errors) { e.If(false, "never"); e.Add("x", nil) }, prefix: "m", want: ""},
		{name: "one", check: func(e *Errors) { e.If(true, "n %d must be ≥ 1", 0) }, prefix: "m", want: "m: n 0 must be ≥ 1"},
		{name: "all, in order", check: func(e *Errors) {
			e.If(true, "a %v", 1)
			e.If(false, "b")
			e.Add("", nested)
			e.Add("drift", nested)
			e.If(true, "c %q", "x")
		}, prefix: "m", want: "m: a 1\ninner: size 0 must be ≥ 1\ndrift: inner: size 0 must be ≥ 1\nc \"x\""},
		{name: "no prefix", check: func(e *Errors) { e.If(true, "a") }, want: "a"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var e Errors
			tc.check(&e)
			err := e.Err(tc.prefix)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("Err() = %v, want nil", err)
			case tc.want != "" && (err == nil || err.Error() != tc.want):
				t.Fatalf("Err() = %v, want %q", err, tc.want)
			}
		})
	}
	// Recorded errors stay inspectable.
	var e Errors
	e.Add("r", io.EOF)
	if err := e.Err("m"); !errors.Is(err, io.EOF) {
		t.Errorf("Err() = %v, want it to wrap io.EOF", err)
	}
}
