package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/user"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/flywheel-ml/flywheel/internal/modelrepo"
	"github.com/flywheel-ml/flywheel/server/ort"
	"github.com/flywheel-ml/flywheel/tracker"
	"github.com/flywheel-ml/flywheel/train"
	"github.com/flywheel-ml/flywheel/train/dataset"
	"github.com/flywheel-ml/flywheel/train/features"
	"github.com/flywheel-ml/flywheel/train/pipeline"
)

// stringList is a repeatable string flag.
type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, " ") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

const trainSummary = `Train, evaluate and export a model, then publish it as the next version in the model
repository (models/<name>/<version>/model.onnx + model.json, written atomically).

--algorithm takes one of ridge, mlp, gbdt, or a comma-separated list. Selection never looks at
the test range: a rolling-origin backtest inside the training range (--backtest-folds one-year
folds, each fitted on everything before it) chooses the algorithm, GBDT's tree count and the
prediction interval; the test range is only reported, beside the seasonal-naive (same weekday 364
days earlier) and 14-day-lag baselines. A model that does not beat the seasonal naive on the
test range is not published. Hyper-parameters come from the defaults, then --params (YAML with
ridge:, mlp:, gbdt: sections), then each --set key=value.`

func runTrain(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var (
		dataPath, name, algos, models, paramsFile, gitCommit string
		weather, ratioTo                                     string
		folds, btSeeds                                       int
		importance                                           bool
		trainFrom, trainUntil, testFrom, testUntil           string
		experiment, experimentID, alias, ortLib              string
		seed                                                 int64
		margin                                               float64
		publish, quiet, track, force                         bool
		sets                                                 stringList
		tf                                                   trackingFlags
	)
	fs := newFlagSet("train", trainSummary)
	fs.String(&dataPath, "data", "", "data/chicago/chicago.csv", "dataset CSV file")
	fs.String(&name, "model-name", "", "ridership", "model name in the repository")
	fs.String(&algos, "algorithm", "", train.GBDT, "ridge, mlp or gbdt (or a comma-separated list to compare)")
	fs.String(&weather, "weather", "", features.WeatherObserved, "observed: the day's observed weather is a feature (a leak for a real 14-day-ahead forecast, ~0.1 MAE); none: only what is known 14 days ahead")
	fs.String(&ratioTo, "ratio-to", "", features.Level14Name, "fit the target as a ratio to this feature, multiplied back in the graph (trees then follow a level above any they trained on); none: fit the target itself")
	fs.Int(&folds, "backtest-folds", "", 3, "one-year rolling-origin folds at the end of the training range that choose the algorithm, GBDT's trees and the interval (0: no backtest; one algorithm only)")
	fs.Int(&btSeeds, "backtest-seeds", "", 1, "seeds each backtest fold is fitted with (--seed, --seed+1, …): metrics are mean ± sd over folds and seeds")
	fs.Bool(&importance, "importance", "", true, "report permutation feature importance on the test range")
	fs.String(&trainFrom, "train-from", "", "2001-01-22", "first training day (YYYY-MM-DD, empty = open; days without a year of lag history are left out)")
	fs.String(&trainUntil, "train-until", "", "2011-12-31", "last training day")
	fs.String(&testFrom, "test-from", "", "2012-01-01", "first test day")
	fs.String(&testUntil, "test-until", "", "2012-12-31", "last test day")
	fs.String(&paramsFile, "params", "", "", "YAML file of hyper-parameters (sections ridge, mlp, gbdt)")
	fs.fs.Var(&sets, "set", "one hyper-parameter of the chosen algorithm, key=value (repeatable), e.g. learning_rate=0.05")
	fs.add("set", "")
	fs.Int64(&seed, "seed", "", 1, "random seed (same data, parameters and seed give a byte-identical model.onnx)")
	fs.String(&models, "models", "", "models", "model repository directory")
	fs.Float(&margin, "threshold-margin", "", train.DefaultThresholdMargin, "card thresholds = margin × test MAE / RMSE")
	fs.String(&gitCommit, "git-commit", "", "", "commit recorded in the card (default: `git rev-parse HEAD`, when available)")
	fs.Bool(&publish, "publish", "", true, "write the model into the repository (false: evaluate only)")
	fs.Bool(&force, "force", "", false, "publish even when the newest version in the repository (the one serve loads) has a lower test MAE on the same test days")
	fs.String(&ortLib, "ort-lib", ort.EnvVar, "", "path to libonnxruntime.so.1, to score the newest version when its card was tested on other days (default: lib/)")
	fs.Bool(&quiet, "quiet", "", false, "no progress lines")
	fs.Bool(&track, "track", "", true, "record every fit as a run in the experiment tracker (false: no tracking, no run id in the card)")
	fs.String(&experiment, "experiment", "MLFLOW_EXPERIMENT_NAME", "", "tracker experiment by name (default: the model name)")
	fs.String(&experimentID, "experiment-id", "MLFLOW_EXPERIMENT_ID", "", "tracker experiment by id (an MLflow experiment id with --tracking-uri); --experiment wins when both are set")
	fs.String(&alias, "alias", "FLYWHEEL_TRAIN_ALIAS", trainAlias, "registry alias pointed at the published version (empty: register without an alias)")
	tf.register(fs)
	if err := fs.Parse(args, stdout); err != nil {
		return err
	}
	if len(fs.Args()) > 0 {
		return usageError{fmt.Errorf("unexpected arguments %q", fs.Args())}
	}

	// Check everything cheap before touching the data.
	var list []string
	for _, a := range strings.Split(algos, ",") {
		if a = strings.TrimSpace(a); a != "" {
			list = append(list, a)
		}
	}
	if len(list) == 0 {
		return usageError{errors.New("--algorithm is empty")}
	}
	params := train.DefaultParams()
	if paramsFile != "" {
		b, err := os.ReadFile(paramsFile)
		if err != nil {
			return fmt.Errorf("--params: %w", err)
		}
		if err := train.DecodeParams(&params, b); err != nil {
			return fmt.Errorf("--params %s: %w", paramsFile, err)
		}
	}
	var cfgs []train.Config
	for _, a := range list {
		cfg := train.DefaultConfig()
		cfg.Name, cfg.Algorithm, cfg.Params, cfg.Seed, cfg.ThresholdMargin = name, a, params, seed, margin
		cfg.RatioTo = ratioTo
		if ratioTo == "none" {
			cfg.RatioTo = ""
		}
		for _, kv := range sets {
			if err := cfg.Params.Set(a, kv); err != nil {
				return usageError{fmt.Errorf("--set: %w", err)}
			}
		}
		if err := cfg.Validate(); err != nil {
			return usageError{err}
		}
		cfgs = append(cfgs, cfg)
	}
	if weather != features.WeatherObserved && weather != features.WeatherNone {
		return usageError{fmt.Errorf("--weather %q is not %s or %s", weather, features.WeatherObserved, features.WeatherNone)}
	}
	if folds < 0 || btSeeds < 1 {
		return usageError{fmt.Errorf("--backtest-folds %d must be ≥ 0 and --backtest-seeds %d ≥ 1", folds, btSeeds)}
	}
	if folds == 0 && len(cfgs) > 1 {
		return usageError{errors.New("comparing algorithms needs --backtest-folds ≥ 1 (the test range never chooses)")}
	}
	var ranges [4]time.Time
	for i, s := range []struct{ flag, v string }{{"train-from", trainFrom}, {"train-until", trainUntil}, {"test-from", testFrom}, {"test-until", testUntil}} {
		t, err := dataset.ParseDate(s.v)
		if err != nil {
			return usageError{fmt.Errorf("--%s: %w", s.flag, err)}
		}
		ranges[i] = t
	}

	data, err := train.LoadData(dataPath, weather, train.Range{From: ranges[0], Until: ranges[1]}, train.Range{From: ranges[2], Until: ranges[3]})
	if err != nil {
		return err
	}
	if gitCommit == "" {
		gitCommit = headCommit(ctx)
	}
	fmt.Fprintf(stdout, "dataset %s: %d training rows (%s), %d test rows, digest %s\n",
		data.Source, len(data.Train), train.Range{From: data.Train[0].Date, Until: data.Train[len(data.Train)-1].Date},
		len(data.Test), data.TrainDigest)
	fmt.Fprintf(stdout, "features: %d, weather %s (card: inputs[0].features)\n", len(data.FeatureNames), weather)

	// Selection: a rolling-origin backtest inside the training range.
	var bts []*train.BacktestResult
	best := 0
	if folds > 0 {
		seeds := make([]int64, btSeeds)
		for i := range seeds {
			seeds[i] = seed + int64(i)
		}
		fmt.Fprintf(stdout, "backtest: %d folds of 364 days ending %s, each fitted on every training day before it; seeds %v\n",
			folds, data.Train[len(data.Train)-1].Date.Format(features.DateLayout), seeds)
		tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "algorithm\tMAE mean\t± sd\tbias\tper fold\ttrees\t")
		for i := range cfgs {
			cfgs[i].Data = data
			bt, err := train.RunBacktest(ctx, cfgs[i], train.Backtest{Folds: folds, FoldDays: 364, Seeds: seeds, Level: 0.9})
			if err != nil {
				return err
			}
			cfgs[i] = bt.Tune(cfgs[i])
			bts = append(bts, bt)
			var per []string
			for _, f := range bt.Folds {
				per = append(per, fmt.Sprintf("%.3f", f.MAE))
			}
			fmt.Fprintf(tw, "%s\t%.4f\t%.4f\t%+.3f\t%s\t%d\t\n", cfgs[i].Algorithm, bt.MAEMean, bt.MAESD, bt.BiasMean, strings.Join(per, " "), bt.Iterations)
			if bt.MAEMean < bts[best].MAEMean {
				best = i
			}
		}
		for _, b := range []string{train.SeasonalNaive, train.Lag14} {
			if v, ok := bts[0].Baselines[b]; ok {
				fmt.Fprintf(tw, "%s\t%.4f\t\t\t\t\t\n", b, v)
			}
		}
		tw.Flush()
		fmt.Fprintf(stdout, "chosen by backtest: %s\n", cfgs[best].Algorithm)
	}

	// Tracking: one run per fit, started before the fit so its id is in the card.
	var tracking *train.Tracking
	if track {
		log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
		tr, err := tf.open(ctx, log)
		if err != nil {
			return err
		}
		defer tr.Close()
		if experiment == "" && experimentID != "" {
			if experiment, err = tr.experimentName(ctx, experimentID); err != nil {
				return usageError{fmt.Errorf("--experiment-id %s: %w", experimentID, err)}
			}
		}
		tracking = &train.Tracking{Recorder: tr.Tracker, Kind: tr.kind, Experiment: experiment,
			Run: tracker.RunOptions{Source: tracker.Source{User: currentUser(), Name: "flywheel train", GitCommit: gitCommit}}}
		if len(cfgs) > 1 {
			tracking.Run.Tags = map[string]string{train.TagComparison: fmt.Sprintf("%s-%d", time.Now().UTC().Format("20060102T150405Z"), os.Getpid())}
		}
	}
	var runs []*tracker.ActiveRun // runs[i] tracks results[i]; open until the end
	failRuns := func(cause error) error {
		var errs []error
		for _, r := range runs {
			errs = append(errs, train.EndRun(ctx, r, cause))
		}
		return errors.Join(append([]error{cause}, errs...)...)
	}

	var results []*train.Result
	for i, cfg := range cfgs {
		cfg.Data = data
		cfg.Importance = importance
		cfg.GitCommit = gitCommit
		cfg.TrainerVersion = "flywheel " + version
		if !quiet {
			cfg.Progress = progressPrinter(stderr)
		}
		var (
			r   *train.Result
			run *tracker.ActiveRun
			err error
		)
		if tracking != nil {
			r, run, err = train.FitTracked(ctx, *tracking, cfg) // ends its own run on failure
		} else {
			r, err = train.Fit(ctx, cfg)
		}
		if err != nil {
			return failRuns(err)
		}
		if bts != nil {
			r.Metrics["backtest"] = bts[i].Metrics()
			r.Card.Metrics = r.Metrics
			r.Card.Interval = bts[i].Interval(r, data.Test)
			r.Metrics["test"]["interval_coverage"] = r.Card.Interval.Coverage
			r.Card.Training.Selection = selection(cfgs, bts, best)
		}
		if !quiet {
			fmt.Fprintf(stderr, "%s: done in %s, %d iterations run, %d kept\n", r.Algorithm,
				r.FitDuration.Round(time.Millisecond), len(r.History), r.Iterations)
		}
		results = append(results, r)
		if run != nil {
			runs = append(runs, run)
		}
	}
	printMetrics(stdout, results, len(data.Train), len(data.Test))
	printReport(stdout, results[best])
	// Not published: a model that loses to the seasonal naive on the test
	// range (nothing overrides this), or one the version serve loads beats
	// on the same days (unless --force).
	var refused error
	replaces := ""
	if naive, ok := results[best].Metrics["test_"+train.SeasonalNaive]["mae"]; ok && publish && !(results[best].Metrics["test"]["mae"] < naive) {
		refused = fmt.Errorf("not published: %s's test MAE %.4f does not beat the seasonal naive's %.4f on the same days", results[best].Algorithm, results[best].Metrics["test"]["mae"], naive)
		publish = false
	} else if publish {
		if replaces, refused = checkChampion(ctx, models, name, data, results[best], ortLib, force); refused != nil {
			publish = false
		}
	} else {
		fmt.Fprintln(stdout, "not published (--publish=false)")
	}
	if tracking == nil {
		if !publish {
			return refused
		}
		v, dir, err := train.Publish(models, name, results[best])
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "published %s version %d (%s) to %s%s\n", name, v, results[best].Algorithm, dir, replaces)
		return nil
	}
	// Finish every run; the published one registers its version first and
	// the repository takes the registry's number (train.PublishTracked).
	var errs []error
	published := false
	order := []int{best} // the published run first: once it is published, nothing fails the command
	for i := range runs {
		if i != best {
			order = append(order, i)
		}
	}
	for _, i := range order {
		run := runs[i]
		if len(runs) > 1 {
			if err := run.SetTags(ctx, map[string]string{train.TagSelected: strconv.FormatBool(i == best)}); err != nil {
				errs = append(errs, err, train.EndRun(ctx, run, err))
				continue
			}
		}
		if publish && i == best {
			results[i].Card.Name = name
			pub, err := train.PublishTracked(ctx, *tracking, run, models, results[i], alias)
			if err != nil {
				errs = append(errs, fmt.Errorf("not published: %w", err))
				continue
			}
			published = true
			fmt.Fprintf(stdout, "published %s version %d (%s) to %s%s\n", name, pub.Version, results[i].Algorithm, pub.Dir, replaces)
			line := fmt.Sprintf("tracked %s run %s (%s)", results[i].Algorithm, run.ID(), tracking.Kind)
			if pub.Unsynced {
				line += ", complete in the local store only: `flywheel runs sync` replays it"
			}
			line += fmt.Sprintf("; registered %s version %s", name, pub.Registered.Version)
			if pub.Registered.Version != strconv.Itoa(pub.Version) {
				// The repository already had that number (e.g. the committed version, older than the registry).
				line += fmt.Sprintf(" in the model registry, published as repository version %d because version %s was taken", pub.Version, pub.Registered.Version)
			}
			if alias != "" && pub.TrackErr == nil {
				line += ", alias " + alias
			}
			fmt.Fprintln(stdout, line)
			if pub.TrackErr != nil {
				// Published: report, never fail the command.
				fmt.Fprintf(stderr, "warning: %v\n", pub.TrackErr)
			}
			continue
		}
		if _, err := train.FinishRun(ctx, run, results[i], ""); err != nil {
			errs = append(errs, err)
			continue
		}
		fmt.Fprintf(stdout, "tracked %s run %s (%s)\n", results[i].Algorithm, run.ID(), tracking.Kind)
	}
	if published && len(errs) > 0 {
		fmt.Fprintf(stderr, "warning: the model is published; tracking other runs failed: %v\n", errors.Join(errs...))
		return nil
	}
	return errors.Join(append([]error{refused}, errs...)...)
}

