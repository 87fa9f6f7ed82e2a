package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/flywheel-ml/flywheel/train/replay"
)

func runReplay(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg := replay.DefaultConfig()
	var data, target, from, until, featureSet string
	var asJSON bool
	fs := newFlagSet("replay", "Replay dataset rows from a start date as Open Inference Protocol requests to serve (id replay-<date>,\nparameters {\"date\": ...}) and post each day's true value to POST /v1/feedback after the label delay.")
	fs.String(&cfg.ServeURL, "serve-url", "", "http://127.0.0.1:8080", "serve's base URL")
	fs.String(&cfg.Model, "model", "", cfg.Model, "model to call")
	fs.String(&cfg.InputName, "input-name", "", "", "OIP input name (default: the first input of the model metadata)")
	fs.String(&data, "data", "", "data/chicago/chicago.csv", "dataset CSV")
	fs.String(&target, "target", "", "ridership", "target column, posted as feedback")
	fs.String(&featureSet, "features", "", featuresRidership, "features sent: ridership (the numeric columns, dow, holiday: train/features) or columns (every numeric column, in name order)")
	fs.String(&from, "from", "", "2013-01-01", "first day to replay (YYYY-MM-DD)")
	fs.String(&until, "until", "", "", "last day to replay (YYYY-MM-DD; default: the end of the data)")
	fs.Float(&cfg.DaysPerSecond, "speed", "", cfg.DaysPerSecond, "replay speed in days per second")
	fs.Int(&cfg.LabelDelay, "label-delay", "", cfg.LabelDelay, "days after a prediction that its true value is posted")
	fs.Int(&cfg.MaxRequests, "max-requests", "", 0, "stop after this many requests (0 = no limit)")
	fs.Duration(&cfg.Timeout, "timeout", "", cfg.Timeout, "per-request timeout")
	fs.Duration(&cfg.ProgressEvery, "progress", "", cfg.ProgressEvery, "progress line interval (0 = only the summary)")
	fs.Bool(&asJSON, "json", "", false, "print the final counts as JSON on stdout")
	if err := fs.Parse(args, stdout); err != nil {
		return err
	}
	if err := checkFeatureSet(featureSet); err != nil {
		return err
	}
	var err error
	if cfg.From, err = time.Parse(replay.DateLayout, from); err != nil {
		return usageError{fmt.Errorf("--from %q: want YYYY-MM-DD", from)}
	}
	if until != "" {
		if cfg.Until, err = time.Parse(replay.DateLayout, until); err != nil {
			return usageError{fmt.Errorf("--until %q: want YYYY-MM-DD", until)}
		}
	}
	if err := cfg.Validate(); err != nil {
		return usageError{err}
	}
	rows, err := replay.ReadCSV(data, "date", target)
	if err != nil {
		return err
	}
	r, err := replay.New(cfg, rows, replayFeatures(featureSet, rows), stderr)
	if err != nil {
		return err
	}
	st, err := r.Run(ctx)
	if err != nil {
		return err
	}
	if asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(st); err != nil {
			return err
		}
	} else {
		fmt.Fprintln(stdout, st.Line())
	}
	if st.Failed > 0 || st.LabelsFailed > 0 {
		return fmt.Errorf("%d of %d requests and %d labels failed (first: %v)", st.Failed, st.Sent, st.LabelsFailed, st.FirstFailures)
	}
	return nil
}
