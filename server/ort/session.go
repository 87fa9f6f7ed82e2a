package ort

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"reflect"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	ortgo "github.com/yalue/onnxruntime_go"

	"github.com/flywheel-ml/flywheel/internal/modelrepo"
	"github.com/flywheel-ml/flywheel/server/tensor"
)

// SessionOptions are the ONNX Runtime session settings a model may tune in
// its config.yaml. The zero value is not useful; start from
// DefaultSessionOptions.
type SessionOptions struct {
	IntraOpThreads int // threads inside one operator; 1 suits a small shared box
	InterOpThreads int // threads across independent operators (parallel mode only)
	// GraphOptimization is one of "disabled", "basic", "extended", "all".
	GraphOptimization string
	// Spinning lets idle ORT threads busy-wait for work; off by default so
	// idle servers use no CPU.
	Spinning bool
	// MemArena keeps ONNX Runtime's CPU memory arena: freed tensors stay
	// reserved for the next run. Off by default, so one request that made
	// a model produce a huge tensor does not keep that memory resident.
	MemArena bool
	// MaxOutputElements caps the elements of one output of one run; a
	// larger output (a model whose output size comes from its input, such
	// as ConstantOfShape or Expand) fails with ErrOutputTooLarge before it
	// is encoded or logged. 0: no cap.
	MaxOutputElements int64
}

// DefaultMaxOutputElements is the default cap of one output: 8 Mi elements
// (32 MiB of FP32).
const DefaultMaxOutputElements = 8 << 20

// ErrOutputTooLarge is returned by Run for an output above
// MaxOutputElements.
var ErrOutputTooLarge = errors.New("model output too large")

// DefaultSessionOptions suit a 2-core machine shared with other services:
// one intra-op thread, one inter-op thread, no spinning, all graph
// optimisations.
func DefaultSessionOptions() SessionOptions {
	return SessionOptions{IntraOpThreads: 1, InterOpThreads: 1, GraphOptimization: "all", MaxOutputElements: DefaultMaxOutputElements}
}

// Validate checks the options' ranges and names.
func (o SessionOptions) Validate() error {
	if o.IntraOpThreads < 0 || o.IntraOpThreads > 256 {
		return fmt.Errorf("intra_op_threads %d must be between 0 (ORT default) and 256", o.IntraOpThreads)
	}
	if o.InterOpThreads < 0 || o.InterOpThreads > 256 {
		return fmt.Errorf("inter_op_threads %d must be between 0 (ORT default) and 256", o.InterOpThreads)
	}
	if _, err := optLevel(o.GraphOptimization); err != nil {
		return err
	}
	if o.MaxOutputElements < 0 {
		return fmt.Errorf("max_output_elements %d must not be negative", o.MaxOutputElements)
	}
	return nil
}

func optLevel(s string) (ortgo.GraphOptimizationLevel, error) {
	switch s {
	case "", "all":
		return ortgo.GraphOptimizationLevelEnableAll, nil
	case "extended":
		return ortgo.GraphOptimizationLevelEnableExtended, nil
	case "basic":
		return ortgo.GraphOptimizationLevelEnableBasic, nil
	case "disabled":
		return ortgo.GraphOptimizationLevelDisableAll, nil
	}
	return 0, fmt.Errorf("graph_optimization_level %q must be one of disabled, basic, extended, all", s)
}

// ErrClosed is returned by Run on a closed session.
var ErrClosed = errors.New("session closed")

// live counts open sessions in the process (see LiveSessions).
var live atomic.Int64

// LiveSessions returns the number of sessions created and not yet closed.
func LiveSessions() int64 { return live.Load() }

// Session is one loaded ONNX model. Run is safe for concurrent use; Close
// must only be called once no Run is in flight (the repository's reference
// counting guarantees that).
type Session struct {
	s       *ortgo.DynamicAdvancedSession
	inputs  []tensor.Spec
	outputs []tensor.Spec
	closeMu sync.Once
	// maxOutput caps the elements of one output (0: none).
	maxOutput int64
}