// checkChampion compares the model about to be published with the newest
// version in the repository (the one serve loads) on the same test days. It
// returns what the publish replaces, for the "published" line, or an error
// naming both figures when that version is better and force is off.
func checkChampion(ctx context.Context, repo, name string, data *train.Data, cand *train.Result, ortLib string, force bool) (string, error) {
	ch, err := train.FindChampion(repo, name)
	if err != nil || ch == nil {
		return "", err
	}
	days := fmt.Sprintf("%d test days, %s", len(data.Test), train.Range{From: data.Test[0].Date, Until: data.Test[len(data.Test)-1].Date})
	score, err := train.ScoreChampion(ctx, ch, data, nil)
	if err != nil && ch.Card != nil {
		if _, _, ortErr := ort.Setup(ortLib); ortErr != nil {
			err = fmt.Errorf("%w; ONNX Runtime: %v", err, ortErr)
		} else {
			score, err = train.ScoreChampion(ctx, ch, data, pipeline.ONNXPredictor{}.Predict)
		}
	}
	mae := cand.Metrics["test"]["mae"]
	switch {
	case err != nil && force:
		return fmt.Sprintf(", replacing version %d without comparing (--force: %v)", ch.Version, err), nil
	case err != nil:
		return "", fmt.Errorf("not published: cannot compare with version %d, which serve loads: %w (--force publishes without comparing)", ch.Version, err)
	case score.MAE < mae && force:
		return fmt.Sprintf(", replacing the better version %d (test MAE %.4f vs %.4f on the same %s; --force)", ch.Version, score.MAE, mae, days), nil
	case score.MAE < mae:
		return "", fmt.Errorf("not published: version %d (%s), which serve loads, has test MAE %.4f on the same %s; this %s model has %.4f. "+
			"--force publishes it anyway as the next version, and serve switches to it", ch.Version, cardAlgorithm(ch.Card), score.MAE, days, cand.Algorithm, mae)
	}
	return fmt.Sprintf(", replacing version %d (test MAE %.4f → %.4f on the same %s)", ch.Version, score.MAE, mae, days), nil
}

