package oip

import (
	"errors"
	"strconv"
	"unicode/utf8"

	"github.com/flywheel-ml/flywheel/server/tensorjson"
)

// The fast path: most infer requests are one small JSON object with plain
// strings and integer shapes. decodeFast scans exactly that shape of envelope
// without reflection, with tensorjson's lexical rules; both paths decode
// `data` with tensorjson. Whenever the envelope has anything else — an
// escape in a string, a key it does not know, a duplicate key, input
// parameters, any syntax or validation error — it gives up and Decode runs
// the general decoder (encoding/json for the envelope), whose answer and
// error message are authoritative. So the fast path only has to be right
// about what it accepts; FuzzDecodeFast holds it to the general decoder's
// result.

var errSlowPath = errors.New("oip: not on the fast path")

type fastScanner struct {
	b []byte
	i int
}

func (s *fastScanner) ws() { s.i = tensorjson.SkipSpace(s.b, s.i) }

// next skips whitespace and returns the next byte (0 at the end).
func (s *fastScanner) next() byte {
	s.ws()
	if s.i >= len(s.b) {
		return 0
	}
	return s.b[s.i]
}

// expect skips whitespace and consumes c.
func (s *fastScanner) expect(c byte) bool {
	if s.next() != c {
		return false
	}
	s.i++
	return true
}

// str consumes a JSON string without escapes and returns its content.
func (s *fastScanner) str() ([]byte, bool) {
	if s.next() != '"' {
		return nil, false
	}
	start := s.i + 1
	ascii := true
	for i := start; i < len(s.b); i++ {
		c := s.b[i]
		switch {
		case c == '"':
			s.i = i + 1
			v := s.b[start:i]
			if !ascii && !utf8.Valid(v) {
				return nil, false
			}
			return v, true
		case c == '\\' || c < 0x20:
			return nil, false
		case c >= 0x80:
			ascii = false
		}
	}
	return nil, false
}

// number consumes a JSON number and returns its bytes.
func (s *fastScanner) number() ([]byte, bool) {
	s.ws()
	end, ok := tensorjson.NumberEnd(s.b, s.i)
	if !ok {
		return nil, false
	}
	tok := s.b[s.i:end]
	s.i = end
	return tok, true
}

// dim consumes a non-negative integer of at most 18 digits.
func (s *fastScanner) dim() (int64, bool) {
	tok, ok := s.number()
	if !ok || len(tok) > 18 {
		return 0, false
	}
	var v int64
	for _, c := range tok {
		if c < '0' || c > '9' {
			return 0, false
		}
		v = v*10 + int64(c-'0')
	}
	return v, true
}

// array calls elem for each element of a JSON array; elem consumes one value.
func (s *fastScanner) array(elem func() bool) bool {
	if !s.expect('[') {
		return false
	}
	if s.next() == ']' {
		s.i++
		return true
	}
	for {
		if !elem() {
			return false
		}
		switch s.next() {
		case ',':
			s.i++
		case ']':
			s.i++
			return true
		default:
			return false
		}
	}
}

// object calls field for each key of a JSON object; field consumes the value.
func (s *fastScanner) object(field func(key []byte) bool) bool {
	if !s.expect('{') {
		return false
	}
	if s.next() == '}' {
		s.i++
		return true
	}
	for {
		k, ok := s.str()
		if !ok || !s.expect(':') || !field(k) {
			return false
		}
		switch s.next() {
		case ',':
			s.i++
		case '}':
			s.i++
			return true
		default:
			return false
		}
	}
}

// rawArray returns the bytes of the JSON array at the cursor, matching
// brackets outside strings; its grammar is checked by whoever parses it.
func (s *fastScanner) rawArray() ([]byte, bool) {
	if s.next() != '[' {
		return nil, false
	}
	start, depth := s.i, 0
	for i := start; i < len(s.b); i++ {
		switch s.b[i] {
		case '[':
			depth++
		case ']':
			depth--
			if depth == 0 {
				s.i = i + 1
				return s.b[start:s.i], true
			}
		case '"':
			for i++; i < len(s.b) && s.b[i] != '"'; i++ {
				if s.b[i] == '\\' {
					i++
				}
			}
		}
	}
	return nil, false
}

