package tracker

import (
	"encoding/json"
	"strings"
)

// MLflow's dataset limits (mlflow/utils/validation.py, 2.10.2): a digest
// longer than 36 characters is rejected with INVALID_PARAMETER_VALUE.
const (
	MaxDatasetNameLength   = 500
	MaxDatasetDigestLength = 36
	MaxDatasetSourceLength = 65535
	MaxDatasetSchemaLength = 65535
	MaxInputTagValueLength = 500
	// ShortDigestLength is the length of the digests MLflow computes itself
	// (8 hex characters) and of ShortDigest's.
	ShortDigestLength = 8
)

// ShortDigest turns a content hash such as "sha256:<64 hex>" into an
// MLflow-style dataset digest: its first 8 hex characters. A digest that
// already fits MLflow's 36 characters is returned as it is. Keep the full
// hash elsewhere (the model card, the dataset's profile or a run tag).
func ShortDigest(full string) string {
	if len(full) <= MaxDatasetDigestLength {
		return full
	}
	if i := strings.IndexByte(full, ':'); i >= 0 {
		full = full[i+1:]
	}
	return full[:min(ShortDigestLength, len(full))]
}

// ValidateDataset applies MLflow's dataset rules, so a dataset the local
// store accepts can be replayed to MLflow.
func ValidateDataset(d Dataset) error {
	switch {
	case d.Name == "" || d.Digest == "":
		return Errorf(ErrInvalid, "dataset needs a name and a digest")
	case len(d.Name) > MaxDatasetNameLength:
		return Errorf(ErrInvalid, "dataset name exceeds the maximum length of %d", MaxDatasetNameLength)
	case len(d.Digest) > MaxDatasetDigestLength:
		return Errorf(ErrInvalid, "dataset digest %q exceeds the maximum length of %d (use tracker.ShortDigest)", d.Digest, MaxDatasetDigestLength)
	case len(d.Source) > MaxDatasetSourceLength:
		return Errorf(ErrInvalid, "dataset source exceeds the maximum length of %d", MaxDatasetSourceLength)
	case len(d.Schema) > MaxDatasetSchemaLength:
		return Errorf(ErrInvalid, "dataset schema exceeds the maximum length of %d", MaxDatasetSchemaLength)
	case len(d.Context) > MaxInputTagValueLength:
		return Errorf(ErrInvalid, "dataset context exceeds the maximum length of %d", MaxInputTagValueLength)
	}
	return nil
}

// Column is one column of a dataset schema.
type Column struct {
	Name string
	Type string // MLflow's colspec types: double, float, long, integer, boolean, string, datetime, binary
}

// ColSpecSchema is a dataset schema in MLflow's {"mlflow_colspec": [...]}
// form, which the MLflow UI's dataset drawer shows as the columns.
func ColSpecSchema(cols []Column) string {
	type colspec struct {
		Type     string `json:"type"`
		Name     string `json:"name"`
		Required bool   `json:"required"`
	}
	specs := make([]colspec, len(cols))
	for i, c := range cols {
		specs[i] = colspec{Type: c.Type, Name: c.Name, Required: true}
	}
	b, _ := json.Marshal(map[string]any{"mlflow_colspec": specs})
	return string(b)
}
