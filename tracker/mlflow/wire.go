package mlflow

import (
	"bytes"
	"encoding/json"
	"math"
	"strconv"
	"strings"

	"github.com/flywheel-ml/flywheel/tracker"
)

// flexString decodes a JSON string or number (ids are strings, but be lenient).
type flexString string

func (s *flexString) UnmarshalJSON(b []byte) error {
	if bytes.Equal(b, []byte("null")) {
		return nil
	}
	if len(b) > 0 && b[0] == '"' {
		var v string
		if err := json.Unmarshal(b, &v); err != nil {
			return err
		}
		*s = flexString(v)
		return nil
	}
	var n json.Number
	if err := json.Unmarshal(b, &n); err != nil {
		return err
	}
	*s = flexString(n.String())
	return nil
}

// flexInt decodes an int64 sent as a number or as a string (protobuf JSON).
type flexInt int64

func (i *flexInt) UnmarshalJSON(b []byte) error {
	if bytes.Equal(b, []byte("null")) {
		return nil
	}
	s := strings.Trim(string(b), `"`)
	if s == "" {
		return nil
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		f, ferr := strconv.ParseFloat(s, 64)
		if ferr != nil {
			return err
		}
		v = int64(f)
	}
	*i = flexInt(v)
	return nil
}

// flexFloat is a metric value: a number, or "NaN"/"Infinity"/"-Infinity"
// strings; MLflow's SQL store answers +Inf as the largest float, which is
// read back as +Inf.
type flexFloat float64

func (f flexFloat) MarshalJSON() ([]byte, error) {
	v := float64(f)
	switch {
	case math.IsNaN(v):
		return []byte(`"NaN"`), nil
	case math.IsInf(v, 1):
		return []byte(`"Infinity"`), nil
	case math.IsInf(v, -1):
		return []byte(`"-Infinity"`), nil
	}
	return json.Marshal(v)
}

func (f *flexFloat) UnmarshalJSON(b []byte) error {
	s := strings.Trim(string(b), `"`)
	switch strings.ToLower(s) {
	case "nan":
		*f = flexFloat(math.NaN())
		return nil
	case "infinity", "inf", "+infinity", "+inf":
		*f = flexFloat(math.Inf(1))
		return nil
	case "-infinity", "-inf":
		*f = flexFloat(math.Inf(-1))
		return nil
	case "null", "":
		*f = 0
		return nil
	}
	v, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return err
	}
	switch {
	case v >= math.MaxFloat64:
		v = math.Inf(1)
	case v <= -math.MaxFloat64:
		v = math.Inf(-1)
	}
	*f = flexFloat(v)
	return nil
}

type kv struct {
	Key   string `json:"key"`
	Value string `json:"value"`
}

type wireMetric struct {
	Key       string    `json:"key"`
	Value     flexFloat `json:"value"`
	Timestamp flexInt   `json:"timestamp"`
	Step      flexInt   `json:"step"`
}

type wireExperiment struct {
	ExperimentID     flexString `json:"experiment_id"`
	Name             string     `json:"name"`
	ArtifactLocation string     `json:"artifact_location"`
	LifecycleStage   string     `json:"lifecycle_stage"`
	Tags             []kv       `json:"tags"`
}

type wireRunInfo struct {
	RunID          flexString `json:"run_id"`
	RunUUID        flexString `json:"run_uuid"`
	RunName        string     `json:"run_name"`
	ExperimentID   flexString `json:"experiment_id"`
	Status         string     `json:"status"`
	StartTime      flexInt    `json:"start_time"`
	EndTime        flexInt    `json:"end_time"`
	ArtifactURI    string     `json:"artifact_uri"`
	LifecycleStage string     `json:"lifecycle_stage"`
}

type wireDataset struct {
	Name       string `json:"name"`
	Digest     string `json:"digest"`
	SourceType string `json:"source_type"`
	Source     string `json:"source"`
	Schema     string `json:"schema,omitempty"`
	Profile    string `json:"profile,omitempty"`
}

