package predlog

import (
	"context"
	"crypto/rand"
	"fmt"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/flywheel-ml/flywheel/internal/harness"
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
// batches of 1024: a 50-feature float64 model and the 16- and 256-feature
// FP32 benchmark models (mlp_small, mlp_wide), with ids that sort by time
// (as serve makes them: a time prefix and 128 random bits) and with purely
// random ids (rand.Text, as a client may send), which land on random pages
// of the id index. Instructions per row, whatever the machine's load:
//
//	go test -c -o /tmp/predlog.test ./server/predlog
//	GODEBUG=asyncpreemptoff=1 valgrind --tool=callgrind /tmp/predlog.test -test.run '^$' -test.bench 'WriteBatch/16xfp32/ordered' -test.benchtime 20x
//
// (the same with 40x; the difference of the totals over 20 × 1024 rows).
func BenchmarkWriteBatch(b *testing.B) {
	benchWriteBatch(b, func(b *testing.B) string { return b.TempDir() + "/bench.db" })
}

// BenchmarkWriteBatchPostgres is BenchmarkWriteBatch on a real PostgreSQL
// 15 with its durable defaults (part of `make bench-scale`).
func BenchmarkWriteBatchPostgres(b *testing.B) {
	pg := harness.StartPostgres(b, harness.PostgresOptions{})
	benchWriteBatch(b, func(b *testing.B) string { return pg.NewDatabase(b) })
}

func benchWriteBatch(b *testing.B, newURL func(*testing.B) string) {
	for _, bc := range []struct {
		name string
		n    int
		fp32 bool
		ids  string
	}{{"50xfp64", 50, false, "ordered"}, {"16xfp32", 16, true, "ordered"}, {"16xfp32", 16, true, "random"}, {"256xfp32", 256, true, "ordered"}} {
		b.Run(bc.name+"/"+bc.ids, func(b *testing.B) {
			s, err := Open(context.Background(), newURL(b), 5e9)
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
			cpu0 := cpuTime()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				for j := range batch {
					id := fmt.Sprintf("%010d", i*len(batch)+j) + rand.Text() // ordered
					if bc.ids == "random" {
						id = rand.Text()
					}
					e := Entry{ID: id, Time: time.Unix(int64(i), 0),
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
			b.ReportMetric(float64(b.N*len(batch))/b.Elapsed().Seconds(), "rows/s")
			b.ReportMetric(float64((cpuTime()-cpu0).Nanoseconds())/float64(b.N*len(batch)), "cpu-ns/row")
		})
	}
}

// cpuTime is the process's user + system CPU time: the cost of a row
// including the kernel's share (writing WAL pages), which wall time on a
// shared machine blurs and instruction counts miss.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