// scalarParam consumes a string, number or boolean parameter value.
func (s *fastScanner) scalarParam() (any, bool) {
	switch c := s.next(); {
	case c == '"':
		v, ok := s.str()
		return string(v), ok
	case c == 't' || c == 'f':
		lit := "true"
		if c == 'f' {
			lit = "false"
		}
		if len(s.b)-s.i < len(lit) || string(s.b[s.i:s.i+len(lit)]) != lit {
			return nil, false
		}
		s.i += len(lit)
		return c == 't', true
	case c == '-' || (c >= '0' && c <= '9'):
		tok, ok := s.number()
		if !ok {
			return nil, false
		}
		f, err := strconv.ParseFloat(string(tok), 64)
		return f, err == nil
	}
	return nil, false
}

// scanRequest parses body into req when it has the fast path's shape.
func scanRequest(body []byte, req *InferenceRequest) bool {
	s := &fastScanner{b: body}
	var seenID, seenInputs, seenOutputs, seenParams bool
	ok := s.object(func(key []byte) bool {
		switch string(key) {
		case "id":
			v, ok := s.str()
			if !ok || seenID {
				return false
			}
			seenID, req.ID = true, string(v)
			return true
		case "parameters":
			if seenParams {
				return false
			}
			seenParams = true
			req.Parameters = map[string]any{}
			return s.object(func(k []byte) bool {
				if _, dup := req.Parameters[string(k)]; dup {
					return false
				}
				v, ok := s.scalarParam()
				req.Parameters[string(k)] = v
				return ok
			})
		case "inputs":
			if seenInputs {
				return false
			}
			seenInputs = true
			req.Inputs = make([]RequestInput, 0, 1)
			return s.array(func() bool {
				var in RequestInput
				var seen [4]bool // name shape datatype data
				ok := s.object(func(k []byte) bool {
					var f int
					switch string(k) {
					case "name":
						f = 0
					case "shape":
						f = 1
					case "datatype":
						f = 2
					case "data":
						f = 3
					default:
						return false
					}
					if seen[f] {
						return false
					}
					seen[f] = true
					switch f {
					case 0, 2:
						v, ok := s.str()
						if f == 0 {
							in.Name = string(v)
						} else {
							in.Datatype = string(v)
						}
						return ok
					case 1:
						in.Shape = make([]int64, 0, 2)
						return s.array(func() bool {
							v, ok := s.dim()
							in.Shape = append(in.Shape, v)
							return ok
						})
					}
					raw, ok := s.rawArray()
					in.Data = raw
					return ok
				})
				if !ok || !seen[0] || !seen[1] || !seen[2] || !seen[3] {
					return false
				}
				req.Inputs = append(req.Inputs, in)
				return true
			})
		case "outputs":
			if seenOutputs {
				return false
			}
			seenOutputs = true
			req.Outputs = []RequestOutput{}
			return s.array(func() bool {
				var o RequestOutput
				named := false
				ok := s.object(func(k []byte) bool {
					if string(k) != "name" || named {
						return false
					}
					v, ok := s.str()
					o.Name, named = string(v), true
					return ok
				})
				if !ok || !named {
					return false
				}
				req.Outputs = append(req.Outputs, o)
				return true
			})
		}
		return false
	})
	s.ws()
	return ok && s.i == len(body)
}

// decodeFast is Decode's fast path; errSlowPath (or any error) sends the
// caller to the general decoder.
func (d Decoder) decodeFast(body []byte) (*Request, error) {
	var req InferenceRequest
	if !scanRequest(body, &req) {
		return nil, errSlowPath
	}
	return d.check(&req, nil)
}
