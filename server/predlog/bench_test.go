package predlog

import (
	"context"
	"strconv"
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

// BenchmarkWriteBatch is the flusher's cost per row (encode + insert), in
// batches of 1024: a 50-feature float64 model and the 256-feature FP32
// benchmark model (mlp_wide).
func BenchmarkWriteBatch(b *testing.B) {
	for _, bc := range []struct {
		name string
		n    int
		fp32 bool
	}{{"50xfp64", 50, false}, {"16xfp32", 16, true}, {"256xfp32", 256, true}} {
		b.Run(bc.name, func(b *testing.B) {
			s, err := Open(context.Background(), b.TempDir()+"/bench.db", 5e9)
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			names := make([]string, bc.n)
			f64 := make([]float64, bc.n)
			f32 := make([]float32, bc.n)
			for i := range names {
				names[i] = "feature_" + strconv.Itoa(i)
				f32[i] = float32(float64(i) * 1.37)
				f64[i] = float64(f32[i])
			}
			batch := make([]Entry, 1024)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				for j := range batch {
					e := Entry{ID: "bench-" + strconv.Itoa(i) + "-" + strconv.Itoa(j), Time: time.Unix(int64(i), 0),
						Model: "ridership", Version: 1, Parameters: map[string]any{"date": "2016-08-01"}, FeatureNames: names}
					if bc.fp32 {
						e.Features32, e.Outputs32 = f32, []float32{15.2, 0.1}
					} else {
						e.Features, e.Outputs = f64, []float64{15.2, 0.1}
					}
					batch[j] = e
				}
				if err := s.insert(context.Background(), batch); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(batch)), "ns/row")
		})
	}
}
