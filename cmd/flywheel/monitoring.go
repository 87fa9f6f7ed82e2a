package main

import (
	"github.com/flywheel-ml/flywheel/internal/database"
	"github.com/flywheel-ml/flywheel/server/monitor"
)

// addMonitorFlags defines the monitoring flags of `flywheel serve`: the
// prediction log, feedback and drift (server/monitor). A --database URL
// replaces --predlog-db (applyDatabase).
func addMonitorFlags(fs *flagSet, c *monitor.Config, db, dbFile *string) {
	*c = monitor.DefaultConfig()
	p, d := &c.Predlog, &c.Drift
	fs.String(db, "database", database.EnvURL, "", "shared database of the prediction log and feedback labels, postgres://user:password@host:5432/db (every replica uses the same one); replaces --predlog-db")
	fs.String(dbFile, "database-file", database.EnvURL+"_FILE", "", "file holding the --database URL (a mounted secret), instead of --database")
	fs.String(&c.DB, "predlog-db", "", c.DB, "SQLite database of the prediction log and feedback labels, created with its folder (--predlog-db= turns the prediction log, feedback and prediction lookup off)")
	fs.Float(&p.SampleRate, "predlog-sample-rate", "", p.SampleRate, "share of predictions logged, in (0, 1]")
	fs.Int(&p.QueueSize, "predlog-queue", "", p.QueueSize, "predictions waiting to be written; when full, new ones are dropped and counted (flywheel_predlog_dropped_total), never waited for")
	fs.Int(&p.BatchSize, "predlog-batch", "", p.BatchSize, "most predictions written in one transaction")
	fs.Duration(&p.FlushInterval, "predlog-flush-interval", "", p.FlushInterval, "longest a prediction waits before it is written")
	fs.Duration(&p.MaxAge, "predlog-max-age", "", p.MaxAge, "delete logged predictions older than this (0: keep; labelled rows are kept)")
	fs.Int64(&p.MaxRows, "predlog-max-rows", "", p.MaxRows, "keep at most this many logged predictions, the newest (0: no limit)")
	fs.Duration(&p.RetentionInterval, "predlog-retention-interval", "", p.RetentionInterval, "how often retention (max age, max rows) runs")
	fs.Duration(&c.BusyTimeout, "predlog-busy-timeout", "", c.BusyTimeout, "SQLite busy timeout of the prediction database")
	fs.Int(&d.Window, "drift-window", "", d.Window, "most recent rows per served version that feature and prediction drift (PSI) are computed over")
	fs.Int(&d.MinRows, "drift-min-rows", "", d.MinRows, "rows a window needs before drift is exported")
	fs.Int(&d.QueueSize, "drift-queue", "", d.QueueSize, "observations waiting for the drift monitor; when full, they are dropped and counted")
	fs.Int(&c.FeedbackMaxItems, "feedback-max-items", "", c.FeedbackMaxItems, "most labels in one POST /v1/feedback")
	fs.Duration(&c.StoreMetricsInterval, "feedback-store-metrics-interval", "", c.StoreMetricsInterval, "how often the live quality of the whole store (flywheel_feedback_store_*: the same on every replica, aggregate with max) is recomputed from the labels table, on scrape (0: off)")
	fs.Float(&c.FeedbackRate, "feedback-rate", "", c.FeedbackRate, "labels per second one client (IP) may send to POST /v1/feedback, in bursts of --feedback-max-items (more: 429; negative: no limit)")
	fs.Duration(&p.LabelMaxAge, "label-max-age", "", p.LabelMaxAge, "delete feedback labels received longer ago than this (0: keep)")
}

// applyDatabase makes the --database URL (or --database-file's) the
// monitoring database.
func applyDatabase(c *monitor.Config, db, file string) error {
	u, err := secret("database", db, file)
	if err != nil {
		return err
	}
	if u != "" {
		c.DB = u
	}
	return nil
}
