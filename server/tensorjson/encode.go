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

// AppendData appends data (a typed slice, see the package doc) to dst as a
// flat JSON array. A []uint16 is written as UINT16 integers; FP16 bit
// patterns go through AppendFloat16Data (or AppendTensor with "FP16"). Floats use the shortest representation that reads back
// as the same value at their precision, formatted as encoding/json does;
// non-finite floats become "NaN", "Infinity", "-Infinity".
func AppendData(dst []byte, data any) ([]byte, error) {
	dst = append(dst, '[')
	switch s := data.(type) {
	case []float32:
		for i, v := range s {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = appendFloat(dst, float64(v), 32)
		}
	case []float64:
		for i, v := range s {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = appendFloat(dst, v, 64)
		}
	case []int8:
		dst = appendInts(dst, s)
	case []int16:
		dst = appendInts(dst, s)
	case []int32:
		dst = appendInts(dst, s)
	case []int64:
		dst = appendInts(dst, s)
	case []uint8:
		dst = appendUints(dst, s)
	case []uint16:
		dst = appendUints(dst, s)
	case []uint32:
		dst = appendUints(dst, s)
	case []uint64:
		dst = appendUints(dst, s)
	case []bool:
		for i, v := range s {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = strconv.AppendBool(dst, v)
		}
	case []string:
		for i, v := range s {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = AppendString(dst, v)
		}
	default:
		return dst, fmt.Errorf("tensorjson: cannot encode data of type %T", data)
	}
	return append(dst, ']'), nil
}

func appendInts[T int8 | int16 | int32 | int64](dst []byte, s []T) []byte {
	for i, v := range s {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = strconv.AppendInt(dst, int64(v), 10)
	}
	return dst
}

func appendUints[T uint8 | uint16 | uint32 | uint64](dst []byte, s []T) []byte {
	for i, v := range s {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = strconv.AppendUint(dst, uint64(v), 10)
	}
	return dst
}

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
	dst = append(dst, '[')
	for i, d := range shape {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = strconv.AppendInt(dst, d, 10)
	}
	return append(dst, ']')
}

const hexDigits = "0123456789abcdef"

// AppendString appends s as a JSON string, escaping like encoding/json
// (without HTML escaping); invalid UTF-8 becomes U+FFFD.
func AppendString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		if c := s[i]; c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
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
