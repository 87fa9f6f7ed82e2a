package predlog

import (
	"context"
	"testing"
)

// BenchmarkRecord is the cost the prediction log adds to one inference:
// go test -run - -bench Record ./server/predlog/
func BenchmarkRecord(b *testing.B) {
	s, err := Open(context.Background(), b.TempDir()+"/bench.db", 5e9)
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	l, err := New(Options{Config: DefaultConfig(), Store: s})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { l.Run(ctx); close(done) }()
	names := make([]string, 50)
	features := make([]float64, 50)
	for i := range names {
		names[i], features[i] = "f", float64(i)
	}
	params := map[string]any{"date": "2016-08-01"}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		l.Record(Entry{ID: "bench", Model: "ridership", Version: 1, Parameters: params,
			FeatureNames: names, Features: features, Outputs: []float64{1}})
	}
	b.StopTimer()
	cancel()
	<-done
}
