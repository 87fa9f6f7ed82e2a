package benchmodels

import (
	"crypto/sha256"
	"fmt"
	"testing"
)

// The copy must keep writing the bytes the bench harness records in its SHA256SUMS.
func TestDeterministic(t *testing.T) {
	for _, s := range Specs {
		t.Run(s.Name, func(t *testing.T) {
			if got := fmt.Sprintf("%x", sha256.Sum256(s.Bytes())); got != s.SHA256 {
				t.Errorf("sha256 %s, want %s", got, s.SHA256)
			}
		})
	}
}

func TestCardsValidate(t *testing.T) {
	for _, s := range Specs {
		c := s.Card()
		if err := c.Validate(); err != nil || len(c.FeatureNames()) != s.Features {
			t.Fatalf("%s: %v, %d features", s.Name, err, len(c.FeatureNames()))
		}
	}
}
