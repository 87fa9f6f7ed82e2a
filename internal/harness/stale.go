package harness

import (
	"context"
	"fmt"
	"os/exec"
)

// StaleModelSummary says what TrainStaleModel builds and why, for a person
// reading a log.
const StaleModelSummary = "a deliberately stale ridership v1 (trained up to 2008, --ratio-to none): " +
	"it cannot follow 2013–16 ridership, so drift and error alerts fire and the loop retrains " +
	"(the committed model stays under its error threshold)"

// TrainStaleModel publishes ridership v1 into models with `bin train`: the
// default features, trained up to 2008 (tested on 2009) and fitted to the
// target itself (`--ratio-to none`), so its trees cannot follow ridership
// above its 2008 level — 2015–16 live MAE about 1.5 against a card threshold
// of 1.00, while the committed model (fitted to the ratio) stays near 0.77
// and fires nothing. Used by the end-to-end tests and `make demo` (about 5 s).
// Extra arguments go after these (later flags win): e.g. "--track",
// "--tracking-uri", url also registers it in MLflow with alias champion.
func TrainStaleModel(ctx context.Context, bin, data, models string, extra ...string) error {
	args := append([]string{"train", "--ratio-to", "none", "--backtest-folds", "0", "--track=false", "--importance=false",
		"--train-until", "2008-12-31", "--test-from", "2009-01-01", "--test-until", "2009-12-31", "--quiet", "--data", data, "--models", models}, extra...)
	cmd := exec.CommandContext(ctx, bin, args...)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("flywheel train --ratio-to none (stale model): %w\n%s", err, out)
	}
	return nil
}
