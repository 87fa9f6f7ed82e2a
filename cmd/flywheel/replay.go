package main

import (
	"context"
	"errors"
	"io"
)

// runReplay is a placeholder until its issue lands; it reports that plainly.
func runReplay(_ context.Context, _ []string, _, _ io.Writer) error {
	return errors.New("not built yet")
}
