package preprocess

import (
	"math"
	"testing"
)

func TestStandardizer(t *testing.T) {
	X := [][]float64{{1, 5, 0}, {3, 5, 6}, {5, 5, 2}}
	s, err := Fit(X, 2, 7)
	if err != nil {
		t.Fatal(err)
	}
	if s.Width() != 2+7 {
		t.Fatalf("width %d", s.Width())
	}
	got := s.Transform(nil, []float64{3 + math.Sqrt(8.0/3), 5, 6})
	want := []float64{1, 0, 0, 0, 0, 0, 0, 0, 1} // constant column → scale 1, centred to 0
	for i := range want {
		if math.Abs(got[i]-want[i]) > 1e-12 {
			t.Fatalf("got %v want %v", got, want)
		}
	}
	if z := s.Transform(nil, []float64{0, 0, 7.5}); z[2]+z[3]+z[4]+z[5]+z[6]+z[7]+z[8] != 0 {
		t.Fatalf("unknown category encoded: %v", z)
	}
	if _, err := Fit(nil, -1, 0); err == nil {
		t.Fatal("no rows accepted")
	}
}