// NewSession loads the model at path. ONNX Runtime must be initialised
// (Setup or Init). Models with non-tensor inputs are refused; non-tensor
// outputs (sequences, maps) are supported.
func NewSession(path string, opts SessionOptions) (*Session, error) {
	if !ortgo.IsInitialized() {
		return nil, errors.New("ONNX Runtime is not initialised")
	}
	// model.onnx must be a regular file (a FIFO would block the loader, a
	// link to /dev/zero would be read without end), and ONNX Runtime loads
	// it by path so that external data resolves inside the version folder
	// (ORT refuses locations that escape it); loaded from bytes, external
	// data resolved against serve's working directory.
	if err := modelrepo.CheckRegular(path, modelrepo.MaxModelBytes); err != nil {
		return nil, fmt.Errorf("reading model: %w", err)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("reading model: %w", err)
	}
	so, err := sessionOptions(opts)
	if err != nil {
		return nil, err
	}
	defer so.Destroy()
	if err := so.AddSessionConfigEntry("session.model_external_initializers_file_folder_path", filepath.Dir(abs)); err != nil {
		return nil, fmt.Errorf("setting session options: %w", err)
	}
	inInfo, outInfo, err := ortgo.GetInputOutputInfoWithOptions(abs, so)
	if err != nil {
		return nil, fmt.Errorf("reading model signature: %w", err)
	}
	s := &Session{maxOutput: opts.MaxOutputElements}
	names := func(infos []ortgo.InputOutputInfo) []string {
		out := make([]string, len(infos))
		for i, in := range infos {
			out[i] = in.Name
		}
		return out
	}
	for _, in := range inInfo {
		spec, err := specOf(in)
		if err != nil {
			return nil, fmt.Errorf("input %q: %w", in.Name, err)
		}
		if spec.DataType == tensor.Sequence || spec.DataType == tensor.Map {
			return nil, fmt.Errorf("input %q is a %s: only tensor inputs can be served", in.Name, in.OrtValueType)
		}
		s.inputs = append(s.inputs, spec)
	}
	for _, out := range outInfo {
		spec, err := specOf(out)
		if err != nil {
			return nil, fmt.Errorf("output %q: %w", out.Name, err)
		}
		s.outputs = append(s.outputs, spec)
	}
	ds, err := ortgo.NewDynamicAdvancedSession(abs, names(inInfo), names(outInfo), so)
	if err != nil {
		return nil, fmt.Errorf("creating session: %w", err)
	}
	s.s = ds
	live.Add(1)
	return s, nil
}

func sessionOptions(o SessionOptions) (*ortgo.SessionOptions, error) {
	if err := o.Validate(); err != nil {
		return nil, err
	}
	so, err := ortgo.NewSessionOptions()
	if err != nil {
		return nil, fmt.Errorf("creating session options: %w", err)
	}
	lvl, _ := optLevel(o.GraphOptimization)
	spin := "0"
	if o.Spinning {
		spin = "1"
	}
	steps := []error{
		so.SetIntraOpNumThreads(o.IntraOpThreads),
		so.SetInterOpNumThreads(o.InterOpThreads),
		so.SetGraphOptimizationLevel(lvl),
		so.SetCpuMemArena(o.MemArena),
		so.AddSessionConfigEntry("session.intra_op.allow_spinning", spin),
		so.AddSessionConfigEntry("session.inter_op.allow_spinning", spin),
	}
	if MemoryLimit() > 0 {
		// the shared, capped arena registered by LimitMemory
		steps = append(steps, so.AddSessionConfigEntry("session.use_env_allocators", "1"))
	}
	if err := errors.Join(steps...); err != nil {
		so.Destroy()
		return nil, fmt.Errorf("setting session options: %w", err)
	}
	return so, nil
}

func specOf(info ortgo.InputOutputInfo) (tensor.Spec, error) {
	switch info.OrtValueType {
	case ortgo.ONNXTypeTensor:
		dt, err := dataTypeOf(info.DataType)
		if err != nil {
			return tensor.Spec{}, err
		}
		shape := make([]int64, len(info.Dimensions))
		for i, d := range info.Dimensions {
			if d < 0 {
				d = -1
			}
			shape[i] = d
		}
		return tensor.Spec{Name: info.Name, DataType: dt, Shape: shape}, nil
	case ortgo.ONNXTypeSequence:
		return tensor.Spec{Name: info.Name, DataType: tensor.Sequence, Shape: []int64{-1}}, nil
	case ortgo.ONNXTypeMap:
		return tensor.Spec{Name: info.Name, DataType: tensor.Map, Shape: []int64{-1}}, nil
	}
	return tensor.Spec{}, fmt.Errorf("ONNX value type %s is not supported", info.OrtValueType)
}

