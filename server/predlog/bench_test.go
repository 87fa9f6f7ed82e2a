package predlog

import (
	"context"
	"testing"
	"time"
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

// BenchmarkWriteBatch is the flusher's cost per row (encode + insert) for a
// 50-feature model, in batches of 1024.
func BenchmarkWriteBatch(b *testing.B) {
	s, err := Open(context.Background(), b.TempDir()+"/bench.db", 5e9)
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	names := make([]string, 50)
	features := make([]float64, 50)
	for i := range names {
		names[i], features[i] = "feature_"+string(rune('a'+i%26))+string(rune('a'+i/26)), float64(float32(float64(i)*1.37))
	}
	batch := make([]Entry, 1024)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for j := range batch {
			batch[j] = Entry{ID: "bench-" + string(rune('a'+j%26)) + string(rune('a'+i%26)) + string(rune('a'+j/26%26)), Time: time.Unix(int64(i), 0),
				Model: "ridership", Version: 1, Parameters: map[string]any{"date": "2016-08-01"},
				FeatureNames: names, Features: features, Outputs: []float64{15.2}}
		}
		if err := s.insert(context.Background(), batch); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(batch)), "ns/row")
}
