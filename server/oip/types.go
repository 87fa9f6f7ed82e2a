// Package oip implements the Open Inference Protocol (KServe V2) REST
// message types and the decoding of inference requests into tensors and
// encoding of results, with errors that name the offending input.
package oip

import "encoding/json"

// InferenceRequest is the body of POST /v2/models/{m}[/versions/{v}]/infer.
type InferenceRequest struct {
	ID         string          `json:"id,omitempty"`
	Parameters map[string]any  `json:"parameters,omitempty"`
	Inputs     []RequestInput  `json:"inputs"`
	Outputs    []RequestOutput `json:"outputs,omitempty"`
}

// RequestInput is one input tensor of a request; Data is kept raw and
// decoded against the model's signature.
type RequestInput struct {
	Name       string          `json:"name"`
	Shape      []int64         `json:"shape"`
	Datatype   string          `json:"datatype"`
	Parameters map[string]any  `json:"parameters,omitempty"`
	Data       json.RawMessage `json:"data"`
}

// RequestOutput selects an output by name.
type RequestOutput struct {
	Name       string         `json:"name"`
	Parameters map[string]any `json:"parameters,omitempty"`
}

// InferenceResponse is the body of a successful inference.
type InferenceResponse struct {
	ModelName    string           `json:"model_name"`
	ModelVersion string           `json:"model_version,omitempty"`
	ID           string           `json:"id,omitempty"`
	Parameters   map[string]any   `json:"parameters,omitempty"`
	Outputs      []ResponseOutput `json:"outputs"`
}

// ResponseOutput is one output tensor; Data is flat and row-major. For the
// non-tensor datatypes SEQUENCE and MAP, Data is a JSON array of objects or
// one JSON object (see the package documentation of the api package).
type ResponseOutput struct {
	Name       string         `json:"name"`
	Datatype   string         `json:"datatype"`
	Shape      []int64        `json:"shape"`
	Parameters map[string]any `json:"parameters,omitempty"`
	Data       any            `json:"data"`
}

// TensorMetadata describes a model input or output; -1 is a dynamic dimension.
type TensorMetadata struct {
	Name     string  `json:"name"`
	Datatype string  `json:"datatype"`
	Shape    []int64 `json:"shape"`
}

// ModelMetadata answers GET /v2/models/{m}[/versions/{v}].
type ModelMetadata struct {
	Name     string           `json:"name"`
	Versions []string         `json:"versions,omitempty"`
	Platform string           `json:"platform"`
	Inputs   []TensorMetadata `json:"inputs"`
	Outputs  []TensorMetadata `json:"outputs"`
	// Parameters carry the model card of the version answering (feature
	// names, target, lineage), when it has one.
	Parameters map[string]any `json:"parameters,omitempty"`
}

// ServerMetadata answers GET /v2.
type ServerMetadata struct {
	Name       string   `json:"name"`
	Version    string   `json:"version"`
	Extensions []string `json:"extensions"`
}

// IndexEntry is one row of POST /v2/repository/index.
type IndexEntry struct {
	Name    string `json:"name"`
	Version string `json:"version,omitempty"`
	State   string `json:"state,omitempty"`
	Reason  string `json:"reason,omitempty"`
}

// RepositoryIndexRequest is the optional body of POST /v2/repository/index.
type RepositoryIndexRequest struct {
	Ready bool `json:"ready,omitempty"`
}

// ErrorResponse is the body of every error.
type ErrorResponse struct {
	Error string `json:"error"`
}

// Platform is the platform name reported in model metadata.
const Platform = "onnxruntime_onnx"