var elemTypes = map[ortgo.TensorElementDataType]tensor.DataType{
	ortgo.TensorElementDataTypeBool:     tensor.Bool,
	ortgo.TensorElementDataTypeUint8:    tensor.Uint8,
	ortgo.TensorElementDataTypeUint16:   tensor.Uint16,
	ortgo.TensorElementDataTypeUint32:   tensor.Uint32,
	ortgo.TensorElementDataTypeUint64:   tensor.Uint64,
	ortgo.TensorElementDataTypeInt8:     tensor.Int8,
	ortgo.TensorElementDataTypeInt16:    tensor.Int16,
	ortgo.TensorElementDataTypeInt32:    tensor.Int32,
	ortgo.TensorElementDataTypeInt64:    tensor.Int64,
	ortgo.TensorElementDataTypeFloat16:  tensor.FP16,
	ortgo.TensorElementDataTypeBFloat16: tensor.BF16,
	ortgo.TensorElementDataTypeFloat:    tensor.FP32,
	ortgo.TensorElementDataTypeDouble:   tensor.FP64,
	ortgo.TensorElementDataTypeString:   tensor.Bytes,
}

func dataTypeOf(t ortgo.TensorElementDataType) (tensor.DataType, error) {
	if dt, ok := elemTypes[t]; ok {
		return dt, nil
	}
	return "", fmt.Errorf("tensor element type %s has no Open Inference Protocol datatype", t)
}

// Inputs returns the model's input signature (-1 = dynamic dimension).
func (s *Session) Inputs() []tensor.Spec { return s.inputs }

// Outputs returns the model's output signature.
func (s *Session) Outputs() []tensor.Spec { return s.outputs }

// Run executes the model on inputs, given in the order of Inputs(), and
// returns every output in the order of Outputs(). Cancelling ctx terminates
// a running execution.
func (s *Session) Run(ctx context.Context, inputs []tensor.Tensor) ([]tensor.Tensor, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if len(inputs) != len(s.inputs) {
		return nil, fmt.Errorf("got %d inputs, the model takes %d", len(inputs), len(s.inputs))
	}
	in := make([]ortgo.Value, len(inputs))
	defer func() {
		for _, v := range in {
			if v != nil {
				v.Destroy()
			}
		}
	}()
	for i, t := range inputs {
		v, err := toValue(t)
		if err != nil {
			return nil, fmt.Errorf("input %q: %w", t.Name, err)
		}
		in[i] = v
	}
	out := make([]ortgo.Value, len(s.outputs))
	defer func() {
		for _, v := range out {
			if v != nil && !reflect.ValueOf(v).IsNil() {
				v.Destroy()
			}
		}
	}()
	// onnxruntime_go v1.27.0 copies only one byte per element when it
	// allocates a 16-bit float output itself, so those outputs are
	// allocated here; that needs a static shape.
	for i, spec := range s.outputs {
		if spec.DataType != tensor.FP16 && spec.DataType != tensor.BF16 {
			continue
		}
		n, ok := tensor.Elements(spec.Shape, 1<<40)
		if !ok || len(spec.Shape) == 0 {
			return nil, fmt.Errorf("output %q: %s outputs need a static shape (have %v)", spec.Name, spec.DataType, spec.Shape)
		}
		et := ortgo.TensorElementDataType(ortgo.TensorElementDataTypeFloat16)
		if spec.DataType == tensor.BF16 {
			et = ortgo.TensorElementDataTypeBFloat16
		}
		v, err := ortgo.NewCustomDataTensor(ortgo.Shape(spec.Shape), make([]byte, max(2, 2*n)), et)
		if err != nil {
			return nil, fmt.Errorf("output %q: %w", spec.Name, err)
		}
		out[i] = v
	}
	var ro *ortgo.RunOptions
	if ctx.Done() != nil {
		var err error
		if ro, err = ortgo.NewRunOptions(); err != nil {
			return nil, fmt.Errorf("creating run options: %w", err)
		}
		defer ro.Destroy()
		stop := context.AfterFunc(ctx, func() { _ = ro.Terminate() })
		defer stop()
	}
	if s.s == nil {
		return nil, ErrClosed
	}
	if err := s.s.RunWithOptions(in, out, ro); err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if lim := MemoryLimit(); lim > 0 && isAllocFailure(err) {
			n, ok := requestedBytes(err)
			switch {
			case ok && n <= lim:
				return nil, fmt.Errorf("%w: a tensor of %d bytes did not fit in the limit of %d bytes (--ort-max-memory)", ErrMemoryBusy, n, lim)
			case ok:
				return nil, fmt.Errorf("%w: a tensor of %d bytes is more than the limit of %d bytes (--ort-max-memory)", ErrMemoryLimit, n, lim)
			}
			return nil, fmt.Errorf("%w: the run needed more than the limit of %d bytes (--ort-max-memory): %s", ErrMemoryLimit, lim, firstLine(err))
		}
		return nil, fmt.Errorf("running model: %w", err)
	}
	if err := s.checkOutputs(out); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil { // ran past the deadline inside one operator
		return nil, err
	}
	res := make([]tensor.Tensor, len(out))
	for i, v := range out {
		t, err := fromValue(v)
		if err != nil {
			return nil, fmt.Errorf("output %q: %w", s.outputs[i].Name, err)
		}
		t.Name = s.outputs[i].Name
		res[i] = t
	}
	return res, nil
}

