// Command benchmodels writes the two benchmark models (mlp_small, mlp_wide)
// into a folder, byte for byte as the bench harness does. loadtest/bench.sh
// runs it; it is a development tool, not part of the flywheel binary.
//
//	go run ./loadtest/benchmodels -out /tmp/models
//	go run ./loadtest/benchmodels -out /tmp/models -cards   # also <name>.json model cards (drift reference)
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"

	"github.com/flywheel-ml/flywheel/internal/benchmodels"
)

func main() {
	out := flag.String("out", "", "output folder (required)")
	cards := flag.Bool("cards", false, "also write <name>.json model cards with a reference distribution")
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
	if *cards {
		for _, s := range benchmodels.Specs {
			p := filepath.Join(*out, s.Name+".json")
			if err := s.Card().Write(p); err != nil {
				fmt.Fprintln(os.Stderr, err)
				os.Exit(1)
			}
			paths[s.Name+".json"] = p
		}
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
