package api

import (
	"strconv"

	"github.com/flywheel-ml/flywheel/internal/modelrepo"
)

// cardParameters is what model metadata tells a client from the model card
// of the version that answers: the feature names of each input (so a named
// /invocations request can be built without opening model.json), the task,
// target and its unit, and the version's lineage. Nil without a card.
func cardParameters(c *modelrepo.Card, version int64) map[string]any {
	if c == nil {
		return nil
	}
	p := map[string]any{"version": strconv.FormatInt(version, 10)}
	set := func(k, v string) {
		if v != "" {
			p[k] = v
		}
	}
	set("task", c.Task)
	set("target", c.Target)
	set("target_unit", c.TargetUnit)
	for _, in := range c.Inputs {
		if len(in.Features) > 0 {
			key := "features"
			if len(c.Inputs) > 1 {
				key = in.Name + ".features"
			}
			p[key] = in.Features
		}
	}
	t := c.Training
	set("algorithm", t.Algorithm)
	set("trained_from", t.Dataset.From)
	set("trained_until", t.Dataset.Until)
	set("dataset", t.Dataset.Source)
	set("dataset_digest", t.Dataset.Digest)
	set("run_id", t.RunID)
	set("git_commit", t.GitCommit)
	if !c.CreatedAt.IsZero() {
		p["created_at"] = c.CreatedAt.UTC().Format("2006-01-02T15:04:05Z")
	}
	for _, m := range []string{"mae", "rmse"} {
		if v, ok := c.Metrics["test"][m]; ok {
			p["test_"+m] = v
		}
		if v, ok := c.Thresholds[m]; ok {
			p["threshold_"+m] = v
		}
	}
	return p
}
