package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"
)

// errHelp is returned when --help was asked for and printed.
var errHelp = errors.New("help requested")

// usageError marks a bad command line (exit status 2).
type usageError struct{ error }

// flagSet is a flag.FlagSet whose every flag also reads an environment
// variable, FLYWHEEL_<NAME> by default. Precedence: default < env < flag.
type flagSet struct {
	fs      *flag.FlagSet
	name    string
	summary string
	env     map[string]string // flag name → env var
	order   []string
}

func newFlagSet(name, summary string) *flagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	return &flagSet{fs: fs, name: name, summary: summary, env: map[string]string{}}
}

// envName is the variable a flag reads: FLYWHEEL_ + upper snake case.
func envName(flagName string) string {
	return "FLYWHEEL_" + strings.NewReplacer("-", "_", ".", "_").Replace(strings.ToUpper(flagName))
}

func (f *flagSet) add(name, env string) {
	if env == "" {
		env = envName(name)
	}
	f.env[name] = env
	f.order = append(f.order, name)
}

// String defines a string flag; env "" means FLYWHEEL_<NAME>.
func (f *flagSet) String(p *string, name, env, def, usage string) {
	f.fs.StringVar(p, name, def, usage)
	f.add(name, env)
}

func (f *flagSet) Int(p *int, name, env string, def int, usage string) {
	f.fs.IntVar(p, name, def, usage)
	f.add(name, env)
}

func (f *flagSet) Int64(p *int64, name, env string, def int64, usage string) {
	f.fs.Int64Var(p, name, def, usage)
	f.add(name, env)
}

func (f *flagSet) Float(p *float64, name, env string, def float64, usage string) {
	f.fs.Float64Var(p, name, def, usage)
	f.add(name, env)
}

func (f *flagSet) Bool(p *bool, name, env string, def bool, usage string) {
	f.fs.BoolVar(p, name, def, usage)
	f.add(name, env)
}

func (f *flagSet) Duration(p *time.Duration, name, env string, def time.Duration, usage string) {
	f.fs.DurationVar(p, name, def, usage)
	f.add(name, env)
}

// Parse applies environment variables, then the command line. It prints the
// help to w and returns errHelp for -h/--help.
func (f *flagSet) Parse(args []string, w io.Writer) error {
	for _, a := range args {
		if a == "--help=markdown" || a == "-help=markdown" {
			f.Markdown(w)
			return errHelp
		}
		if a == "--" {
			break
		}
	}
	for _, name := range f.order {
		if v, ok := os.LookupEnv(f.env[name]); ok && v != "" {
			if err := f.fs.Set(name, v); err != nil {
				return usageError{fmt.Errorf("environment %s=%q: %w", f.env[name], v, err)}
			}
		}
	}
	if err := f.fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			f.Usage(w)
			return errHelp
		}
		return usageError{fmt.Errorf("%w (see flywheel %s --help)", err, f.name)}
	}
	return nil
}

// Args returns the positional arguments after Parse.
func (f *flagSet) Args() []string { return f.fs.Args() }

// Usage prints every flag with its environment variable and default.
func (f *flagSet) Usage(w io.Writer) {
	fmt.Fprintf(w, "Usage: flywheel %s [flags]\n\n%s\n\nFlags:\n", f.name, f.summary)
	for _, name := range f.order {
		fl := f.fs.Lookup(name)
		typ, usage := flag.UnquoteUsage(fl)
		fmt.Fprintf(w, "  --%s %s\n      %s\n      env %s", name, typ, usage, f.env[name])
		if fl.DefValue != "" && fl.DefValue != "0" && fl.DefValue != "false" {
			fmt.Fprintf(w, ", default %s", fl.DefValue)
		}
		fmt.Fprintln(w)
	}
}

// Markdown prints the flags as a Markdown table (docs/configuration.md is
// made of these: `flywheel <command> --help=markdown`).
func (f *flagSet) Markdown(w io.Writer) {
	cell := strings.NewReplacer("|", `\|`, "\n", " ", "<", "&lt;", ">", "&gt;")
	fmt.Fprintf(w, "## flywheel %s\n\n%s\n\n", f.name, cell.Replace(f.summary))
	if len(f.order) == 0 {
		fmt.Fprintln(w, "No flags.")
		return
	}
	fmt.Fprintln(w, "| flag | environment | default | meaning |")
	fmt.Fprintln(w, "|---|---|---|---|")
	for _, name := range f.order {
		fl := f.fs.Lookup(name)
		typ, usage := flag.UnquoteUsage(fl)
		def := ""
		if fl.DefValue != "" && fl.DefValue != "0" && fl.DefValue != "false" {
			def = "`" + fl.DefValue + "`"
		}
		flagCol := "`--" + name
		if typ != "" {
			flagCol += " " + typ
		}
		fmt.Fprintf(w, "| %s` | `%s` | %s | %s |\n", flagCol, f.env[name], def, cell.Replace(usage))
	}
}
