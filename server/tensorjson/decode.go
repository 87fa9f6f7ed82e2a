// Package tensorjson decodes and encodes the `data` of Open Inference
// Protocol tensors without reflection: a hand-written scanner turns a flat or
// nested JSON array of numbers, booleans or strings straight into a typed
// slice, and the encoder appends typed slices to a byte buffer with strconv.
//
// Why hand-written: encoding/json decodes `data` through reflection into
// []any (one allocation and interface box per element) or into a typed slice
// only when the type is known before decoding, and it cannot check nesting
// against the declared shape. Fast JSON libraries (sonic, goccy/go-json,
// jsoniter) speed up the envelope but still go through generic arrays for a
// value whose element type depends on a sibling field ("datatype"), and they
// add a large dependency (sonic needs amd64 JIT). The numeric array is the
// only hot part of an infer request, and its grammar is small: numbers,
// true/false, strings and brackets. Element parsing itself is strconv's
// (Eisel-Lemire for floats), so values are exactly what encoding/json gives.
//
// Datatypes map to Go slices as in server/tensor: FP32 []float32, FP64
// []float64, INT8..INT64 []int8..[]int64, UINT8..UINT64 []uint8..[]uint64,
// BOOL []bool, BYTES []string, and FP16 and BF16 widened to []float32 (FP16
// values beyond ±65504 are rejected). Integer datatypes also accept
// integral numbers written as floats ("2.0", "1e3") when in range.
//
// Non-finite floats: JSON has no NaN or infinity; the encoder writes them as
// null, and the decoder rejects anything but numbers for numeric datatypes.
package tensorjson

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"unicode/utf8"

	"github.com/flywheel-ml/flywheel/server/tensor"
)

// MaxDepth is the deepest nesting of `data` accepted.
const MaxDepth = 32

// Error describes why `data` could not be decoded. Element is the index of
// the value at fault, -1 when the array's structure is; Offset is the byte
// offset in data where the problem was found, -1 when it concerns the whole
// value (the element count).
type Error struct {
	Offset  int
	Element int
	Reason  string
}

func (e *Error) Error() string {
	switch {
	case e.Element >= 0:
		return fmt.Sprintf("data element %d: %s (at byte %d)", e.Element, e.Reason, e.Offset)
	case e.Offset >= 0:
		return fmt.Sprintf("data: %s (at byte %d)", e.Reason, e.Offset)
	}
	return e.Reason
}

// ErrUnknownDatatype is returned for a datatype this package does not decode.
var ErrUnknownDatatype = errors.New("unknown datatype")

// Decode parses data (the raw JSON value of an OIP tensor's "data" field:
// a flat array, an array nested exactly as shape, or one nested to another
// depth, read flat) into a typed slice for
// datatype holding exactly tensor.Elements(shape) values.
func Decode(data []byte, datatype string, shape []int64) (any, error) {
	switch datatype {
	case "FP32":
		return decodeAs(data, shape, parseF32)
	case "FP64":
		return decodeAs(data, shape, parseF64)
	case "FP16":
		return decodeAs(data, shape, parseF16)
	case "BF16":
		return decodeAs(data, shape, parseBF16)
	case "INT8":
		return decodeAs(data, shape, parseInt[int8](8))
	case "INT16":
		return decodeAs(data, shape, parseInt[int16](16))
	case "INT32":
		return decodeAs(data, shape, parseInt[int32](32))
	case "INT64":
		return decodeAs(data, shape, parseInt[int64](64))
	case "UINT8":
		return decodeAs(data, shape, parseUint[uint8](8))
	case "UINT16":
		return decodeAs(data, shape, parseUint[uint16](16))
	case "UINT32":
		return decodeAs(data, shape, parseUint[uint32](32))
	case "UINT64":
		return decodeAs(data, shape, parseUint[uint64](64))
	case "BOOL":
		return decodeAs(data, shape, parseBool)
	case "BYTES":
		return decodeAs(data, shape, parseString)
	}
	return nil, fmt.Errorf("%w %q", ErrUnknownDatatype, datatype)
}

