package api_test

import "github.com/flywheel-ml/flywheel/server/ort"

type ortOpts = ort.SessionOptions
