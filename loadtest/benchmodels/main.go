// Command benchmodels writes the two benchmark models (mlp_small, mlp_wide)
// into a folder, byte for byte as the bench harness does. loadtest/bench.sh
// runs it; it is a development tool, not part of the flywheel binary.
//
//	go run ./loadtest/benchmodels -out /tmp/models
package main

import (
	"flag"
	"fmt"
	"os"
	"sort"

	"github.com/flywheel-ml/flywheel/internal/benchmodels"
)

func main() {
	out := flag.String("out", "", "output folder (required)")
	flag.Parse()
	if *out == "" {
		fmt.Fprintln(os.Stderr, "benchmodels: -out is required")
		os.Exit(2)
	}
	paths, err := benchmodels.Write(*out)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	names := make([]string, 0, len(paths))
	for n := range paths {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Println(paths[n])
	}
}