// DecodeFloat32 is Decode for FP32 appending to dst[:0], so callers can reuse
// a pooled slice.
func DecodeFloat32(dst []float32, data []byte, shape []int64) ([]float32, error) {
	return decodeInto(dst[:0], data, shape, parseF32)
}

// token kinds seen by element parsers
const (
	tokNumber = iota
	tokString // tok is the raw string including quotes
	tokTrue
	tokFalse
	tokNull
)

// An elemParser converts one scalar token; on failure it returns the reason,
// which names the token (see tokText).
type elemParser[T any] func(kind int, tok []byte) (T, string)

func decodeAs[T any](data []byte, shape []int64, parse elemParser[T]) (any, error) {
	out, err := decodeInto[T](nil, data, shape, parse)
	if err != nil {
		return nil, err
	}
	return out, nil
}

func decodeInto[T any](dst []T, data []byte, shape []int64, parse elemParser[T]) ([]T, error) {
	n, ok := tensor.Elements(shape, math.MaxInt32)
	if !ok {
		return nil, &Error{-1, -1, fmt.Sprintf("shape %s has a negative dimension or more than %d elements", tensor.ShapeString(shape), math.MaxInt32)}
	}
	want := int(n)
	if dst == nil || cap(dst) < want {
		// each element takes at least one byte plus a separator
		dst = make([]T, 0, min(want, len(data)/2+1))
	}
	s := scanner[T]{data: data, out: dst, parse: parse}
	s.pos = SkipSpace(data, 0)
	if s.pos >= len(data) || data[s.pos] != '[' {
		return nil, s.fail("data must be a JSON array (flat or nested)")
	}
	if err := s.array(0); err != nil {
		return nil, err
	}
	s.pos = SkipSpace(data, s.pos)
	if s.pos != len(data) {
		return nil, s.fail("unexpected content after the data array")
	}
	if len(s.out) != want {
		return nil, &Error{-1, -1, fmt.Sprintf("data has %d elements, shape %s needs %d", len(s.out), tensor.ShapeString(shape), want)}
	}
	// Nested data as deep as the shape's rank must be nested as the shape;
	// data nested otherwise is read flat, in row-major order (as Triton
	// does). Arrays without values count as levels too: [[ ]] is not [0,2].
	levels := s.deepest + 1
	if levels > 1 && levels == len(shape) {
		for i := range levels {
			if int64(s.dims[i]) != shape[i] {
				return nil, &Error{-1, -1, fmt.Sprintf("nested data has shape %s, shape is %s", dimsText(s.dims[:levels]), tensor.ShapeString(shape))}
			}
		}
	}
	return s.out, nil
}

func dimsText(dims []int32) string {
	s := make([]int64, len(dims))
	for i, d := range dims {
		s[i] = int64(d)
	}
	return tensor.ShapeString(s)
}

type scanner[T any] struct {
	data  []byte
	pos   int
	out   []T
	parse elemParser[T]
	leaf  int // depth (1-based) of scalar elements; 0 until the first one
	// deepest is the greatest depth of an array seen (0: the outermost)
	deepest int
	// dims[d] is the length of the arrays at depth d, -1 until one closes;
	// entries below opened are initialised (depth d opens only after d-1).
	dims   [MaxDepth]int32
	opened int
}

func (s *scanner[T]) fail(reason string) error { return &Error{s.pos, -1, reason} }

