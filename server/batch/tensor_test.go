package batch

import (
	"context"
	"reflect"
	"strings"
	"sync"
	"testing"

	"gopkg.in/yaml.v3"
)

func TestConfigYAML(t *testing.T) {
	for _, tc := range []struct {
		name, doc string
		want      func(*Config)
		err       string
	}{
		{"defaults fill the rest", "max_batch_size: 8\n", func(c *Config) { c.MaxBatchSize = 8 }, ""},
		{"all keys", "max_batch_size: 32\nmax_queue_delay_microseconds: 500\nqueue_capacity: 10\ninstances: 1\ndispatch: workers\nlock_os_thread: false\n",
			func(c *Config) {
				*c = Config{MaxBatchSize: 32, MaxQueueDelayMicroseconds: 500, QueueCapacity: 10, Instances: 1, Dispatch: DispatchWorkers}
			}, ""},
		{"invalid value", "queue_capacity: 0\n", nil, "queue_capacity must be between 1 and 1048576, got 0"},
		{"wrong type", "max_batch_size: many\n", nil, "cannot unmarshal"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got struct {
				B Config `yaml:"dynamic_batching"`
			}
			doc := "dynamic_batching:\n  " + strings.ReplaceAll(strings.TrimSuffix(tc.doc, "\n"), "\n", "\n  ") + "\n"
			err := yaml.Unmarshal([]byte(doc), &got)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			want := DefaultConfig()
			tc.want(&want)
			if got.B != want {
				t.Fatalf("got %+v, want %+v", got.B, want)
			}
		})
	}
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		mut  func(*Config)
		want string
	}{
		{"default", func(*Config) {}, ""},
		{"batch 0", func(c *Config) { c.MaxBatchSize = 0 }, "max_batch_size"},
		{"batch huge", func(c *Config) { c.MaxBatchSize = 1 << 20 }, "max_batch_size"},
		{"negative delay", func(c *Config) { c.MaxQueueDelayMicroseconds = -1 }, "max_queue_delay_microseconds"},
		{"queue 0", func(c *Config) { c.QueueCapacity = 0 }, "queue_capacity"},
		{"instances 0", func(c *Config) { c.Instances = 0 }, "instances"},
		{"batch 1 is valid", func(c *Config) { c.MaxBatchSize = 1 }, ""},
		{"unknown dispatch", func(c *Config) { c.Dispatch = "threads" }, "dispatch"},
		{"workers", func(c *Config) { c.Dispatch = DispatchWorkers }, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := DefaultConfig()
			tc.mut(&c)
			err := c.Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("unexpected error %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("error %v, want one naming %q", err, tc.want)
			}
		})
	}
	if _, err := New(Options{Config: DefaultConfig()}); err == nil {
		t.Error("New without a Runner succeeded")
	}
}

// echo answers every input as an output of the same name (plus a per-request
// scalar that cannot be split when asked), so merge and split can be checked
// for every element type without a model.
type echo struct {
	mu     sync.Mutex
	calls  int
	scalar bool
}

func (e *echo) Run(_ context.Context, in []Tensor) ([]Tensor, error) {
	e.mu.Lock()
	e.calls++
	e.mu.Unlock()
	out := make([]Tensor, len(in))
	for i, t := range in {
		// copy: inputs may be the batcher's reusable merge buffer
		d := reflect.ValueOf(t.Data)
		c := reflect.MakeSlice(d.Type(), d.Len(), d.Len())
		reflect.Copy(c, d)
		out[i] = Tensor{Name: t.Name + "_out", DataType: t.DataType, Shape: append([]int64(nil), t.Shape...), Data: c.Interface()}
	}
	if e.scalar {
		out = append(out, Tensor{Name: "count", DataType: "INT64", Shape: []int64{}, Data: []int64{in[0].Shape[0]}})
	}
	return out, nil
}

func TestMergeSplitEveryType(t *testing.T) { forEachDispatch(t, testMergeSplitEveryType) }

func testMergeSplitEveryType(t *testing.T, dispatch string) {
	mk := func(k int) []Tensor { // one request of k rows, every type, trailing dims [2]
		n := 2 * k
		f32, f64 := make([]float32, n), make([]float64, n)
		i8, i16, i32, i64 := make([]int8, n), make([]int16, n), make([]int32, n), make([]int64, n)
		u8, u16, u32, u64 := make([]uint8, n), make([]uint16, n), make([]uint32, n), make([]uint64, n)
		bs, ss := make([]bool, n), make([]string, n)
		for i := range n {
			v := k*100 + i
			f32[i], f64[i] = float32(v), float64(v)+0.5
			i8[i], i16[i], i32[i], i64[i] = int8(v), int16(-v), int32(v), int64(-v)
			u8[i], u16[i], u32[i], u64[i] = uint8(v), uint16(v), uint32(v), uint64(v)
			bs[i], ss[i] = v%2 == 0, strings.Repeat("x", v%5)+"y"
		}
		ts := []Tensor{}
		for _, d := range []struct {
			dt   DataType
			data any
		}{{"FP32", f32}, {"FP64", f64}, {"INT8", i8}, {"INT16", i16}, {"INT32", i32}, {"INT64", i64},
			{"UINT8", u8}, {"UINT16", u16}, {"UINT32", u32}, {"UINT64", u64}, {"BOOL", bs}, {"BYTES", ss}} {
			ts = append(ts, Tensor{Name: strings.ToLower(string(d.dt)), DataType: d.dt, Shape: []int64{int64(k), 2}, Data: d.data})
		}
		return ts
	}
	for _, scalar := range []bool{false, true} {
		e := &echo{scalar: scalar}
		g := newGate(e)
		b, err := New(Options{Config: testConfig(dispatch, func(c *Config) { c.Instances = 1 }), Runner: g})
		if err != nil {
			t.Fatal(err)
		}
		start(t, b, g.open)
		type res struct {
			k   int
			r   Result
			err error
		}
		ch := make(chan res, 8)
		send := func(k int) {
			r, err := b.Infer(context.Background(), mk(k))
			ch <- res{k, r, err}
		}
		go send(1)
		<-g.entered
		for k := 2; k <= 5; k++ {
			go send(k)
		}
		waitUntil(t, func() bool { return b.QueueLength() == 4 })
		g.open()
		for range 5 {
			r := <-ch
			if r.err != nil {
				t.Fatal(r.err)
			}
			want, _ := e.Run(context.Background(), mk(r.k))
			if !reflect.DeepEqual(r.r.Outputs, want) {
				t.Errorf("scalar=%v k=%d: outputs differ:\n got %v\nwant %v", scalar, r.k, r.r.Outputs, want)
			}
			if r.k > 1 && !scalar && r.r.BatchRequests != 4 {
				t.Errorf("k=%d ran in a batch of %d requests, want 4", r.k, r.r.BatchRequests)
			}
		}
	}
}
