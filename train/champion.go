package train

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/flywheel-ml/flywheel/internal/modelrepo"
	"github.com/flywheel-ml/flywheel/train/eval"
)

// Champion is the version a publish would replace: the newest version of a
// model in the repository, the one serve loads under its default policy.
type Champion struct {
	Version int64
	Dir     string
	Card    *modelrepo.Card // nil when the version has no readable model.json
}

// FindChampion returns the newest version of model name under repoDir, or
// nil when the model has none.
func FindChampion(repoDir, name string) (*Champion, error) {
	modelDir := filepath.Join(repoDir, name)
	vs, err := modelrepo.Versions(modelDir)
	if errors.Is(err, os.ErrNotExist) || (err == nil && len(vs) == 0) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	v := vs[len(vs)-1]
	ch := &Champion{Version: v, Dir: modelrepo.VersionDir(modelDir, v)}
	if c, err := modelrepo.LoadCard(filepath.Join(ch.Dir, modelrepo.CardFile)); err == nil {
		ch.Card = c
	}
	return ch, nil
}

// Predictor runs a model version's model.onnx on rows of features
// (pipeline.ONNXPredictor with ONNX Runtime).
type VersionPredictor func(ctx context.Context, modelDir string, c *modelrepo.Card, x [][]float64) ([]float64, error)

// ChampionScore is the champion's test error on the rows a candidate was tested on.
type ChampionScore struct {
	MAE  float64
	From string // "card": its card's test metrics are on the same rows (same digest); "onnx": scored now
}

// ScoreChampion returns the champion's MAE on data.Test: the figure of its
// card when the card was tested on exactly these rows (same digest), else
// the MAE of predict on them. predict may be nil; then only the card can
// answer.
func ScoreChampion(ctx context.Context, ch *Champion, data *Data, predict VersionPredictor) (ChampionScore, error) {
	if ch.Card == nil {
		return ChampionScore{}, fmt.Errorf("version %d has no model card to compare with", ch.Version)
	}
	if td := ch.Card.Training.TestDataset; td != nil && td.Digest == data.TestDigest {
		if mae, ok := ch.Card.Metrics["test"]["mae"]; ok {
			return ChampionScore{MAE: mae, From: "card"}, nil
		}
	}
	if predict == nil {
		return ChampionScore{}, fmt.Errorf("version %d was tested on other rows and cannot be run here", ch.Version)
	}
	x := make([][]float64, len(data.Test))
	truth := make([]float64, len(data.Test))
	for i, e := range data.Test {
		x[i], truth[i] = e.Features, e.Target
	}
	pred, err := predict(ctx, ch.Dir, ch.Card, x)
	if err != nil {
		return ChampionScore{}, fmt.Errorf("scoring version %d on the test rows: %w", ch.Version, err)
	}
	return ChampionScore{MAE: eval.Regression(truth, pred).MAE, From: "onnx"}, nil
}
