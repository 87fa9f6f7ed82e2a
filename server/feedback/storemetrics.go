package feedback

import (
	"context"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/flywheel-ml/flywheel/server/predlog"
)

// StoreMetrics exports live quality computed from the labels table itself,
// not from this process's counters: every replica on a shared database
// exports the same totals, which survive a replica's restart. Alert rules
// and dashboards aggregate them across replicas with max by (model,
// version) — never sum, which would multiply them by the replica count.
// The query runs at most once per interval, on scrape.
type StoreMetrics struct {
	db       *predlog.Store
	interval time.Duration
	timeout  time.Duration
	logger   *slog.Logger
	now      func() time.Time

	labels, absErr, sqErr *prometheus.Desc

	mu     sync.Mutex
	at     time.Time
	cached []storeRow
}

type storeRow struct {
	model, version     string
	n                  int64
	absErr, squaredErr float64
}

// NewStoreMetrics registers the store-wide quality gauges on reg.
func NewStoreMetrics(db *predlog.Store, interval time.Duration, reg prometheus.Registerer, logger *slog.Logger) (*StoreMetrics, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	mv := []string{"model", "version"}
	m := &StoreMetrics{db: db, interval: interval, timeout: 5 * time.Second, logger: logger, now: time.Now,
		labels: prometheus.NewDesc("flywheel_feedback_store_labels",
			"Labels joined to a logged prediction in the (shared) store, per model version; the same on every replica: aggregate with max.", mv, nil),
		absErr: prometheus.NewDesc("flywheel_feedback_store_absolute_error",
			"Sum of |label - prediction| over the store's labels; divide by flywheel_feedback_store_labels for MAE. Aggregate with max.", mv, nil),
		sqErr: prometheus.NewDesc("flywheel_feedback_store_squared_error",
			"Sum of (label - prediction)^2 over the store's labels. Aggregate with max.", mv, nil),
	}
	if reg != nil {
		if err := reg.Register(m); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// Describe implements prometheus.Collector.
func (m *StoreMetrics) Describe(ch chan<- *prometheus.Desc) {
	ch <- m.labels
	ch <- m.absErr
	ch <- m.sqErr
}

// Collect implements prometheus.Collector: the cached totals, refreshed
// when older than the interval (a failing query keeps the last ones).
func (m *StoreMetrics) Collect(ch chan<- prometheus.Metric) {
	m.mu.Lock()
	if m.at.IsZero() || m.now().Sub(m.at) >= m.interval {
		ctx, cancel := context.WithTimeout(context.Background(), m.timeout)
		rows, err := m.Query(ctx)
		cancel()
		if err != nil {
			m.logger.Warn("reading live quality from the store", "err", err)
		} else {
			m.cached, m.at = rows, m.now()
		}
	}
	rows := m.cached
	m.mu.Unlock()
	for _, r := range rows {
		ch <- prometheus.MustNewConstMetric(m.labels, prometheus.GaugeValue, float64(r.n), r.model, r.version)
		ch <- prometheus.MustNewConstMetric(m.absErr, prometheus.GaugeValue, r.absErr, r.model, r.version)
		ch <- prometheus.MustNewConstMetric(m.sqErr, prometheus.GaugeValue, r.squaredErr, r.model, r.version)
	}
}

// Query computes the totals per model version from the labels table.
func (m *StoreMetrics) Query(ctx context.Context) ([]storeRow, error) {
	stats, err := m.db.LabelStats(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]storeRow, len(stats))
	for i, st := range stats {
		out[i] = storeRow{model: st.Model, version: strconv.Itoa(st.Version), n: st.Labels, absErr: st.AbsErr, squaredErr: st.SquaredErr}
	}
	return out, nil
}
