// Package binarydata implements Triton's binary tensor data extension to the
// Open Inference Protocol REST API (triton-inference-server/server
// docs/protocol/extension_binary_data.md):
//
//   - A request or response body is a JSON object followed by raw tensor
//     bytes; the Inference-Header-Content-Length header gives the JSON
//     object's length, Content-Length the whole body's.
//   - An input (or output) whose data travels as bytes carries the int64
//     parameter "binary_data_size" instead of "data"; the byte blocks follow
//     the JSON in the order the tensors are listed.
//   - A requested output with parameter "binary_data": true, or every output
//     when the request has "binary_data_output": true (unless the output says
//     otherwise), is answered as bytes.
//   - Bytes are little-endian, row-major, without padding, in the datatype's
//     native size; BOOL is one byte 0 or 1; BYTES elements are a 4-byte
//     little-endian length followed by the bytes.
//
// The server advertises the extension as "binary_tensor_data" in GET /v2.
package binarydata

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strconv"
	"unsafe"

	"github.com/flywheel-ml/flywheel/server/tensor"
)

// Names from the extension.
const (
	Extension             = "binary_tensor_data"
	HeaderContentLength   = "Inference-Header-Content-Length"
	ParamBinaryDataSize   = "binary_data_size"
	ParamBinaryData       = "binary_data"
	ParamBinaryDataOutput = "binary_data_output"
	ContentType           = "application/octet-stream"
)

// ErrFormat marks a body or tensor that does not follow the extension; the
// API answers 400 with the message.
var ErrFormat = errors.New("binary tensor data")

func formatErr(format string, a ...any) error {
	return fmt.Errorf("%w: %s", ErrFormat, fmt.Sprintf(format, a...))
}

// Split separates a request body into its JSON object and the binary tail.
// headerLength is the Inference-Header-Content-Length header value; when it
// is empty the whole body is JSON and tail is nil.
func Split(body []byte, headerLength string) (jsonPart, tail []byte, err error) {
	if headerLength == "" {
		return body, nil, nil
	}
	n, err := strconv.ParseInt(headerLength, 10, 64)
	if err != nil || n < 0 {
		return nil, nil, formatErr("%s %q is not a byte count", HeaderContentLength, headerLength)
	}
	if n > int64(len(body)) {
		return nil, nil, formatErr("%s %d exceeds the body length %d", HeaderContentLength, n, len(body))
	}
	return body[:n], body[n:], nil
}

// Tail hands out the binary blocks that follow the JSON object, in order.
type Tail struct {
	b   []byte
	off int
}

// NewTail returns a Tail over b.
func NewTail(b []byte) *Tail { return &Tail{b: b} }

// Next returns the next size bytes: the block of the next tensor that has a
// binary_data_size parameter.
func (t *Tail) Next(size int64) ([]byte, error) {
	if size < 0 {
		return nil, formatErr("%s %d is negative", ParamBinaryDataSize, size)
	}
	if size > int64(len(t.b)-t.off) {
		return nil, formatErr("%s %d exceeds the %d bytes left after the JSON header", ParamBinaryDataSize, size, len(t.b)-t.off)
	}
	blk := t.b[t.off : t.off+int(size) : t.off+int(size)]
	t.off += int(size)
	return blk, nil
}

// Done reports an error when bytes are left that no tensor claimed.
func (t *Tail) Done() error {
	if left := len(t.b) - t.off; left != 0 {
		return formatErr("%d bytes after the JSON header belong to no input (sum of %s is %d)", left, ParamBinaryDataSize, t.off)
	}
	return nil
}

// ElementSize returns the byte size of one element of datatype, 0 for BYTES
// (variable), or -1 for an unknown datatype.
func ElementSize(datatype string) int {
	switch datatype {
	case "BOOL", "INT8", "UINT8":
		return 1
	case "INT16", "UINT16", "FP16", "BF16":
		return 2
	case "INT32", "UINT32", "FP32":
		return 4
	case "INT64", "UINT64", "FP64":
		return 8
	case "BYTES":
		return 0
	}
	return -1
}

