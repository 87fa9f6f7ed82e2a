// Command flywheel is the one binary of the Flywheel MLOps loop: it serves
// ONNX models, trains them, runs the retraining service and tracks runs.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"syscall"

	"github.com/flywheel-ml/flywheel/internal/cmem"
)

// command is one subcommand: its one-line summary and its entry point.
type command struct {
	summary string
	run     func(ctx context.Context, args []string, stdout, stderr io.Writer) error
}

// commands lists the subcommands; each lives in its own file.
func commands() map[string]command {
	return map[string]command{
		"serve":   {"serve ONNX models over the Open Inference Protocol and MLflow scoring REST APIs", runServe},
		"train":   {"train, evaluate and export a model into the model repository", runTrain},
		"trainer": {"run the retraining service (Alertmanager webhook, durable job queue, pipeline)", runTrainer},
		"runs":    {"list, show, compare and sync tracked experiment runs", runRuns},
		"replay":  {"replay dataset rows as prediction requests and feedback labels", runReplay},
		"version": {"print the version", runVersion},
	}
}

func main() {
	// Before any cgo allocation (ONNX Runtime, SQLite): see internal/cmem.
	if err := cmem.LimitArenas(cmem.DefaultArenas); err != nil {
		fmt.Fprintln(os.Stderr, "flywheel:", err)
	}
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	cmds := commands()
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(stdout, cmds)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	c, ok := cmds[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "flywheel: unknown command %q (see flywheel --help)\n", args[0])
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := c.run(ctx, args[1:], stdout, stderr); err != nil {
		if err == errHelp {
			return 0
		}
		fmt.Fprintf(stderr, "flywheel %s: %v\n", args[0], err)
		if _, usageErr := err.(usageError); usageErr {
			return 2
		}
		return 1
	}
	return 0
}

func usage(w io.Writer, cmds map[string]command) {
	fmt.Fprintln(w, "Flywheel: ONNX serving, training, tracking and automatic retraining in one binary.")
	fmt.Fprintln(w, "\nUsage: flywheel <command> [flags]\n\nCommands:")
	names := make([]string, 0, len(cmds))
	for n := range cmds {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-8s %s\n", n, cmds[n].summary)
	}
	fmt.Fprintln(w, "\nRun `flywheel <command> --help` for its flags; every flag also reads a FLYWHEEL_* environment variable.")
}

func runVersion(_ context.Context, _ []string, stdout, _ io.Writer) error {
	fmt.Fprintln(stdout, "flywheel", version)
	return nil
}

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"