// checkOutputs refuses outputs above the session's element cap. The values
// are in Go memory already (onnxruntime_go copies ORT's outputs); dropping
// them and returning the heap to the OS keeps RSS where it was.
func (s *Session) checkOutputs(out []ortgo.Value) error {
	if s.maxOutput <= 0 {
		return nil
	}
	for i, v := range out {
		if v == nil || reflect.ValueOf(v).IsNil() {
			continue
		}
		if n := v.GetShape().FlattenedSize(); n > s.maxOutput {
			err := fmt.Errorf("%w: output %q has %d elements (shape %v), more than the limit of %d (--max-output-elements)",
				ErrOutputTooLarge, s.outputs[i].Name, n, []int64(v.GetShape()), s.maxOutput)
			for j, w := range out {
				if w != nil && !reflect.ValueOf(w).IsNil() {
					w.Destroy()
				}
				out[j] = nil
			}
			go debug.FreeOSMemory()
			return err
		}
	}
	return nil
}

// Close releases the session. It is safe to call more than once.
func (s *Session) Close() error {
	var err error
	s.closeMu.Do(func() {
		if s.s != nil {
			err = s.s.Destroy()
			live.Add(-1)
		}
	})
	return err
}

func newTensor[T ortgo.TensorData](shape []int64, data []T) (ortgo.Value, error) {
	if len(shape) == 0 {
		if len(data) != 1 {
			return nil, fmt.Errorf("scalar needs 1 element, got %d", len(data))
		}
		return ortgo.NewScalar(data[0])
	}
	return ortgo.NewTensor(ortgo.Shape(shape), data)
}

