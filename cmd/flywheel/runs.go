package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/flywheel-ml/flywheel/tracker"
	"github.com/flywheel-ml/flywheel/tracker/fallback"
	"github.com/flywheel-ml/flywheel/tracker/localstore"
)

const runsUsage = `Usage: flywheel runs <list|show|compare|sync> [flags] [RUN...]

  list [--experiment NAME] [--filter EXPR] [--max N]   runs, newest first
  show RUN                                            one run: info, params, metrics, tags, datasets, artifacts
  compare RUN RUN...                                  params and metrics side by side; '*' marks differences
  sync [--all]                                        replay runs logged while MLflow was unreachable
                                                      (--all: also runs recorded without a tracking URI)

With --tracking-uri (or MLFLOW_TRACKING_URI) the commands read MLflow, otherwise the local store
--tracking-db (a SQLite file or a PostgreSQL URL). Filters use MLflow's syntax, e.g. "metrics.test_mae < 1.5 and params.algorithm = 'gbdt'".
Flags come before the run ids; see flywheel runs <command> --help.`

// runRuns lists, shows, compares and syncs tracked runs.
func runRuns(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprintln(stdout, runsUsage)
		if len(args) == 0 {
			return usageError{errors.New("a subcommand is required")}
		}
		return errHelp
	}
	sub, args := args[0], args[1:]
	var tf trackingFlags
	var experiment, filter string
	var max int
	var all bool
	var fs *flagSet
	switch sub {
	case "list":
		fs = newFlagSet("runs list", "List tracked runs, newest first.")
		fs.String(&experiment, "experiment", "FLYWHEEL_RUNS_EXPERIMENT", "", "only runs of this experiment")
		fs.String(&filter, "filter", "FLYWHEEL_RUNS_FILTER", "", `MLflow search filter, e.g. "metrics.test_mae < 1.5"`)
		fs.Int(&max, "max", "FLYWHEEL_RUNS_MAX", 50, "at most this many runs (0 = all)")
	case "show":
		fs = newFlagSet("runs show", "Show one run: RUN is an MLflow or local run id.")
	case "compare":
		fs = newFlagSet("runs compare", "Compare the params and metrics of two or more runs side by side.")
	case "sync":
		fs = newFlagSet("runs sync", "Replay runs recorded in SQLite while MLflow was unreachable (needs --tracking-uri).")
		fs.Bool(&all, "all", "FLYWHEEL_RUNS_SYNC_ALL", false, "also re-check mirrored and synced runs, and upload runs recorded without a tracking URI")
	default:
		return usageError{fmt.Errorf("unknown runs subcommand %q (list, show, compare, sync)", sub)}
	}
	tf.register(fs)
	if err := fs.Parse(args, stdout); err != nil {
		return err
	}
	pos := fs.Args()
	switch {
	case sub == "show" && len(pos) != 1:
		return usageError{errors.New("runs show takes one RUN")}
	case sub == "compare" && len(pos) < 2:
		return usageError{errors.New("runs compare takes two or more RUNs")}
	case (sub == "list" || sub == "sync") && len(pos) != 0:
		return usageError{fmt.Errorf("unexpected arguments %q (flags go before run ids)", pos)}
	case sub == "sync" && tf.uri == "":
		return usageError{errors.New("runs sync needs --tracking-uri or MLFLOW_TRACKING_URI")}
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	tr, err := tf.open(ctx, log)
	if err != nil {
		return err
	}
	defer tr.Close()
	// Reads go to MLflow when configured; the local store answers for runs
	// MLflow does not have (yet).
	var reader tracker.Tracker = tr.local
	if tr.remote != nil {
		reader = tr.remote
	}
	switch sub {
	case "list":
		err := runsList(ctx, stdout, tr, reader, experiment, filter, max)
		if errors.Is(err, tracker.ErrUnavailable) && tr.remote != nil {
			fmt.Fprintf(stderr, "MLflow unreachable (%v); listing the local store %s instead\n", err, tr.local.Name())
			return runsList(ctx, stdout, tr, tr.local, experiment, filter, max)
		}
		return err
	case "show":
		r, err := findRun(ctx, tr, reader, pos[0])
		if err != nil {
			return err
		}
		return runsShow(ctx, stdout, tr, reader, r)
	case "compare":
		var runs []tracker.Run
		for _, id := range pos {
			r, err := findRun(ctx, tr, reader, id)
			if err != nil {
				return err
			}
			runs = append(runs, r)
		}
		return runsCompare(stdout, runs)
	default:
		rep, err := tr.fb.Sync(ctx, fallback.SyncOptions{All: all})
		fmt.Fprintf(stdout, "runs: %d checked, %d complete in MLflow, %d created\nsent: %d params, %d tags, %d metric values, %d datasets, %d artifacts, %d model versions, %d aliases\n",
			rep.Runs, rep.Synced, rep.Created, rep.Params, rep.Tags, rep.Metrics, rep.Datasets, rep.Artifacts, rep.ModelVersions, rep.Aliases)
		if rep.Busy > 0 {
			fmt.Fprintf(stdout, "%d run(s) left to the sync of another process replaying them\n", rep.Busy)
		}
		return err
	}
}