// array parses one array at depth d (0 for the outermost); s.pos is at '['.
func (s *scanner[T]) array(d int) error {
	if d >= MaxDepth {
		return s.fail(fmt.Sprintf("data is nested deeper than %d levels", MaxDepth))
	}
	s.pos++ // '['
	if d >= s.opened {
		s.dims[d] = -1
		s.opened = d + 1
	}
	n := 0
	s.pos = SkipSpace(s.data, s.pos)
	if s.pos < len(s.data) && s.data[s.pos] == ']' {
		s.pos++
		return s.endArray(d, 0)
	}
	for {
		s.pos = SkipSpace(s.data, s.pos)
		if s.pos >= len(s.data) {
			return s.fail("data array is not closed")
		}
		if s.data[s.pos] == '[' {
			if s.leaf != 0 && d+1 >= s.leaf {
				return s.fail("ragged data: an array where a value belongs")
			}
			s.deepest = max(s.deepest, d+1)
			if err := s.array(d + 1); err != nil {
				return err
			}
		} else {
			if s.leaf == 0 {
				if s.deepest > d {
					return s.fail("ragged data: a value where an array belongs")
				}
				s.leaf = d + 1
			} else if s.leaf != d+1 {
				return s.fail("ragged data: a value where an array belongs")
			}
			if err := s.value(); err != nil {
				return err
			}
		}
		n++
		s.pos = SkipSpace(s.data, s.pos)
		if s.pos >= len(s.data) {
			return s.fail("data array is not closed")
		}
		switch s.data[s.pos] {
		case ',':
			s.pos++
		case ']':
			s.pos++
			return s.endArray(d, n)
		default:
			return s.fail(fmt.Sprintf("invalid JSON: want ',' or ']', got %q", s.data[s.pos]))
		}
	}
}

func (s *scanner[T]) endArray(d, n int) error {
	if n > math.MaxInt32 {
		return s.fail("array too long")
	}
	if s.dims[d] < 0 {
		s.dims[d] = int32(n)
		return nil
	}
	if int(s.dims[d]) != n {
		return s.fail(fmt.Sprintf("ragged data: arrays of %d and %d elements at depth %d", s.dims[d], n, d+1))
	}
	return nil
}

// value scans one scalar token and hands it to the element parser.
func (s *scanner[T]) value() error {
	start := s.pos
	var kind int
	switch c := s.data[s.pos]; {
	case c == '"':
		end, err := StringEnd(s.data, s.pos)
		if err != nil {
			return &Error{start, len(s.out), err.Error()}
		}
		s.pos = end
		kind = tokString
	case c == '-' || (c >= '0' && c <= '9'):
		end, ok := NumberEnd(s.data, s.pos)
		if !ok {
			return &Error{start, len(s.out), "malformed number"}
		}
		s.pos = end
		kind = tokNumber
	case c == 't':
		if !s.literal("true") {
			return s.fail("invalid literal")
		}
		kind = tokTrue
	case c == 'f':
		if !s.literal("false") {
			return s.fail("invalid literal")
		}
		kind = tokFalse
	case c == 'n':
		if !s.literal("null") {
			return s.fail("invalid literal")
		}
		kind = tokNull
	case c == '{':
		return &Error{start, len(s.out), "an object is not a tensor value"}
	default:
		return s.fail(fmt.Sprintf("invalid JSON: unexpected character %q", c))
	}
	v, reason := s.parse(kind, s.data[start:s.pos])
	if reason != "" {
		return &Error{start, len(s.out), reason}
	}
	s.out = append(s.out, v)
	return nil
}

func (s *scanner[T]) literal(lit string) bool {
	if !bytes.HasPrefix(s.data[s.pos:], []byte(lit)) {
		return false
	}
	s.pos += len(lit)
	return true
}

// The lexical rules below are the one JSON scanner of the server's hot path:
// the data decoder above and oip's scanner of the request envelope use them.

// SkipSpace returns the offset of the first byte at or after i that is not
// JSON whitespace.
func SkipSpace(b []byte, i int) int {
	for i < len(b) {
		switch b[i] {
		case ' ', '\t', '\n', '\r':
			i++
		default:
			return i
		}
	}
	return i
}

