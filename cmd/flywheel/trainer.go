package main

import (
	"context"
	"errors"
	"io"
)

// runTrainer is a placeholder until its issue lands; it reports that plainly.
func runTrainer(_ context.Context, _ []string, _, _ io.Writer) error {
	return errors.New("not built yet")
}
