package pipeline

import (
	"math"
	"math/rand/v2"
	"strings"
	"testing"
)

// constructed builds 56 days of truth and a champion with errors of sd 1,
// and a candidate whose errors are the champion's scaled by factor plus
// independent noise of sd noise.
func constructed(seed uint64, factor, noise float64) (truth, champ, cand []float64) {
	rng := rand.New(rand.NewPCG(seed, 7))
	for i := 0; i < 56; i++ {
		y := 15 + 5*math.Sin(float64(i))
		e := rng.NormFloat64()
		truth = append(truth, y)
		champ = append(champ, y+e)
		cand = append(cand, y+factor*e+noise*rng.NormFloat64())
	}
	return truth, champ, cand
}

func TestGateRejectsNoiseBetter(t *testing.T) {
	// A candidate that is the champion plus noise, picked (as a retrain on a
	// lucky seed would be) among the first seeds where its holdout MAE is
	// lower: better on paper, not beyond noise.
	for seed := uint64(1); seed < 200; seed++ {
		truth, champ, cand := constructed(seed, 0.97, 0.3)
		d := Decide(GateInput{Truth: truth, Champion: champ, Candidate: cand, Metric: "mae", Threshold: 5, Seed: 1})
		if d.Candidate >= d.Champion {
			continue
		}
		if d.Promote || d.DiffHigh < 0 || !strings.Contains(strings.Join(d.Reasons, ";"), "beyond noise") {
			t.Fatalf("seed %d: noise-better candidate (%.4f vs %.4f) promoted: %+v", seed, d.Candidate, d.Champion, d)
		}
		// the old 2 % margin rule would have promoted it
		if d.Candidate <= 0.98*d.Champion {
			t.Logf("seed %d: candidate %.4f vs champion %.4f (%.1f %% better) rejected; interval [%+.3f, %+.3f]",
				seed, d.Candidate, d.Champion, 100*(1-d.Candidate/d.Champion), d.DiffLow, d.DiffHigh)
			return
		}
	}
	t.Fatal("no constructed candidate was more than 2 % better on paper")
}

func TestGatePromotesReallyBetter(t *testing.T) {
	truth, champ, cand := constructed(3, 0.6, 0.05)
	d := Decide(GateInput{Truth: truth, Champion: champ, Candidate: cand, Metric: "mae", Threshold: 5, Seed: 1})
	if !d.Promote || !d.Better || d.DiffHigh >= 0 {
		t.Fatalf("really better candidate rejected: %+v", d)
	}
	if m := d.Metrics(); m["promote"] != 1 || m["diff_high"] >= 0 || m["diff_low"] > m["diff_mean"] {
		t.Fatalf("metrics %v", m)
	}
	if s := d.Summary("mae", 1); !strings.Contains(s, "promote (really better)") {
		t.Fatalf("summary %s", s)
	}
}

func TestGateRules(t *testing.T) {
	truth, champ, _ := constructed(5, 1, 0)
	worse := make([]float64, len(truth))
	for i := range truth {
		worse[i] = champ[i] + 0.01*float64(i%3) // no better than the champion
	}
	// an equal candidate, both above the threshold: rejected for both reasons
	d := Decide(GateInput{Truth: truth, Champion: champ, Candidate: champ, Metric: "mae", Threshold: 0.5})
	if d.Promote || len(d.Reasons) != 2 {
		t.Fatalf("an equal candidate above the threshold: %+v", d)
	}
	// the champion breaches its threshold, the candidate meets it: rescue
	good := make([]float64, len(truth))
	for i := range truth {
		good[i] = truth[i] + 0.3*(champ[i]-truth[i])
	}
	d = Decide(GateInput{Truth: truth, Champion: champ, Candidate: good, Metric: "mae", Threshold: 0.5})
	if !d.Promote || !d.Rescue {
		t.Fatalf("rescue: %+v", d)
	}
	d = Decide(GateInput{Truth: truth, Champion: champ, Candidate: worse, Metric: "rmse", Threshold: 5})
	if d.Promote || d.DiffHigh < 0 {
		t.Fatalf("worse candidate promoted: %+v", d)
	}
	// a really better candidate that still loses to the naive forecast is rejected
	d = Decide(GateInput{Truth: truth, Champion: champ, Candidate: good, Naive: truth, Metric: "mae"})
	if d.Promote || !strings.Contains(strings.Join(d.Reasons, ";"), "seasonal naive") {
		t.Fatalf("naive rule: %+v", d)
	}
	// same input, same interval
	a := Decide(GateInput{Truth: truth, Champion: champ, Candidate: good, Metric: "mae", Seed: 9})
	b := Decide(GateInput{Truth: truth, Champion: champ, Candidate: good, Metric: "mae", Seed: 9})
	if a.DiffLow != b.DiffLow || a.DiffHigh != b.DiffHigh {
		t.Fatal("bootstrap not reproducible")
	}
}