type wireDatasetInput struct {
	Tags    []kv        `json:"tags,omitempty"`
	Dataset wireDataset `json:"dataset"`
}

type wireRun struct {
	Info wireRunInfo `json:"info"`
	Data struct {
		Metrics []wireMetric `json:"metrics"`
		Params  []kv         `json:"params"`
		Tags    []kv         `json:"tags"`
	} `json:"data"`
	Inputs struct {
		DatasetInputs []wireDatasetInput `json:"dataset_inputs"`
	} `json:"inputs"`
}

// modelVersionReply is the answer of the calls that return one version.
type modelVersionReply struct {
	ModelVersion wireModelVersion `json:"model_version"`
}

type wireModelVersion struct {
	Name    string     `json:"name"`
	Version flexString `json:"version"`
	Source  string     `json:"source"`
	RunID   flexString `json:"run_id"`
	Status  string     `json:"status"`
	Aliases []string   `json:"aliases"`
	Desc    string     `json:"description"`
	Tags    []kv       `json:"tags"`
}

type wireFileInfo struct {
	Path     string  `json:"path"`
	IsDir    bool    `json:"is_dir"`
	FileSize flexInt `json:"file_size"`
}

func (w wireRunInfo) info() tracker.RunInfo {
	id := string(w.RunID)
	if id == "" {
		id = string(w.RunUUID)
	}
	return tracker.RunInfo{
		ID: id, ExperimentID: string(w.ExperimentID), Name: w.RunName,
		Status: tracker.RunStatus(w.Status), StartTime: int64(w.StartTime), EndTime: int64(w.EndTime),
		ArtifactURI: w.ArtifactURI, LifecycleStage: w.LifecycleStage,
	}
}

func (w wireRun) run() tracker.Run {
	r := tracker.Run{Info: w.Info.info(), Params: map[string]string{}, Metrics: map[string]tracker.Metric{}, Tags: map[string]string{}}
	for _, p := range w.Data.Params {
		r.Params[p.Key] = p.Value
	}
	for _, t := range w.Data.Tags {
		r.Tags[t.Key] = t.Value
	}
	for _, m := range w.Data.Metrics {
		r.Metrics[m.Key] = m.metric()
	}
	if r.Info.Name == "" {
		r.Info.Name = r.Tags[tracker.TagRunName]
	}
	for _, in := range w.Inputs.DatasetInputs {
		d := tracker.Dataset{Name: in.Dataset.Name, Digest: in.Dataset.Digest, SourceType: in.Dataset.SourceType,
			Source: in.Dataset.Source, Schema: in.Dataset.Schema, Profile: in.Dataset.Profile}
		for _, t := range in.Tags {
			if t.Key == tracker.TagDatasetContext {
				d.Context = t.Value
			}
		}
		r.Datasets = append(r.Datasets, d)
	}
	return r
}

func (m wireMetric) metric() tracker.Metric {
	return tracker.Metric{Key: m.Key, Value: float64(m.Value), Timestamp: int64(m.Timestamp), Step: int64(m.Step)}
}

func (w wireModelVersion) version() tracker.ModelVersion {
	v := tracker.ModelVersion{Name: w.Name, Version: string(w.Version), Source: w.Source, RunID: string(w.RunID), Status: w.Status, Aliases: w.Aliases, Description: w.Desc}
	if len(w.Tags) > 0 {
		v.Tags = make(map[string]string, len(w.Tags))
		for _, t := range w.Tags {
			v.Tags[t.Key] = t.Value
		}
	}
	return v
}

func toKV[T tracker.Param | tracker.Tag](in []T) []kv {
	out := make([]kv, len(in))
	for i, x := range in {
		switch v := any(x).(type) {
		case tracker.Param:
			out[i] = kv{v.Key, v.Value}
		case tracker.Tag:
			out[i] = kv{v.Key, v.Value}
		}
	}
	return out
}

func mapToKV(m map[string]string) []kv {
	out := make([]kv, 0, len(m))
	for k, v := range m {
		out = append(out, kv{k, v})
	}
	return out
}