// findRun finds a run by MLflow id, by local id (a replayed run carries it as
// a tag) or, when MLflow is unreachable, in the local store.
func findRun(ctx context.Context, tr *tracking, reader tracker.Tracker, id string) (tracker.Run, error) {
	r, err := lookupRun(ctx, tr, reader, id)
	if errors.Is(err, tracker.ErrNotFound) {
		return r, fmt.Errorf("run %q not found (`flywheel runs list` shows the tracked runs): %w", id, err)
	}
	return r, err
}

func lookupRun(ctx context.Context, tr *tracking, reader tracker.Tracker, id string) (tracker.Run, error) {
	if tr.remote == nil {
		if local, err := tr.local.Outbox().Resolve(ctx, id); err == nil {
			id = local // an MLflow id of a run this store replayed
		}
	}
	r, err := reader.GetRun(ctx, id)
	if err == nil || tr.remote == nil {
		return r, err
	}
	if errors.Is(err, tracker.ErrNotFound) || errors.Is(err, tracker.ErrInvalid) {
		runs, serr := tr.remote.SearchRuns(ctx, tracker.SearchQuery{Filter: fmt.Sprintf("tags.`%s` = '%s'", tracker.TagLocalRunID, id), MaxResults: 1})
		if serr == nil && len(runs) == 1 {
			return runs[0], nil
		}
	}
	if local, lerr := tr.local.Outbox().Resolve(ctx, id); lerr == nil {
		id = local
	}
	if lr, lerr := tr.local.GetRun(ctx, id); lerr == nil {
		return lr, nil
	}
	return r, err
}

func runsList(ctx context.Context, w io.Writer, tr *tracking, reader tracker.Tracker, experiment, filter string, max int) error {
	q := tracker.SearchQuery{Filter: filter, MaxResults: max}
	if experiment != "" {
		exp, err := reader.GetExperimentByName(ctx, experiment)
		if err != nil {
			return fmt.Errorf("experiment %q: %w", experiment, err)
		}
		q.ExperimentIDs = []string{exp.ID}
	}
	runs, err := reader.SearchRuns(ctx, q)
	if err != nil {
		return err
	}
	sync := map[string]string{}
	if tr.remote == nil {
		lrs, err := tr.local.SearchLocalRuns(ctx, q)
		if err != nil {
			return err
		}
		for _, r := range lrs {
			ob, err := tr.local.Outbox().Run(ctx, r.Info.ID)
			if err != nil {
				return err
			}
			sync[r.Info.ID] = ob.State
		}
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	header := "RUN ID\tNAME\tSTATUS\tSTARTED\tDURATION\tMETRICS"
	if tr.remote == nil {
		header += "\tSYNC"
	}
	fmt.Fprintln(tw, header)
	for _, r := range runs {
		line := fmt.Sprintf("%s\t%s\t%s\t%s\t%s\t%s", r.Info.ID, r.Info.Name, r.Info.Status, runsTime(r.Info.StartTime), runsDuration(r.Info), metricSummary(r.Metrics, 3))
		if tr.remote == nil {
			line += "\t" + sync[r.Info.ID]
		}
		fmt.Fprintln(tw, line)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(runs) == 0 {
		fmt.Fprintln(w, "(no runs)")
	}
	if pending, _ := tr.local.Outbox().RunsInState(ctx, localstore.StateUnsynced); len(pending) > 0 {
		fmt.Fprintf(w, "\n%d run(s) in %s are complete only locally (MLflow was unreachable, or rejected a write: `flywheel runs sync` replays them and reports MLflow's answer)\n", len(pending), tr.local.Name())
	}
	return nil
}

func runsShow(ctx context.Context, w io.Writer, tr *tracking, reader tracker.Tracker, r tracker.Run) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "run\t%s\n", r.Info.ID)
	fmt.Fprintf(tw, "name\t%s\n", r.Info.Name)
	fmt.Fprintf(tw, "experiment\t%s\n", r.Info.ExperimentID)
	fmt.Fprintf(tw, "status\t%s\n", r.Info.Status)
	fmt.Fprintf(tw, "started\t%s\n", runsTime(r.Info.StartTime))
	fmt.Fprintf(tw, "duration\t%s\n", runsDuration(r.Info))
	fmt.Fprintf(tw, "artifacts\t%s\n", r.Info.ArtifactURI)
	if lid := r.Tags[tracker.TagLocalRunID]; lid != "" && lid != r.Info.ID {
		fmt.Fprintf(tw, "local run\t%s\n", lid)
	}
	if ob, err := tr.local.Outbox().Run(ctx, r.Info.ID); err == nil {
		fmt.Fprintf(tw, "sync\t%s\n", ob.State)
	}
	tw.Flush()
	section := func(title string, rows [][2]string) {
		if len(rows) == 0 {
			return
		}
		fmt.Fprintf(w, "\n%s\n", title)
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		for _, row := range rows {
			fmt.Fprintf(tw, "  %s\t%s\n", row[0], row[1])
		}
		tw.Flush()
	}
	var rows [][2]string
	for _, k := range runsKeys(r.Params) {
		rows = append(rows, [2]string{k, r.Params[k]})
	}
	section("params", rows)
	rows = nil
	for _, k := range runsKeys(r.Metrics) {
		m := r.Metrics[k]
		rows = append(rows, [2]string{k, fmt.Sprintf("%s (step %d)", runsFloat(m.Value), m.Step)})
	}
	section("metrics (latest)", rows)
	rows = nil
	for _, k := range runsKeys(r.Tags) {
		rows = append(rows, [2]string{k, r.Tags[k]})
	}
	section("tags", rows)
	rows = nil
	for _, d := range r.Datasets {
		rows = append(rows, [2]string{d.Name, strings.TrimSpace(d.Digest + " " + d.Context + " " + d.Source)})
	}
	section("datasets", rows)
	rows = nil
	var walk func(dir string, depth int)
	walk = func(dir string, depth int) {
		fs, err := reader.ListArtifacts(ctx, r.Info.ID, dir)
		if err != nil || depth > 8 {
			return
		}
		for _, f := range fs {
			if f.IsDir {
				walk(f.Path, depth+1)
				continue
			}
			rows = append(rows, [2]string{f.Path, fmt.Sprintf("%d bytes", f.Size)})
		}
	}
	walk("", 0)
	section("artifact files", rows)
	return nil
}

