// Package validate collects the errors of a configuration's Validate method:
// each failed check names the parameter and its value, and all of them come
// back as one error, so a user fixes a config in one pass.
package validate

import (
	"errors"
	"fmt"
)

// Errors collects failed checks; the zero value is ready to use.
type Errors struct {
	errs []error
}

// If records the error formatted from format and args when bad is true.
func (e *Errors) If(bad bool, format string, args ...any) {
	if bad {
		e.errs = append(e.errs, fmt.Errorf(format, args...))
	}
}

// Add records err (a nested configuration's Validate), led by "name: "
// unless name is empty, when err is not nil.
func (e *Errors) Add(name string, err error) {
	switch {
	case err == nil:
	case name == "":
		e.errs = append(e.errs, err)
	default:
		e.errs = append(e.errs, fmt.Errorf("%s: %w", name, err))
	}
}

// Err returns nil when every check passed, else the recorded errors joined
// (one a line), led by "prefix: " unless prefix is empty.
func (e *Errors) Err(prefix string) error {
	err := errors.Join(e.errs...)
	if err == nil || prefix == "" {
		return err
	}
	return fmt.Errorf("%s: %w", prefix, err)
}
