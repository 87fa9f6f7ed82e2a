// Command ortloop is the model's ceiling on this machine: ONNX Runtime's
// Run in a tight loop on preallocated tensors, no HTTP, no JSON, no
// batcher. Each goroutine owns a session (one intra-op thread, like
// `flywheel serve`'s default) and runs batches of -batch rows; the rows/s of
// all goroutines together is what any server running this model on these
// cores could at most answer. loadtest/bench.sh runs it at batch 64 on two
// goroutines in the same sitting as the servers and prints it in its table.
//
//	go run ./loadtest/ortloop -model /tmp/models/mlp_wide/1/model.onnx -batch 64 -goroutines 2
//
// It prints one line: RESULT model=… batch=… goroutines=… calls=… rows_per_s=… call_p50_us=…
// The model must have one float input [N,F] and one float output [N,C].
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"time"

	ortgo "github.com/yalue/onnxruntime_go"

	"github.com/flywheel-ml/flywheel/server/ort"
)

type config struct {
	model      string
	ortLib     string
	batch      int
	goroutines int
	duration   time.Duration
	warmup     time.Duration
}

func main() {
	var c config
	flag.StringVar(&c.model, "model", "", "ONNX model: one FP32 input [N,F], one FP32 output [N,C]")
	flag.StringVar(&c.ortLib, "ort-lib", "", "libonnxruntime.so.1 (default: $"+ort.EnvVar+" or lib/)")
	flag.IntVar(&c.batch, "batch", 64, "rows per Run")
	flag.IntVar(&c.goroutines, "goroutines", 2, "concurrent loops, one session each")
	flag.DurationVar(&c.duration, "duration", 5*time.Second, "measured time (at most 2m)")
	flag.DurationVar(&c.warmup, "warmup", time.Second, "unmeasured time first")
	flag.Parse()
	if err := run(c, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "ortloop:", err)
		os.Exit(1)
	}
}

func (c config) validate() error {
	switch {
	case c.model == "":
		return errors.New("-model is required")
	case c.batch < 1 || c.batch > 1<<16:
		return fmt.Errorf("-batch %d must be 1..65536", c.batch)
	case c.goroutines < 1 || c.goroutines > 64:
		return fmt.Errorf("-goroutines %d must be 1..64", c.goroutines)
	case c.duration <= 0 || c.duration > 2*time.Minute:
		return fmt.Errorf("-duration %s must be in (0, 2m]", c.duration)
	case c.warmup < 0 || c.warmup > time.Minute:
		return fmt.Errorf("-warmup %s must be in [0, 1m]", c.warmup)
	}
	return nil
}

// loop is one goroutine's session and preallocated tensors.
type loop struct {
	sess    *ortgo.DynamicAdvancedSession
	in, out *ortgo.Tensor[float32]
	lat     []time.Duration
}

func (l *loop) destroy() {
	for _, d := range []interface{ Destroy() error }{l.in, l.out, l.sess} {
		if d != nil {
			_ = d.Destroy()
		}
	}
}

func run(c config, w io.Writer) error {
	if err := c.validate(); err != nil {
		return err
	}
	if _, _, err := ort.Setup(c.ortLib); err != nil {
		return err
	}
	ins, outs, err := ortgo.GetInputOutputInfo(c.model)
	if err != nil {
		return fmt.Errorf("reading %s: %w", c.model, err)
	}
	if len(ins) != 1 || len(outs) != 1 || len(ins[0].Dimensions) != 2 || len(outs[0].Dimensions) != 2 ||
		ins[0].DataType != ortgo.TensorElementDataTypeFloat || outs[0].DataType != ortgo.TensorElementDataTypeFloat {
		return fmt.Errorf("%s: want one FP32 input [N,F] and one FP32 output [N,C]", c.model)
	}
	features, classes := ins[0].Dimensions[1], outs[0].Dimensions[1]
	loops := make([]*loop, c.goroutines)
	defer func() {
		for _, l := range loops {
			if l != nil {
				l.destroy()
			}
		}
	}()
	for i := range loops {
		if loops[i], err = newLoop(c, ins[0].Name, outs[0].Name, features, classes); err != nil {
			return err
		}
	}
	var wg sync.WaitGroup
	start := make(chan struct{})
	var t0 time.Time
	errs := make([]error, len(loops))
	for i, l := range loops {
		wg.Add(1)
		go func() {
			defer wg.Done()
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			errs[i] = l.spin(c, start, &t0)
		}()
	}
	time.Sleep(c.warmup + 20*time.Millisecond)
	t0 = time.Now()
	close(start)
	wg.Wait()
	elapsed := time.Since(t0)
	if err := errors.Join(errs...); err != nil {
		return err
	}
	var all []time.Duration
	for _, l := range loops {
		all = append(all, l.lat...)
	}
	slices.Sort(all)
	p50 := all[len(all)/2]
	fmt.Fprintf(w, "RESULT model=%s batch=%d goroutines=%d calls=%d rows_per_s=%.0f call_p50_us=%.1f\n",
		filepath.Base(filepath.Dir(filepath.Dir(c.model)))+"/"+filepath.Base(c.model), c.batch, c.goroutines, len(all),
		float64(len(all)*c.batch)/elapsed.Seconds(), float64(p50)/float64(time.Microsecond))
	return nil
}

func newLoop(c config, inName, outName string, features, classes int64) (*loop, error) {
	so, err := ortgo.NewSessionOptions()
	if err != nil {
		return nil, err
	}
	defer so.Destroy()
	if err := errors.Join(so.SetIntraOpNumThreads(1), so.SetInterOpNumThreads(1),
		so.AddSessionConfigEntry("session.intra_op.allow_spinning", "0")); err != nil {
		return nil, err
	}
	l := &loop{lat: make([]time.Duration, 0, 1<<14)}
	if l.sess, err = ortgo.NewDynamicAdvancedSession(c.model, []string{inName}, []string{outName}, so); err != nil {
		return nil, fmt.Errorf("creating session: %w", err)
	}
	data := make([]float32, c.batch*int(features))
	for j := range data {
		data[j] = float32(j%int(features)%7)/7 - 0.5 // the bench's reference row
	}
	if l.in, err = ortgo.NewTensor(ortgo.NewShape(int64(c.batch), features), data); err != nil {
		l.destroy()
		return nil, err
	}
	if l.out, err = ortgo.NewEmptyTensor[float32](ortgo.NewShape(int64(c.batch), classes)); err != nil {
		l.destroy()
		return nil, err
	}
	return l, nil
}

// spin runs warm-up calls until start is closed, then measured calls for
// c.duration from *t0.
func (l *loop) spin(c config, start <-chan struct{}, t0 *time.Time) error {
	in, out := []ortgo.Value{l.in}, []ortgo.Value{l.out}
	for warm := true; warm; {
		select {
		case <-start:
			warm = false
		default:
			if err := l.sess.Run(in, out); err != nil {
				return err
			}
		}
	}
	deadline := t0.Add(c.duration)
	for {
		s := time.Now()
		if err := l.sess.Run(in, out); err != nil {
			return err
		}
		e := time.Now()
		l.lat = append(l.lat, e.Sub(s))
		if e.After(deadline) {
			return nil
		}
	}
}
