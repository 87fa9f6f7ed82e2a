package binarydata

import (
	"encoding/json"
	"strconv"

	"github.com/flywheel-ml/flywheel/server/tensorjson"
)

// Output is one tensor of an infer response.
type Output struct {
	Name     string
	DataType string
	Shape    []int64
	Data     any // typed slice, as in tensorjson and Decode
	// Binary sends Data after the JSON object with a binary_data_size
	// parameter instead of a "data" array.
	Binary bool
}

// Response is an Open Inference Protocol infer response.
type Response struct {
	ModelName    string
	ModelVersion string
	ID           string         // omitted when empty
	Parameters   map[string]any // omitted when empty
	Outputs      []Output
}

// WantBinary decides whether an output is sent as binary data, from the
// request's "binary_data_output" parameter and the requested output's
// "binary_data" parameter (nil when absent); the output's setting wins.
func WantBinary(requestBinaryDataOutput, outputBinaryData any) bool {
	if b, ok := outputBinaryData.(bool); ok {
		return b
	}
	b, _ := requestBinaryDataOutput.(bool)
	return b
}

// AppendResponse appends the response body to dst: the JSON object, then the
// binary blocks of the outputs marked Binary, in output order. headerLength
// is the JSON object's length, to send as Inference-Header-Content-Length
// (with Content-Type application/octet-stream) when binary is true; when no
// output is binary the body is plain JSON and no header is needed.
func AppendResponse(dst []byte, r Response) (body []byte, headerLength int, binary bool, err error) {
	start := len(dst)
	dst = append(dst, `{"model_name":`...)
	dst = tensorjson.AppendString(dst, r.ModelName)
	dst = append(dst, `,"model_version":`...)
	dst = tensorjson.AppendString(dst, r.ModelVersion)
	if r.ID != "" {
		dst = append(dst, `,"id":`...)
		dst = tensorjson.AppendString(dst, r.ID)
	}
	if len(r.Parameters) > 0 {
		p, err := json.Marshal(r.Parameters) // small and rare: not worth a hand encoder
		if err != nil {
			return dst, 0, false, err
		}
		dst = append(dst, `,"parameters":`...)
		dst = append(dst, p...)
	}
	dst = append(dst, `,"outputs":[`...)
	for i, o := range r.Outputs {
		if i > 0 {
			dst = append(dst, ',')
		}
		if !o.Binary {
			if dst, err = tensorjson.AppendTensor(dst, o.Name, o.DataType, o.Shape, o.Data); err != nil {
				return dst, 0, false, err
			}
			continue
		}
		binary = true
		dst = append(dst, `{"name":`...)
		dst = tensorjson.AppendString(dst, o.Name)
		dst = append(dst, `,"datatype":`...)
		dst = tensorjson.AppendString(dst, o.DataType)
		dst = append(dst, `,"shape":`...)
		dst = tensorjson.AppendShape(dst, o.Shape)
		dst = append(dst, `,"parameters":{"binary_data_size":`...)
		dst = strconv.AppendInt(dst, int64(binarySize(o.DataType, o.Data)), 10)
		dst = append(dst, `}}`...)
	}
	dst = append(dst, "]}"...)
	headerLength = len(dst) - start
	for _, o := range r.Outputs {
		if o.Binary {
			if dst, err = Append(dst, o.DataType, o.Data); err != nil {
				return dst, 0, false, err
			}
		}
	}
	return dst, headerLength, binary, nil
}

// binarySize returns the byte length Append will write for data.
func binarySize(datatype string, data any) int {
	if s, ok := data.([]float32); ok && (datatype == "FP16" || datatype == "BF16") {
		return 2 * len(s)
	}
	switch s := data.(type) {
	case []bool:
		return len(s)
	case []int8:
		return len(s)
	case []uint8:
		return len(s)
	case []int16:
		return 2 * len(s)
	case []uint16:
		return 2 * len(s)
	case []int32:
		return 4 * len(s)
	case []uint32:
		return 4 * len(s)
	case []float32:
		return 4 * len(s)
	case []int64:
		return 8 * len(s)
	case []uint64:
		return 8 * len(s)
	case []float64:
		return 8 * len(s)
	case []string:
		n := 0
		for _, v := range s {
			n += 4 + len(v)
		}
		return n
	}
	return 0
}