func cardAlgorithm(c *modelrepo.Card) string {
	if c == nil || c.Training.Algorithm == "" {
		return "no card"
	}
	return c.Training.Algorithm
}

// trainAlias is the registry alias `flywheel train` moves to the version it
// publishes: serve loads the newest repository version, so a manual publish
// makes it the served model and the registry says so. The retraining
// pipeline moves the same alias only after its gate.
const trainAlias = "champion"

// currentUser names who ran the command (mlflow.user), best effort.
func currentUser() string {
	if u, err := user.Current(); err == nil && u.Username != "" {
		return u.Username
	}
	return os.Getenv("USER")
}

// progressPrinter prints at most one line a second, and the last iteration.
func progressPrinter(w io.Writer) func(train.Progress) {
	var last time.Time
	return func(p train.Progress) {
		if time.Since(last) < time.Second && p.Iteration != p.Total && p.Iteration != 1 {
			return
		}
		last = time.Now()
		var ms []string
		for _, k := range []string{"train_rmse", "valid_rmse"} {
			if v, ok := p.Metrics[k]; ok {
				ms = append(ms, fmt.Sprintf("%s=%.4f", k, v))
			}
		}
		fmt.Fprintf(w, "%s: %d/%d %s elapsed %s, ETA ≤ %s\n", p.Algorithm, p.Iteration, p.Total,
			strings.Join(ms, " "), p.Elapsed.Round(10*time.Millisecond), p.ETA.Round(100*time.Millisecond))
	}
}

