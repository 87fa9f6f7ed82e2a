package tensorjson

import (
	"fmt"
	"math"
	"strconv"
	"sync"
	"unicode/utf8"
)

// Buffer is a pooled byte buffer for response bodies.
type Buffer struct{ B []byte }

var buffers = sync.Pool{New: func() any { return &Buffer{B: make([]byte, 0, 4096)} }}

// maxPooled keeps one huge response from pinning its buffer in the pool.
const maxPooled = 1 << 20

// GetBuffer returns an empty buffer from the pool.
func GetBuffer() *Buffer { return buffers.Get().(*Buffer) }

// PutBuffer returns b to the pool; b must not be used afterwards.
func PutBuffer(b *Buffer) {
	if cap(b.B) > maxPooled {
		return
	}
	b.B = b.B[:0]
	buffers.Put(b)
}

// AppendData appends data (a typed slice, see the package doc; FP16 and
// BF16 as []float32) to dst as a flat JSON array; any other type is an
// error and dst is returned unchanged. Floats use the shortest
// representation that reads back as the same value at their precision,
// formatted as encoding/json does; non-finite floats become null.
func AppendData(dst []byte, data any) ([]byte, error) {
	switch s := data.(type) {
	case []float32:
		return appendArray(dst, s, appendFloat32), nil
	case []float64:
		return appendArray(dst, s, appendFloat64), nil
	case []int8:
		return appendArray(dst, s, appendInt), nil
	case []int16:
		return appendArray(dst, s, appendInt), nil
	case []int32:
		return appendArray(dst, s, appendInt), nil
	case []int64:
		return appendArray(dst, s, appendInt), nil
	case []uint8:
		return appendArray(dst, s, appendUint), nil
	case []uint16:
		return appendArray(dst, s, appendUint), nil
	case []uint32:
		return appendArray(dst, s, appendUint), nil
	case []uint64:
		return appendArray(dst, s, appendUint), nil
	case []bool:
		return appendArray(dst, s, strconv.AppendBool), nil
	case []string:
		return appendArray(dst, s, AppendString), nil
	}
	return dst, fmt.Errorf("tensorjson: cannot encode data of type %T", data)
}

// appendArray appends s as a JSON array, each element written by elem.
func appendArray[T any](dst []byte, s []T, elem func([]byte, T) []byte) []byte {
	dst = append(dst, '[')
	for i, v := range s {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = elem(dst, v)
	}
	return append(dst, ']')
}

func appendInt[T int8 | int16 | int32 | int64](dst []byte, v T) []byte {
	return strconv.AppendInt(dst, int64(v), 10)
}

func appendUint[T uint8 | uint16 | uint32 | uint64](dst []byte, v T) []byte {
	return strconv.AppendUint(dst, uint64(v), 10)
}

func appendFloat32(dst []byte, v float32) []byte { return appendFloat(dst, float64(v), 32) }
func appendFloat64(dst []byte, v float64) []byte { return appendFloat(dst, v, 64) }

// appendFloat formats like encoding/json (floatEncoder.encode): shortest
// 'f' form, 'e' form for very large or small magnitudes with a trimmed
// exponent.
func appendFloat(dst []byte, f float64, bits int) []byte {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return append(dst, "null"...)
	}
	abs := math.Abs(f)
	format := byte('f')
	if abs != 0 {
		if bits == 64 && (abs < 1e-6 || abs >= 1e21) || bits == 32 && (float32(abs) < 1e-6 || float32(abs) >= 1e21) {
			format = 'e'
		}
	}
	dst = strconv.AppendFloat(dst, f, format, -1, bits)
	if format == 'e' {
		// clean up e-09 to e-9
		n := len(dst)
		if n >= 4 && dst[n-4] == 'e' && dst[n-3] == '-' && dst[n-2] == '0' {
			dst[n-2] = dst[n-1]
			dst = dst[:n-1]
		}
	}
	return dst
}

// AppendTensor appends one OIP output object:
// {"name":...,"datatype":...,"shape":[...],"data":[...]}.
func AppendTensor(dst []byte, name, datatype string, shape []int64, data any) ([]byte, error) {
	dst = append(dst, `{"name":`...)
	dst = AppendString(dst, name)
	dst = append(dst, `,"datatype":`...)
	dst = AppendString(dst, datatype)
	dst = append(dst, `,"shape":`...)
	dst = AppendShape(dst, shape)
	dst = append(dst, `,"data":`...)
	dst, err := AppendData(dst, data)
	if err != nil {
		return dst, err
	}
	return append(dst, '}'), nil
}

// AppendShape appends shape as a JSON array of integers.
func AppendShape(dst []byte, shape []int64) []byte {
	return appendArray(dst, shape, appendInt)
}

const hexDigits = "0123456789abcdef"

// AppendString appends s as a JSON string, escaped as json.Marshal does:
// HTML-safe (<, > and & as \u003c, \u003e, \u0026); invalid UTF-8 becomes
// U+FFFD.
func AppendString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		if c := s[i]; c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			case '\b':
				dst = append(dst, '\\', 'b')
			case '\f':
				dst = append(dst, '\\', 'f')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hexDigits[r&0xF])
			i += size
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}
