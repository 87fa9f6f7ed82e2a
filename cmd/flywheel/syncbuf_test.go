package main

import "github.com/flywheel-ml/flywheel/internal/harness"

// syncBuffer collects a command's log output for the tests.
type syncBuffer = harness.SyncBuffer
