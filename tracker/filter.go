package tracker

import (
	"cmp"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"unicode"
)

// Clause is one comparison of a filter: Entity.Key Op Value.
type Clause struct {
	Entity string // metrics, params, tags, attributes
	Key    string
	Op     string // = != < <= > >= LIKE ILIKE
	Value  string // string value, or the number's text for metrics
	Number float64
}

// Filter is a conjunction of clauses (MLflow search_runs supports AND only).
type Filter []Clause

// ParseFilter parses the subset of MLflow's run search syntax Flywheel uses:
//
//	metrics.rmse < 1.5 and params.algorithm = 'gbdt' and tags."flywheel.local_run_id" = 'abc'
//	attributes.status = 'FINISHED'   attributes.run_name LIKE 'train-%'
//
// Keys may be quoted with backticks or double quotes; string values with
// single or double quotes. An empty filter matches everything.
func ParseFilter(s string) (Filter, error) {
	var f Filter
	p := &filterParser{s: s}
	for {
		p.space()
		if p.eof() {
			if len(f) > 0 && p.expectClause {
				return nil, Errorf(ErrInvalid, "filter %q: expected a clause after AND", s)
			}
			return f, nil
		}
		if len(f) > 0 {
			w := p.word()
			if !strings.EqualFold(w, "and") {
				return nil, Errorf(ErrInvalid, "filter %q: expected AND, got %q", s, w)
			}
			p.expectClause = true
			p.space()
		}
		c, err := p.clause()
		if err != nil {
			return nil, Errorf(ErrInvalid, "filter %q: %v", s, err)
		}
		p.expectClause = false
		f = append(f, c)
	}
}

type filterParser struct {
	s            string
	i            int
	expectClause bool
}

func (p *filterParser) eof() bool { return p.i >= len(p.s) }
func (p *filterParser) space() {
	for p.i < len(p.s) && unicode.IsSpace(rune(p.s[p.i])) {
		p.i++
	}
}
func (p *filterParser) word() string {
	j := p.i
	for p.i < len(p.s) && (unicode.IsLetter(rune(p.s[p.i])) || unicode.IsDigit(rune(p.s[p.i])) || strings.ContainsRune("_-.:/", rune(p.s[p.i]))) {
		p.i++
	}
	return p.s[j:p.i]
}
func (p *filterParser) quoted() (string, bool, error) {
	if p.eof() {
		return "", false, fmt.Errorf("unexpected end")
	}
	q := p.s[p.i]
	if q != '\'' && q != '"' && q != '`' {
		return "", false, nil
	}
	end := strings.IndexByte(p.s[p.i+1:], q)
	if end < 0 {
		return "", false, fmt.Errorf("unterminated quote at %d", p.i)
	}
	v := p.s[p.i+1 : p.i+1+end]
	p.i += end + 2
	return v, true, nil
}

func (p *filterParser) clause() (Clause, error) {
	var c Clause
	ent := p.word()
	switch dot := strings.IndexByte(ent, '.'); {
	case dot > 0 && dot < len(ent)-1:
		c.Entity, c.Key = ent[:dot], ent[dot+1:]
	case dot > 0:
		c.Entity = ent[:dot]
		k, ok, err := p.quoted()
		if err != nil {
			return c, err
		}
		if !ok || k == "" {
			return c, fmt.Errorf("expected a key after %q", ent)
		}
		c.Key = k
	default:
		return c, fmt.Errorf("expected <entity>.<key>, got %q", ent)
	}
	switch strings.ToLower(c.Entity) {
	case "metric", "metrics":
		c.Entity = "metrics"
	case "param", "params", "parameter", "parameters":
		c.Entity = "params"
	case "tag", "tags":
		c.Entity = "tags"
	case "attribute", "attributes", "attr", "run":
		c.Entity = "attributes"
	default:
		return c, fmt.Errorf("unknown entity %q (metrics, params, tags, attributes)", c.Entity)
	}
	p.space()
	j := p.i
	for p.i < len(p.s) && strings.ContainsRune("=!<>", rune(p.s[p.i])) {
		p.i++
	}
	c.Op = p.s[j:p.i]
	if c.Op == "" {
		c.Op = strings.ToUpper(p.word())
	}
	switch c.Op {
	case "=", "!=", "<", "<=", ">", ">=":
	case "LIKE", "ILIKE":
		if c.Entity == "metrics" {
			return c, fmt.Errorf("LIKE does not apply to metrics")
		}
	default:
		return c, fmt.Errorf("unknown comparator %q", c.Op)
	}
	p.space()
	v, ok, err := p.quoted()
	if err != nil {
		return c, err
	}
	if !ok {
		v = p.word()
		if v == "" {
			return c, fmt.Errorf("expected a value for %s.%s", c.Entity, c.Key)
		}
		n, err := strconv.ParseFloat(v, 64)
		if err != nil {
			return c, fmt.Errorf("value %q: strings must be quoted", v)
		}
		c.Number = n
	} else if c.Entity == "metrics" {
		return c, fmt.Errorf("metric %q compares with a number, got a string", c.Key)
	}
	c.Value = v
	return c, nil
}

