package harness

import (
	"reflect"
	"strings"
	"testing"
)

// Suites for TestContractCases: each exported method is a candidate case.
type (
	goodSuite     struct{ calls *[]string }
	noCases       struct{}
	wrongSig      struct{}
	notNamedCase  struct{}
	lowerCaseName struct{}
)

func (s goodSuite) TestZeta(t *testing.T, newURL func(testing.TB) string) {
	*s.calls = append(*s.calls, "Zeta "+newURL(t))
}

func (s *goodSuite) TestAlpha(t *testing.T, newURL func(testing.TB) string) {
	*s.calls = append(*s.calls, "Alpha "+newURL(t))
}

func (s goodSuite) Test2PC(t *testing.T, newURL func(testing.TB) string) {
	*s.calls = append(*s.calls, "2PC "+newURL(t))
}

// helper is unexported: not a candidate.
func (goodSuite) helper() {}

func (noCases) helper() {}

func (wrongSig) TestOK(t *testing.T, newURL func(testing.TB) string) {}
func (wrongSig) TestNoURL(t *testing.T)                              {}

func (notNamedCase) TestOK(t *testing.T, newURL func(testing.TB) string) {}
func (notNamedCase) Open(t *testing.T, newURL func(testing.TB) string)   {}

func (lowerCaseName) Testok(t *testing.T, newURL func(testing.TB) string) {}

// TestContractCases: a suite's cases are its exported Test<Name> methods
// (value and pointer receivers), sorted by name; a suite without cases or
// with an exported method that is not a case is refused, naming the method.
func TestContractCases(t *testing.T) {
	var calls []string
	for _, tc := range []struct {
		name  string
		suite any
		want  []string // case names, or nil with err
		err   string
	}{
		{name: "value", suite: goodSuite{&calls}, want: []string{"2PC", "Alpha", "Zeta"}},
		{name: "pointer", suite: &goodSuite{&calls}, want: []string{"2PC", "Alpha", "Zeta"}},
		{name: "no cases", suite: noCases{}, err: "harness.noCases has no cases"},
		{name: "wrong signature", suite: wrongSig{}, err: "TestNoURL: is func(*testing.T), want"},
		{name: "not named Test", suite: notNamedCase{}, err: "Open: not named Test<Name>"},
		{name: "lower-case name", suite: lowerCaseName{}, err: "Testok: not named Test<Name>"},
		{name: "nil", suite: nil, err: "contract suite is nil"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cases, err := ContractCases(tc.suite)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want one containing %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			calls = nil
			for _, c := range cases {
				names = append(names, c.Name)
				c.Test(t, func(testing.TB) string { return "url" })
			}
			if !reflect.DeepEqual(names, tc.want) {
				t.Errorf("cases %v, want %v", names, tc.want)
			}
			// Each case runs its own method.
			if want := []string{"2PC url", "Alpha url", "Zeta url"}; !reflect.DeepEqual(calls, want) {
				t.Errorf("calls %v, want %v", calls, want)
			}
		})
	}
}
