package main

import (
	"context"
	"errors"
	"io"
)

// runTrain is a placeholder until its issue lands; it reports that plainly.
func runTrain(_ context.Context, _ []string, _, _ io.Writer) error {
	return errors.New("not built yet")
}
