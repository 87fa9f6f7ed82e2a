package drift

import (
	"strconv"
	"testing"

	"github.com/flywheel-ml/flywheel/internal/modelrepo"
)

// BenchmarkObserve is the cost drift adds to one single-row inference of a
// 50-feature model: go test -run - -bench Observe ./server/drift/
func BenchmarkObserve(b *testing.B) {
	m, err := New(Options{Config: DefaultConfig()})
	if err != nil {
		b.Fatal(err)
	}
	names := make([]string, 50)
	ref := &modelrepo.Reference{Features: map[string]modelrepo.Histogram{}}
	h := modelrepo.Histogram{Edges: []float64{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, Proportions: make([]float64, 10)}
	for i := range names {
		names[i] = "f" + strconv.Itoa(i)
		ref.Features[names[i]] = h
	}
	m.Add("m", 1, names, ref)
	row := make([]float32, 50)
	for i := range row {
		row[i] = float32(i % 10)
	}
	pred := []float32{1}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if !m.Observe("m", 1, row, pred) {
			m.Sync()
		}
	}
}