// NumberEnd returns the offset just past the JSON number (RFC 8259 grammar)
// that starts at i, and false when none starts there.
func NumberEnd(b []byte, i int) (int, bool) {
	if i < len(b) && b[i] == '-' {
		i++
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case i < len(b) && b[i] >= '1' && b[i] <= '9':
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
		}
	default:
		return i, false
	}
	if i < len(b) && b[i] == '.' {
		i++
		j := i
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
		}
		if i == j {
			return i, false
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		j := i
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
		}
		if i == j {
			return i, false
		}
	}
	return i, true
}

// StringEnd returns the offset just past the closing quote of the JSON
// string whose opening quote is at i, checking escapes and rejecting
// control characters.
func StringEnd(b []byte, i int) (int, error) {
	for i++; i < len(b); i++ {
		switch c := b[i]; {
		case c == '"':
			return i + 1, nil
		case c == '\\':
			i++
			if i >= len(b) {
				return 0, errors.New("string is not terminated")
			}
			switch b[i] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
			case 'u':
				if i+4 >= len(b) {
					return 0, errors.New("bad \\u escape in string")
				}
				for k := 1; k <= 4; k++ {
					if !isHex(b[i+k]) {
						return 0, errors.New("bad \\u escape in string")
					}
				}
				i += 4
			default:
				return 0, errors.New("bad escape in string")
			}
		case c < 0x20:
			return 0, errors.New("string has an unescaped control character")
		}
	}
	return 0, errors.New("string is not terminated")
}

func isHex(c byte) bool {
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')
}

// bstr views b as a string without copying; strconv does not keep it (its
// errors copy the input).
func bstr(b []byte) string { return unsafeString(b) }

// tokText is a token as error messages show it: at most 32 bytes, quoted
// when it is not valid UTF-8.
func tokText(tok []byte) string {
	if len(tok) > 32 {
		tok = append(tok[:32:32], "..."...)
	}
	if !utf8.Valid(tok) {
		return strconv.Quote(string(tok))
	}
	return string(tok)
}

// notNumber is the reason a non-number token is not a value of datatype.
func notNumber(kind int, tok []byte, datatype string) string {
	if kind == tokString {
		return fmt.Sprintf("%s is a string, %s needs a number", tokText(tok), datatype)
	}
	return fmt.Sprintf("%s is not a number", tokText(tok))
}

func outOfRange(tok []byte, datatype string) string {
	return fmt.Sprintf("%s is out of range for %s", tokText(tok), datatype)
}

func parseF32(kind int, tok []byte) (float32, string) { return parseFloat32(kind, tok, "FP32") }

func parseBF16(kind int, tok []byte) (float32, string) { return parseFloat32(kind, tok, "BF16") }

func parseFloat32(kind int, tok []byte, datatype string) (float32, string) {
	if kind != tokNumber {
		return 0, notNumber(kind, tok, datatype)
	}
	if f, ok := fastF32(tok); ok {
		return f, ""
	}
	f, err := strconv.ParseFloat(bstr(tok), 32)
	if err != nil {
		return 0, outOfRange(tok, datatype)
	}
	return float32(f), ""
}

func parseF64(kind int, tok []byte) (float64, string) {
	if kind != tokNumber {
		return 0, notNumber(kind, tok, "FP64")
	}
	if f, ok := fastF64(tok); ok {
		return f, ""
	}
	f, err := strconv.ParseFloat(bstr(tok), 64)
	if err != nil {
		return 0, outOfRange(tok, "FP64")
	}
	return f, ""
}

// parseF16 reads FP16 values widened to float32; beyond ±65504 (the largest
// half) they are out of range.
func parseF16(kind int, tok []byte) (float32, string) {
	f, reason := parseFloat32(kind, tok, "FP16")
	if reason == "" && (f > 65504 || f < -65504) {
		return 0, outOfRange(tok, "FP16")
	}
	return f, reason
}