func printMetrics(w io.Writer, results []*train.Result, trainRows, testRows int) {
	fmt.Fprintf(w, "test metrics (%d rows; trained on %d; reported, never used to choose):\n", testRows, trainRows)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "algorithm\tMAE\tRMSE\tMAPE\tR²\tbias\ttrain MAE\titerations\tfit\tmodel.onnx\t")
	for _, r := range results {
		m := r.Metrics["test"]
		fmt.Fprintf(tw, "%s\t%.4f\t%.4f\t%.2f%%\t%.4f\t%+.3f\t%.4f\t%d\t%s\t%d B\t\n", r.Algorithm,
			m["mae"], m["rmse"], 100*m["mape"], m["r2"], m["bias"], r.Metrics["train"]["mae"], r.Iterations,
			r.FitDuration.Round(time.Millisecond), len(r.ONNX))
	}
	for _, b := range []string{train.SeasonalNaive, train.Lag14} {
		if m, ok := results[0].Metrics["test_"+b]; ok {
			fmt.Fprintf(tw, "%s\t%.4f\t%.4f\t%.2f%%\t%.4f\t%+.3f\t\t\t\t\t\n", b, m["mae"], m["rmse"], 100*m["mape"], m["r2"], m["bias"])
		}
	}
	tw.Flush()
}