var littleEndian = func() bool { x := uint16(1); return *(*byte)(unsafe.Pointer(&x)) == 1 }()

// Decode converts one tensor's bytes to a typed slice as in server/tensor
// (FP32 []float32, FP64 []float64, INTn []intn, UINTn []uintn, FP16 and BF16
// widened to []float32, BOOL []bool, BYTES []string) holding exactly the
// elements of shape. On a little-endian machine, when raw is aligned for the
// element type, numeric slices share raw's memory (no copy): keep raw
// unchanged while they are used.
func Decode(raw []byte, datatype string, shape []int64) (any, error) {
	n, err := elements(shape)
	if err != nil {
		return nil, err
	}
	size := ElementSize(datatype)
	switch {
	case size < 0:
		return nil, formatErr("unknown datatype %q", datatype)
	case size == 0:
		return decodeBytes(raw, n)
	case len(raw) != n*size:
		return nil, formatErr("%d bytes for %s shape %v, want %d", len(raw), datatype, shape, n*size)
	}
	switch datatype {
	case "BOOL":
		for i, c := range raw {
			if c > 1 {
				return nil, formatErr("BOOL byte %d is %d, want 0 or 1", i, c)
			}
		}
		return view[bool](raw, n, nil), nil
	case "INT8":
		return view[int8](raw, n, nil), nil
	case "UINT8":
		return view[uint8](raw, n, nil), nil
	case "INT16":
		return view(raw, n, func(b []byte) int16 { return int16(binary.LittleEndian.Uint16(b)) }), nil
	case "UINT16":
		return view(raw, n, binary.LittleEndian.Uint16), nil
	case "FP16", "BF16":
		conv := tensor.HalfToFloat32
		if datatype == "BF16" {
			conv = tensor.BFloat16ToFloat32
		}
		out := make([]float32, n)
		for i := range out {
			out[i] = conv(binary.LittleEndian.Uint16(raw[2*i:]))
		}
		return out, nil
	case "INT32":
		return view(raw, n, func(b []byte) int32 { return int32(binary.LittleEndian.Uint32(b)) }), nil
	case "UINT32":
		return view(raw, n, binary.LittleEndian.Uint32), nil
	case "FP32":
		return view(raw, n, func(b []byte) float32 { return math.Float32frombits(binary.LittleEndian.Uint32(b)) }), nil
	case "INT64":
		return view(raw, n, func(b []byte) int64 { return int64(binary.LittleEndian.Uint64(b)) }), nil
	case "UINT64":
		return view(raw, n, binary.LittleEndian.Uint64), nil
	default: // FP64
		return view(raw, n, func(b []byte) float64 { return math.Float64frombits(binary.LittleEndian.Uint64(b)) }), nil
	}
}

// view returns raw as n elements of T: in place when the machine is little
// endian and raw is aligned, else decoded element by element with get.
func view[T any](raw []byte, n int, get func([]byte) T) []T {
	if n == 0 {
		return []T{}
	}
	var zero T
	size := int(unsafe.Sizeof(zero))
	if littleEndian && uintptr(unsafe.Pointer(&raw[0]))%unsafe.Alignof(zero) == 0 {
		return unsafe.Slice((*T)(unsafe.Pointer(&raw[0])), n)
	}
	out := make([]T, n)
	for i := range out {
		if get == nil { // single bytes: always aligned, only reached on big endian
			out[i] = *(*T)(unsafe.Pointer(&raw[i]))
			continue
		}
		out[i] = get(raw[i*size:])
	}
	return out
}