func toValue(t tensor.Tensor) (ortgo.Value, error) {
	n, ok := tensor.Elements(t.Shape, 1<<40)
	if !ok || int64(t.Len()) != n {
		return nil, fmt.Errorf("%d elements do not fill shape %v", t.Len(), t.Shape)
	}
	switch d := t.Data.(type) {
	case []bool:
		return newTensor(t.Shape, d)
	case []uint8:
		return newTensor(t.Shape, d)
	case []uint16:
		return newTensor(t.Shape, d)
	case []uint32:
		return newTensor(t.Shape, d)
	case []uint64:
		return newTensor(t.Shape, d)
	case []int8:
		return newTensor(t.Shape, d)
	case []int16:
		return newTensor(t.Shape, d)
	case []int32:
		return newTensor(t.Shape, d)
	case []int64:
		return newTensor(t.Shape, d)
	case []float64:
		return newTensor(t.Shape, d)
	case []float32:
		switch t.DataType {
		case tensor.FP16, tensor.BF16:
			conv, et := tensor.Float32ToHalf, ortgo.TensorElementDataType(ortgo.TensorElementDataTypeFloat16)
			if t.DataType == tensor.BF16 {
				conv, et = tensor.Float32ToBFloat16, ortgo.TensorElementDataTypeBFloat16
			}
			buf := make([]byte, max(2, 2*len(d)))
			for i, f := range d {
				h := conv(f)
				buf[2*i], buf[2*i+1] = byte(h), byte(h>>8)
			}
			if len(t.Shape) == 0 {
				return nil, errors.New("16-bit float scalars are not supported")
			}
			return ortgo.NewCustomDataTensor(ortgo.Shape(t.Shape), buf, et)
		}
		return newTensor(t.Shape, d)
	case []string:
		if len(t.Shape) == 0 {
			return nil, errors.New("string scalars are not supported")
		}
		st, err := ortgo.NewStringTensor(ortgo.Shape(t.Shape))
		if err != nil {
			return nil, err
		}
		if err := st.SetContents(d); err != nil {
			st.Destroy()
			return nil, err
		}
		return st, nil
	}
	return nil, fmt.Errorf("unsupported data %T for datatype %s", t.Data, t.DataType)
}

func fromValue(v ortgo.Value) (tensor.Tensor, error) {
	if v == nil {
		return tensor.Tensor{}, errors.New("model returned no value")
	}
	shape := []int64(v.GetShape())
	switch x := v.(type) {
	case *ortgo.Tensor[bool]:
		return tensor.Tensor{DataType: tensor.Bool, Shape: shape, Data: x.GetData()}, nil
	case *ortgo.Tensor[uint8]:
		return tensor.Tensor{DataType: tensor.Uint8, Shape: shape, Data: x.GetData()}, nil
	case *ortgo.Tensor[uint16]:
		return tensor.Tensor{DataType: tensor.Uint16, Shape: shape, Data: x.GetData()}, nil
	case *ortgo.Tensor[uint32]:
		return tensor.Tensor{DataType: tensor.Uint32, Shape: shape, Data: x.GetData()}, nil
	case *ortgo.Tensor[uint64]:
		return tensor.Tensor{DataType: tensor.Uint64, Shape: shape, Data: x.GetData()}, nil
	case *ortgo.Tensor[int8]:
		return tensor.Tensor{DataType: tensor.Int8, Shape: shape, Data: x.GetData()}, nil
	case *ortgo.Tensor[int16]:
		return tensor.Tensor{DataType: tensor.Int16, Shape: shape, Data: x.GetData()}, nil
	case *ortgo.Tensor[int32]:
		return tensor.Tensor{DataType: tensor.Int32, Shape: shape, Data: x.GetData()}, nil
	case *ortgo.Tensor[int64]:
		return tensor.Tensor{DataType: tensor.Int64, Shape: shape, Data: x.GetData()}, nil
	case *ortgo.Tensor[float32]:
		return tensor.Tensor{DataType: tensor.FP32, Shape: shape, Data: x.GetData()}, nil
	case *ortgo.Tensor[float64]:
		return tensor.Tensor{DataType: tensor.FP64, Shape: shape, Data: x.GetData()}, nil
	case *ortgo.CustomDataTensor:
		et := ortgo.TensorElementDataType(x.DataType())
		conv := tensor.HalfToFloat32
		dt := tensor.FP16
		switch et {
		case ortgo.TensorElementDataTypeFloat16:
		case ortgo.TensorElementDataTypeBFloat16:
			conv, dt = tensor.BFloat16ToFloat32, tensor.BF16
		default:
			return tensor.Tensor{}, fmt.Errorf("tensor element type %s is not supported", et)
		}
		b := x.GetData()
		n, _ := tensor.Elements(shape, 1<<40)
		out := make([]float32, n)
		for i := range out {
			out[i] = conv(uint16(b[2*i]) | uint16(b[2*i+1])<<8)
		}
		return tensor.Tensor{DataType: dt, Shape: shape, Data: out}, nil
	case *ortgo.StringTensor:
		s, err := x.GetContents()
		if err != nil {
			return tensor.Tensor{}, err
		}
		return tensor.Tensor{DataType: tensor.Bytes, Shape: shape, Data: s}, nil
	case *ortgo.Sequence:
		vals, err := x.GetValues()
		if err != nil {
			return tensor.Tensor{}, err
		}
		items := make([]any, len(vals))
		for i, e := range vals {
			j, err := jsonValue(e)
			if err != nil {
				return tensor.Tensor{}, fmt.Errorf("sequence element %d: %w", i, err)
			}
			items[i] = j
		}
		return tensor.Tensor{DataType: tensor.Sequence, Shape: []int64{int64(len(items))}, Data: items}, nil
	case *ortgo.Map:
		m, err := mapValue(x)
		if err != nil {
			return tensor.Tensor{}, err
		}
		return tensor.Tensor{DataType: tensor.Map, Shape: []int64{int64(len(m))}, Data: m}, nil
	}
	return tensor.Tensor{}, fmt.Errorf("ONNX value %T is not supported", v)
}

