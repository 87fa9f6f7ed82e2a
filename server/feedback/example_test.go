package feedback_test

import (
	"context"
	"log/slog"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/flywheel-ml/flywheel/internal/modelrepo"
	"github.com/flywheel-ml/flywheel/server/drift"
	"github.com/flywheel-ml/flywheel/server/feedback"
	"github.com/flywheel-ml/flywheel/server/predlog"
)

// Example shows how serve wires monitoring: one database, the prediction log
// and drift monitor as run-group actors, the feedback routes on the fiber
// app, and the two calls on the inference path.
func Example() {
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	logger := slog.Default()
	reg := prometheus.NewRegistry() // serve's registry, exposed at /metrics

	db, err := predlog.Open(ctx, "var/flywheel.db", 5*time.Second)
	if err != nil {
		panic(err)
	}
	defer db.Close()
	plog, _ := predlog.New(predlog.Options{Config: predlog.DefaultConfig(), Store: db, Registerer: reg, Logger: logger})
	monitor, _ := drift.New(drift.Options{Config: drift.DefaultConfig(), Registerer: reg, Logger: logger})
	var cardOf feedback.CardLookup = func(model string, version int) *modelrepo.Card { return nil } // from the repository
	store, _ := feedback.New(feedback.Options{DB: db, Log: plog, Cards: cardOf, Registerer: reg, Logger: logger})
	api, _ := feedback.NewAPI(feedback.APIOptions{Store: store, AdminToken: "from --admin-token-file", Logger: logger})

	app := fiber.New()
	api.Register(app) // POST /v1/feedback, GET /v1/feedback/export, GET /v1/predictions/*

	go plog.Run(ctx)    // actor: drains on shutdown
	go monitor.Run(ctx) // actor

	// When the repository makes a version ready:
	c := &modelrepo.Card{Name: "ridership", Version: 1, Inputs: []modelrepo.Tensor{{Features: []string{"Austin", "dow"}}}}
	status := monitor.Add(c.Name, c.Version, c.FeatureNames(), c.Reference) // status goes into the version's metadata
	store.AddVersion(c.Name, c.Version, c)
	_ = status

	// After each inference (per row; never blocks):
	inputs, outputs := []float32{1.5, 3}, []float32{15.2}
	monitor.Observe("ridership", 1, inputs, outputs)
	plog.Record(predlog.Entry{ID: "request-id", Model: "ridership", Version: 1,
		Parameters: map[string]any{"date": "2016-08-01"}, FeatureNames: c.FeatureNames(),
		Features: []float64{1.5, 3}, Outputs: []float64{15.2}})

	// When a version is unloaded:
	monitor.Remove("ridership", 1)
}
