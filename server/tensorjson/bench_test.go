package tensorjson

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"testing"
)

// benchRows returns rows×features of the bench harness's reference row as
// JSON, flat or nested, and the shape.
func benchRows(rows, features int, nested bool) ([]byte, []int64) {
	var b strings.Builder
	b.WriteByte('[')
	for r := range rows {
		if r > 0 {
			b.WriteByte(',')
		}
		if nested {
			b.WriteByte('[')
		}
		for i := range features {
			if i > 0 {
				b.WriteByte(',')
			}
			b.WriteString(strconv.FormatFloat(float64(float32(i%7)/7-0.5), 'g', 7, 32))
		}
		if nested {
			b.WriteByte(']')
		}
	}
	b.WriteByte(']')
	return []byte(b.String()), []int64{int64(rows), int64(features)}
}

var benchCases = []struct {
	name           string
	rows, features int
	nested         bool
}{
	{"mlp_small-1x16", 1, 16, false},
	{"mlp_wide-1x256", 1, 256, false},
	{"mlp_wide-64x256-nested", 64, 256, true},
}

// BenchmarkDecodeFP32 compares this scanner with encoding/json decoding into
// a typed []float32 (its best case: the type known in advance) and into
// []any (what a decoder that learns the datatype from a sibling field gets).
//
//	go test -run '^$' -bench Decode -benchmem ./server/tensorjson
func BenchmarkDecodeFP32(b *testing.B) {
	for _, bc := range benchCases {
		data, shape := benchRows(bc.rows, bc.features, bc.nested)
		b.Run(bc.name+"/tensorjson", func(b *testing.B) {
			b.SetBytes(int64(len(data)))
			buf := make([]float32, 0, bc.rows*bc.features)
			for b.Loop() {
				if _, err := DecodeFloat32(buf, data, shape); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(bc.name+"/tensorjson-alloc", func(b *testing.B) {
			b.SetBytes(int64(len(data)))
			for b.Loop() {
				if _, err := Decode(data, "FP32", shape); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(bc.name+"/encoding-json-typed", func(b *testing.B) {
			b.SetBytes(int64(len(data)))
			for b.Loop() {
				if bc.nested {
					var v [][]float32
					if err := json.Unmarshal(data, &v); err != nil {
						b.Fatal(err)
					}
				} else {
					var v []float32
					if err := json.Unmarshal(data, &v); err != nil {
						b.Fatal(err)
					}
				}
			}
		})
		b.Run(bc.name+"/encoding-json-any", func(b *testing.B) {
			b.SetBytes(int64(len(data)))
			for b.Loop() {
				var v any
				if err := json.Unmarshal(data, &v); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkEncodeFP32 compares AppendData into a pooled buffer with
// json.Marshal of the same []float32.
func BenchmarkEncodeFP32(b *testing.B) {
	for _, n := range []int{3, 10, 640} {
		data := make([]float32, n)
		for i := range data {
			data[i] = float32(i%13)/13 + 0.001*float32(i)
		}
		b.Run(fmt.Sprintf("%d/tensorjson", n), func(b *testing.B) {
			for b.Loop() {
				buf := GetBuffer()
				var err error
				if buf.B, err = AppendData(buf.B, data); err != nil {
					b.Fatal(err)
				}
				PutBuffer(buf)
			}
		})
		b.Run(fmt.Sprintf("%d/encoding-json", n), func(b *testing.B) {
			for b.Loop() {
				if _, err := json.Marshal(data); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