func decodeBytes(raw []byte, n int) ([]string, error) {
	out := make([]string, 0, min(n, len(raw)/4))
	for i := 0; i < n; i++ {
		if len(raw) < 4 {
			return nil, formatErr("BYTES element %d: truncated length prefix", i)
		}
		l := binary.LittleEndian.Uint32(raw)
		raw = raw[4:]
		if uint64(l) > uint64(len(raw)) {
			return nil, formatErr("BYTES element %d: length %d exceeds the %d bytes left", i, l, len(raw))
		}
		out = append(out, string(raw[:l]))
		raw = raw[l:]
	}
	if len(raw) != 0 {
		return nil, formatErr("%d bytes left after %d BYTES elements", len(raw), n)
	}
	return out, nil
}

func elements(shape []int64) (int, error) {
	n, ok := tensor.Elements(shape, math.MaxInt32)
	if !ok {
		return 0, formatErr("shape %v has a negative dimension or more than %d elements", shape, math.MaxInt32)
	}
	return int(n), nil
}

// Append appends data's binary form (see Decode for the types) to dst.
// datatype matters only for FP16 and BF16, whose []float32 data is narrowed
// to 2 bytes per element (rounding to nearest even).
func Append(dst []byte, datatype string, data any) ([]byte, error) {
	if datatype == "FP16" || datatype == "BF16" {
		s, ok := data.([]float32)
		if !ok {
			return dst, formatErr("%s data must be []float32, got %T", datatype, data)
		}
		conv := tensor.Float32ToHalf
		if datatype == "BF16" {
			conv = tensor.Float32ToBFloat16
		}
		for _, v := range s {
			dst = binary.LittleEndian.AppendUint16(dst, conv(v))
		}
		return dst, nil
	}
	switch s := data.(type) {
	case []bool:
		for _, v := range s {
			b := byte(0)
			if v {
				b = 1
			}
			dst = append(dst, b)
		}
	case []int8:
		dst = appendRaw(dst, s)
	case []uint8:
		dst = append(dst, s...)
	case []int16:
		dst = appendRaw(dst, s)
	case []uint16:
		dst = appendRaw(dst, s)
	case []int32:
		dst = appendRaw(dst, s)
	case []uint32:
		dst = appendRaw(dst, s)
	case []float32:
		dst = appendRaw(dst, s)
	case []int64:
		dst = appendRaw(dst, s)
	case []uint64:
		dst = appendRaw(dst, s)
	case []float64:
		dst = appendRaw(dst, s)
	case []string:
		for _, v := range s {
			if int64(len(v)) > math.MaxUint32 {
				return dst, formatErr("BYTES element of %d bytes is too long", len(v))
			}
			dst = binary.LittleEndian.AppendUint32(dst, uint32(len(v)))
			dst = append(dst, v...)
		}
	default:
		return dst, formatErr("cannot encode data of type %T", data)
	}
	return dst, nil
}

// appendRaw appends the little-endian bytes of fixed-size numbers.
func appendRaw[T int8 | int16 | uint16 | int32 | uint32 | float32 | int64 | uint64 | float64](dst []byte, s []T) []byte {
	if len(s) == 0 {
		return dst
	}
	size := int(unsafe.Sizeof(s[0]))
	if littleEndian {
		return append(dst, unsafe.Slice((*byte)(unsafe.Pointer(&s[0])), len(s)*size)...)
	}
	for _, v := range s {
		var u uint64
		switch size {
		case 1:
			dst = append(dst, *(*byte)(unsafe.Pointer(&v)))
			continue
		case 2:
			u = uint64(*(*uint16)(unsafe.Pointer(&v)))
			dst = binary.LittleEndian.AppendUint16(dst, uint16(u))
		case 4:
			u = uint64(*(*uint32)(unsafe.Pointer(&v)))
			dst = binary.LittleEndian.AppendUint32(dst, uint32(u))
		default:
			dst = binary.LittleEndian.AppendUint64(dst, *(*uint64)(unsafe.Pointer(&v)))
		}
	}
	return dst
}