// Match reports whether r satisfies every clause.
func (f Filter) Match(r Run) bool {
	for _, c := range f {
		if !c.match(r) {
			return false
		}
	}
	return true
}

func (c Clause) match(r Run) bool {
	switch c.Entity {
	case "metrics":
		m, ok := r.Metrics[c.Key]
		if !ok {
			return false
		}
		return cmpNum(m.Value, c.Op, c.Number)
	case "params":
		v, ok := r.Params[c.Key]
		return ok && cmpStr(v, c.Op, c.Value)
	case "tags":
		v, ok := r.Tags[c.Key]
		return ok && cmpStr(v, c.Op, c.Value)
	default:
		var v string
		switch c.Key {
		case "run_id", "run_uuid":
			v = r.Info.ID
		case "run_name":
			v = r.Info.Name
		case "status":
			v = string(r.Info.Status)
		case "experiment_id":
			v = r.Info.ExperimentID
		case "start_time":
			return cmpNum(float64(r.Info.StartTime), c.Op, c.Number)
		case "end_time":
			return cmpNum(float64(r.Info.EndTime), c.Op, c.Number)
		default:
			return false
		}
		return cmpStr(v, c.Op, c.Value)
	}
}

// compare applies one of the comparisons =, !=, <, <=, >, >= (false for
// any other op).
func compare[T cmp.Ordered](a T, op string, b T) bool {
	switch op {
	case "=":
		return a == b
	case "!=":
		return a != b
	case "<":
		return a < b
	case "<=":
		return a <= b
	case ">":
		return a > b
	case ">=":
		return a >= b
	}
	return false
}

func cmpNum(a float64, op string, b float64) bool { return compare(a, op, b) }

func cmpStr(a, op, b string) bool {
	switch op {
	case "LIKE":
		return like(a, b)
	case "ILIKE":
		return like(strings.ToLower(a), strings.ToLower(b))
	}
	return compare(a, op, b)
}

// like implements SQL LIKE with % and _.
func like(s, pat string) bool {
	if pat == "" {
		return s == ""
	}
	switch pat[0] {
	case '%':
		for i := 0; i <= len(s); i++ {
			if like(s[i:], pat[1:]) {
				return true
			}
		}
		return false
	case '_':
		return s != "" && like(s[1:], pat[1:])
	default:
		return s != "" && s[0] == pat[0] && like(s[1:], pat[1:])
	}
}

// SortRuns orders runs by MLflow order_by clauses ("metrics.rmse ASC",
// "attributes.start_time DESC"); the default is start_time DESC.
func SortRuns(runs []Run, orderBy []string) error {
	type key struct {
		ent, name string
		desc      bool
	}
	var keys []key
	for _, o := range orderBy {
		fields := strings.Fields(o)
		if len(fields) == 0 || len(fields) > 2 {
			return Errorf(ErrInvalid, "order_by %q", o)
		}
		k := key{}
		if len(fields) == 2 {
			switch strings.ToUpper(fields[1]) {
			case "ASC":
			case "DESC":
				k.desc = true
			default:
				return Errorf(ErrInvalid, "order_by %q: ASC or DESC", o)
			}
		}
		name := strings.Trim(fields[0], "`\"")
		if dot := strings.IndexByte(name, '.'); dot >= 0 {
			k.ent, k.name = name[:dot], strings.Trim(name[dot+1:], "`\"")
		} else {
			k.ent, k.name = "attributes", name
		}
		keys = append(keys, k)
	}
	keys = append(keys, key{ent: "attributes", name: "start_time", desc: true}, key{ent: "attributes", name: "run_id"})
	sort.SliceStable(runs, func(i, j int) bool {
		for _, k := range keys {
			c := compareRunField(runs[i], runs[j], k.ent, k.name)
			if c == 0 {
				continue
			}
			if k.desc {
				return c > 0
			}
			return c < 0
		}
		return false
	})
	return nil
}

func compareRunField(a, b Run, ent, name string) int {
	switch strings.TrimSuffix(ent, "s") {
	case "metric":
		ma, oka := a.Metrics[name]
		mb, okb := b.Metrics[name]
		switch {
		case !oka && !okb:
			return 0
		case !oka:
			return 1
		case !okb:
			return -1
		case ma.Value < mb.Value:
			return -1
		case ma.Value > mb.Value:
			return 1
		}
		return 0
	case "param":
		return strings.Compare(a.Params[name], b.Params[name])
	case "tag":
		return strings.Compare(a.Tags[name], b.Tags[name])
	}
	switch name {
	case "start_time":
		return cmpInt(a.Info.StartTime, b.Info.StartTime)
	case "end_time":
		return cmpInt(a.Info.EndTime, b.Info.EndTime)
	case "run_name":
		return strings.Compare(a.Info.Name, b.Info.Name)
	case "status":
		return strings.Compare(string(a.Info.Status), string(b.Info.Status))
	}
	return strings.Compare(a.Info.ID, b.Info.ID)
}

func cmpInt(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