// printReport prints the chosen model's report: per-weekday and holiday
// MAE, the interval and its coverage, the most important features.
func printReport(w io.Writer, r *train.Result) {
	m := r.Metrics["test"]
	var days []string
	for _, d := range []string{"mon", "tue", "wed", "thu", "fri", "sat", "sun"} {
		days = append(days, fmt.Sprintf("%s %.3f", d, m["mae_"+d]))
	}
	fmt.Fprintf(w, "%s report: bias %+.3f; holiday MAE %.3f (%d days: named holidays, Dec 24 … Jan 1); MAE by weekday: %s\n",
		r.Algorithm, m["bias"], m["holiday_mae"], int(m["holiday_rows"]), strings.Join(days, ", "))
	if iv := r.Card.Interval; iv != nil {
		fmt.Fprintf(w, "%.0f %% prediction interval: ± %.3f (split conformal on the last backtest fold); test coverage %.1f %%\n",
			100*iv.Level, iv.HalfWidth, 100*iv.Coverage)
	}
	if imp := r.Importance; len(imp) > 0 {
		fmt.Fprintf(w, "permutation importance (test MAE increase): %s\n", strings.Join(train.TopImportance(imp, 8), ", "))
	}
}

// selection is the card's record of how the published algorithm was chosen.
func selection(cfgs []train.Config, bts []*train.BacktestResult, best int) *modelrepo.Selection {
	s := &modelrepo.Selection{Chosen: cfgs[best].Algorithm, Candidates: map[string]map[string]float64{},
		Method: fmt.Sprintf("rolling-origin backtest: %d folds of 364 days at the end of the training range, each fitted on every day before it; lowest mean MAE", len(bts[best].Folds)/max(1, countSeeds(bts[best])))}
	for i, b := range bts {
		s.Candidates[cfgs[i].Algorithm] = b.Metrics()
	}
	return s
}

func countSeeds(b *train.BacktestResult) int {
	seen := map[int64]bool{}
	for _, f := range b.Folds {
		seen[f.Seed] = true
	}
	return len(seen)
}

// headCommit returns the checkout's commit, or "" when git or the
// repository is not available (best effort).
func headCommit(ctx context.Context) string {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "git", "rev-parse", "HEAD").Output()
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(out))
}