// jsonValue converts a value nested in a sequence: maps become JSON
// objects, tensors become {"datatype","shape","data"} objects.
func jsonValue(v ortgo.Value) (any, error) {
	switch x := v.(type) {
	case *ortgo.Map:
		return mapValue(x)
	case *ortgo.Sequence:
		t, err := fromValue(x)
		if err != nil {
			return nil, err
		}
		return t.Data, nil
	}
	t, err := fromValue(v)
	if err != nil {
		return nil, err
	}
	return map[string]any{"datatype": t.DataType, "shape": t.Shape, "data": t.Data}, nil
}

// mapValue turns an ONNX map into a JSON object: keys are formatted as
// strings (JSON object keys must be), values keep their type.
func mapValue(m *ortgo.Map) (map[string]any, error) {
	kv, vv, err := m.GetKeysAndValues()
	if err != nil {
		return nil, err
	}
	keys, err := fromValue(kv)
	if err != nil {
		return nil, fmt.Errorf("map keys: %w", err)
	}
	vals, err := fromValue(vv)
	if err != nil {
		return nil, fmt.Errorf("map values: %w", err)
	}
	ks := keyStrings(keys.Data)
	out := make(map[string]any, len(ks))
	for i, k := range ks {
		out[k] = index(vals.Data, i)
	}
	return out, nil
}

func keyStrings(d any) []string {
	switch k := d.(type) {
	case []string:
		return k
	case []int64:
		out := make([]string, len(k))
		for i, v := range k {
			out[i] = strconv.FormatInt(v, 10)
		}
		return out
	}
	f, _ := tensor.Tensor{Data: d}.Float64s()
	out := make([]string, len(f))
	for i, v := range f {
		out[i] = strconv.FormatFloat(v, 'g', -1, 64)
	}
	return out
}

func index(d any, i int) any {
	switch v := d.(type) {
	case []float32:
		return v[i]
	case []float64:
		return v[i]
	case []int64:
		return v[i]
	case []string:
		return v[i]
	}
	f, ok := tensor.Tensor{Data: d}.Float64s()
	if ok && i < len(f) {
		return f[i]
	}
	return nil
}

// isAllocFailure reports whether a run error is ONNX Runtime failing to
// allocate memory (its arena's cap, or the system).
func isAllocFailure(err error) bool {
	m := err.Error()
	return strings.Contains(m, "Failed to allocate memory") || strings.Contains(m, "Available memory of") || strings.Contains(m, "bad_alloc")
}

// requestedBytes reads the size of the allocation ONNX Runtime's arena
// refused ("... smaller than requested bytes of N").
func requestedBytes(err error) (int64, bool) {
	const key = "requested bytes of "
	m := err.Error()
	i := strings.Index(m, key)
	if i < 0 {
		return 0, false
	}
	m = m[i+len(key):]
	j := 0
	for j < len(m) && m[j] >= '0' && m[j] <= '9' {
		j++
	}
	n, perr := strconv.ParseInt(m[:j], 10, 64)
	return n, perr == nil
}

// firstLine returns err's message up to its first line break.
func firstLine(err error) string {
	m, _, _ := strings.Cut(err.Error(), "\n")
	return strings.TrimSpace(m)
}