// runsCompare prints params and metrics side by side; '*' marks rows whose
// values differ between the runs.
func runsCompare(w io.Writer, runs []tracker.Run) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	names, ids := "run", ""
	for _, r := range runs {
		names += "\t" + r.Info.Name
		ids += "\t" + r.Info.ID
	}
	fmt.Fprintln(tw, names)
	fmt.Fprintln(tw, ids)
	keys := map[string]bool{}
	for _, r := range runs {
		for k := range r.Params {
			keys[k] = true
		}
	}
	fmt.Fprintln(tw, "params"+strings.Repeat("\t", len(runs)))
	for _, k := range runsKeys(keys) {
		vals := make([]string, len(runs))
		for i, r := range runs {
			v, ok := r.Params[k]
			if !ok {
				v = "-"
			}
			vals[i] = v
		}
		fmt.Fprintln(tw, compareRow(k, vals))
	}
	keys = map[string]bool{}
	for _, r := range runs {
		for k := range r.Metrics {
			keys[k] = true
		}
	}
	fmt.Fprintln(tw, "metrics"+strings.Repeat("\t", len(runs)))
	for _, k := range runsKeys(keys) {
		vals := make([]string, len(runs))
		for i, r := range runs {
			m, ok := r.Metrics[k]
			vals[i] = "-"
			if ok {
				vals[i] = runsFloat(m.Value)
			}
		}
		fmt.Fprintln(tw, compareRow(k, vals))
	}
	return tw.Flush()
}

func compareRow(key string, vals []string) string {
	mark := " "
	for _, v := range vals[1:] {
		if v != vals[0] {
			mark = "*"
		}
	}
	return mark + " " + key + "\t" + strings.Join(vals, "\t")
}

func runsKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

func metricSummary(ms map[string]tracker.Metric, n int) string {
	keys := runsKeys(ms)
	// Final test metrics first, then the rest.
	sort.SliceStable(keys, func(i, j int) bool {
		return strings.HasPrefix(keys[i], "test_") && !strings.HasPrefix(keys[j], "test_")
	})
	var parts []string
	for _, k := range keys {
		if len(parts) == n {
			parts = append(parts, "…")
			break
		}
		parts = append(parts, k+"="+runsFloat(ms[k].Value))
	}
	return strings.Join(parts, " ")
}

func runsFloat(v float64) string {
	switch {
	case math.IsNaN(v):
		return "NaN"
	case math.IsInf(v, 1):
		return "+Inf"
	case math.IsInf(v, -1):
		return "-Inf"
	}
	return strconv.FormatFloat(v, 'g', 6, 64)
}

func runsTime(ms int64) string {
	if ms == 0 {
		return "-"
	}
	return time.UnixMilli(ms).UTC().Format("2006-01-02 15:04:05Z")
}

func runsDuration(i tracker.RunInfo) string {
	if i.EndTime == 0 || i.StartTime == 0 {
		return "-"
	}
	return (time.Duration(i.EndTime-i.StartTime) * time.Millisecond).Round(time.Millisecond).String()
}
