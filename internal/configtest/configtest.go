// Package configtest runs the table test every configuration gets: each case
// edits a valid configuration and names what the validation error must say.
package configtest

import (
	"strings"
	"testing"
)

// Case is one edit of a valid configuration.
type Case[C any] struct {
	Name string
	Edit func(*C)
	Want string // a substring of the error; "" when the edited config is valid
}

// Check runs the cases as subtests, each on a fresh valid() and checked with
// validate (usually a method expression such as Config.Validate).
func Check[C any](t *testing.T, valid func() C, validate func(C) error, cases []Case[C]) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.Name, func(t *testing.T) {
			c := valid()
			tc.Edit(&c)
			err := validate(c)
			switch {
			case tc.Want == "" && err != nil:
				t.Fatalf("Validate() = %v, want no error", err)
			case tc.Want != "" && (err == nil || !strings.Contains(err.Error(), tc.Want)):
				t.Fatalf("Validate() = %v, want an error mentioning %q", err, tc.Want)
			}
		})
	}
}