type signed interface {
	~int8 | ~int16 | ~int32 | ~int64
}
type unsigned interface {
	~uint8 | ~uint16 | ~uint32 | ~uint64
}

func parseInt[T signed](bits int) elemParser[T] {
	datatype := "INT" + strconv.Itoa(bits)
	return func(kind int, tok []byte) (T, string) {
		if kind != tokNumber {
			return 0, notNumber(kind, tok, datatype)
		}
		// fast path: short plain integers
		if len(tok) <= 18 {
			neg, i := false, 0
			if tok[0] == '-' {
				neg, i = true, 1
			}
			var v int64
			for ; i < len(tok); i++ {
				c := tok[i]
				if c < '0' || c > '9' {
					break
				}
				v = v*10 + int64(c-'0')
			}
			if i == len(tok) {
				if neg {
					v = -v
				}
				if v < -(1<<(bits-1)) || v > 1<<(bits-1)-1 {
					return 0, outOfRange(tok, datatype)
				}
				return T(v), ""
			}
		}
		v, err := strconv.ParseInt(bstr(tok), 10, bits)
		if err == nil {
			return T(v), ""
		}
		if errors.Is(err, strconv.ErrRange) {
			return 0, outOfRange(tok, datatype)
		}
		f, reason := integral(tok, datatype)
		if reason != "" {
			return 0, reason
		}
		lo, hi := -math.Ldexp(1, bits-1), math.Ldexp(1, bits-1)
		if f < lo || f >= hi {
			return 0, outOfRange(tok, datatype)
		}
		return T(int64(f)), ""
	}
}

// integral parses a number with a fraction or exponent ("2.0", "1e3") that
// must have an integer value.
func integral(tok []byte, datatype string) (float64, string) {
	f, err := strconv.ParseFloat(bstr(tok), 64)
	if err != nil && !errors.Is(err, strconv.ErrRange) {
		return 0, notNumber(tokNumber, tok, datatype)
	}
	if err != nil || f != math.Trunc(f) {
		if math.IsInf(f, 0) {
			return 0, outOfRange(tok, datatype)
		}
		return 0, fmt.Sprintf("%s is not an integer, %s needs one", tokText(tok), datatype)
	}
	return f, ""
}

func parseUint[T unsigned](bits int) elemParser[T] {
	datatype := "UINT" + strconv.Itoa(bits)
	return func(kind int, tok []byte) (T, string) {
		if kind != tokNumber {
			return 0, notNumber(kind, tok, datatype)
		}
		v, err := strconv.ParseUint(bstr(tok), 10, bits)
		if err == nil {
			return T(v), ""
		}
		if errors.Is(err, strconv.ErrRange) {
			return 0, outOfRange(tok, datatype)
		}
		f, reason := integral(tok, datatype)
		if reason != "" {
			return 0, reason
		}
		if f < 0 || f >= math.Ldexp(1, bits) {
			return 0, outOfRange(tok, datatype)
		}
		return T(uint64(f)), ""
	}
}

func parseBool(kind int, tok []byte) (bool, string) {
	switch kind {
	case tokTrue:
		return true, ""
	case tokFalse:
		return false, ""
	}
	return false, fmt.Sprintf("%s is not a BOOL (true or false)", tokText(tok))
}

func parseString(kind int, tok []byte) (string, string) {
	if kind != tokString {
		return "", fmt.Sprintf("BYTES elements must be JSON strings, got %s", tokText(tok))
	}
	body := tok[1 : len(tok)-1]
	if bytes.IndexByte(body, '\\') < 0 && utf8.Valid(body) {
		return string(body), ""
	}
	// escapes or invalid UTF-8: let encoding/json apply its exact rules
	var s string
	if err := json.Unmarshal(tok, &s); err != nil {
		return "", fmt.Sprintf("invalid string %s", tokText(tok))
	}
	return s, ""
}
