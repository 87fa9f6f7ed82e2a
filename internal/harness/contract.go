package harness

import (
	"fmt"
	"reflect"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"
)

// ContractTest is the signature of one case of a storage contract suite:
// newURL returns the URL of a fresh, empty database of the backend under
// test.
type ContractTest = func(t *testing.T, newURL func(testing.TB) string)

// ContractCase is one case of a storage contract suite, found by
// ContractCases.
type ContractCase struct {
	Name string
	Test ContractTest
}

// RunContract runs every case of a storage contract suite against each of
// Backends, as subtests named backend/case. The suite is a value whose
// exported methods are its cases: a method TestName(t *testing.T, newURL
// func(testing.TB) string) is the case Name, so a case written is a case
// run. It fails before starting any backend if the suite has no cases or an
// exported method is not a case (see ContractCases).
func RunContract(t *testing.T, suite any) {
	t.Helper()
	cases, err := ContractCases(suite)
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range Backends(t) {
		t.Run(b.Name, func(t *testing.T) {
			for _, c := range cases {
				t.Run(c.Name, func(t *testing.T) { c.Test(t, b.NewURL) })
			}
		})
	}
}

// ContractCases returns the cases of a contract suite, sorted by name: its
// exported methods (of the value or of a pointer to it), each named
// Test<Name> with Name starting with an upper-case letter or digit, and of
// type ContractTest. An exported method that is not such a case, or a suite
// without cases, is an error.
func ContractCases(suite any) ([]ContractCase, error) {
	v := reflect.ValueOf(suite)
	if !v.IsValid() {
		return nil, fmt.Errorf("contract suite is nil")
	}
	if v.Kind() != reflect.Pointer {
		// Methods with pointer receivers count too.
		p := reflect.New(v.Type())
		p.Elem().Set(v)
		v = p
	}
	typ := v.Type()
	var cases []ContractCase
	var bad []string
	for i := 0; i < typ.NumMethod(); i++ { // sorted by name
		m := typ.Method(i)
		name, ok := strings.CutPrefix(m.Name, "Test")
		r, _ := utf8.DecodeRuneInString(name)
		test, isCase := v.Method(i).Interface().(ContractTest)
		switch {
		case !ok || !unicode.IsUpper(r) && !unicode.IsDigit(r):
			bad = append(bad, fmt.Sprintf("%s: not named Test<Name>", m.Name))
		case !isCase:
			bad = append(bad, fmt.Sprintf("%s: is %s, want func(*testing.T, func(testing.TB) string)", m.Name, v.Method(i).Type()))
		default:
			cases = append(cases, ContractCase{Name: name, Test: test})
		}
	}
	if len(bad) > 0 {
		return nil, fmt.Errorf("contract suite %s: exported methods that are not cases: %s", typ.Elem(), strings.Join(bad, "; "))
	}
	if len(cases) == 0 {
		return nil, fmt.Errorf("contract suite %s has no cases (exported methods Test<Name>(t *testing.T, newURL func(testing.TB) string))", typ.Elem())
	}
	return cases, nil
}
