package api

import (
	"time"

	"github.com/flywheel-ml/flywheel/internal/modelrepo"
	"github.com/flywheel-ml/flywheel/server/tensor"
)

// Observation is one served prediction, handed to every Observer after the
// response is encoded.
type Observation struct {
	Model      string
	Version    int64
	RequestID  string
	Time       time.Time      // when the request arrived
	Protocol   string         // "oip" or "mlflow"
	Parameters map[string]any // the request's parameters (MLflow: params)
	Inputs     []tensor.Tensor
	Outputs    []tensor.Tensor // every output the model produced, not only the requested ones
	Card       *modelrepo.Card // the version's model card, nil without model.json
}

// Observer receives observations (the prediction log, drift statistics).
//
// Observe is called synchronously on the request path and MUST NOT block:
// copy what is needed or enqueue it and return (dropping, and counting the
// drop, when a queue is full). The tensors and maps belong to the
// observation and are never modified by the server afterwards, so they may
// be kept without copying; the observer must not modify them either.
type Observer interface {
	Observe(Observation)
}

// ObserverFunc adapts a function to Observer.
type ObserverFunc func(Observation)

// Observe calls f(o).
func (f ObserverFunc) Observe(o Observation) { f(o) }
