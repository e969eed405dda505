package daprquery

import (
	"encoding/json"
	"testing"

	"github.com/open-autoglm/autoglm/app/core"
	"github.com/open-autoglm/autoglm/app/query"
)

func mustParse(t *testing.T, s string) query.Query {
	t.Helper()
	q, err := query.Parse([]byte(s))
	if err != nil {
		t.Fatal(err)
	}
	return q
}

// Only conditions whose SQL text comparison returns at least every match
// are pushed to the store.
func TestPushable(t *testing.T) {
	for _, tc := range []struct {
		cond string
		want bool
	}{
		{`["status","==","open"]`, true},
		{`["a.b","==",true]`, true},
		{`["n","==",42]`, true},
		{`["n","==",0.5]`, true},
		{`["n","==",1000000]`, false}, // %v prints 1e+06, PostgreSQL 1000000
		{`["n","==",1e-7]`, false},
		{`["n","==",null]`, false}, // ->> gives SQL NULL
		{`["n","in",["a",1]]`, true},
		{`["n","in",["a",null]]`, false},
		{`["n","!=","a"]`, false}, // a missing field matches !=
		{`["n","<",5]`, false},    // text order
		{`["n",">=","a"]`, false},
		{`["tags","contains","a"]`, false},
		{`["it's","==","a"]`, false}, // quoted into SQL unescaped
		{`["a b","==","a"]`, false},
	} {
		q := mustParse(t, `{"where":[`+tc.cond+`]}`)
		if got := Pushable(q.Where[0]); got != tc.want {
			t.Errorf("%s: pushable %v, want %v", tc.cond, got, tc.want)
		}
	}
}

func TestFilter(t *testing.T) {
	q := mustParse(t, `{"where":[["status","==","open"],["n","<",3],["owner","in",["u1","u2"]]]}`)
	f, ok := Filter("app", "orders", q)
	if !ok {
		t.Fatal("not pushed")
	}
	b, _ := json.Marshal(f)
	want := `{"AND":[{"EQ":{"_coll":"app/orders"}},{"EQ":{"state.data.status":"open"}},{"IN":{"state.data.owner":["u1","u2"]}}]}`
	if string(b) != want {
		t.Fatalf("filter %s\nwant   %s", b, want)
	}
	if _, ok := Filter("app", "orders", mustParse(t, `{"where":[["n","<",3]]}`)); ok {
		t.Fatal("a query without a pushable condition must use the index")
	}
}

// The tag leads the document's JSON and decoding ignores it.
func TestTag(t *testing.T) {
	tr := &Transport{App: "app"}
	in := []byte(`{"v":3,"state":{"data":{"a":1}}}`)
	out, ok := tr.Tag("orders", in)
	if !ok || string(out) != `{"_coll":"app/orders","v":3,"state":{"data":{"a":1}}}` {
		t.Fatalf("tag: %s %v", out, ok)
	}
	var d core.Document
	if err := json.Unmarshal(out, &d); err != nil || d.Version != 3 || d.Data()["a"] != 1.0 {
		t.Fatalf("decode: %v %+v", err, d)
	}
	if out, ok := tr.Tag("orders", []byte(`{}`)); !ok || string(out) != `{"_coll":"app/orders"}` {
		t.Fatalf("empty: %s", out)
	}
	if _, ok := tr.Tag("orders", []byte(`"str"`)); ok {
		t.Fatal("tagged a non-object")
	}
	for text, want := range map[string]bool{
		`{"a":"x\u0000y"}`:                                       false, // jsonb refuses NUL
		`{"op":9007199254740993}`:                                false, // daprd would round it
		`{"op":-9007199254740993}`:                               false,
		`{"op":9007199254740992,"v":[1,2.5e300]}`:                true,
		`{"f":0.30000000000000004,"g":123456789012345678901234}`: true, // float64s
		`{"s":"9007199254740993","t":"\"9007199254740993"}`:      true, // strings
		`{"e":9007199254740993e0}`:                               true,
	} {
		if got := jsonable([]byte(text)); got != want {
			t.Errorf("jsonable(%s) = %v", text, got)
		}
	}
}

func TestDocColl(t *testing.T) {
	for key, want := range map[string]string{"orders:o1": "orders", "orders:o1:log:3": "", "orders:_index:4": "",
		"orders:_query": "", "orders:a.b@c": "orders"} {
		got, ok := docColl(key)
		if got != want || ok != (want != "") {
			t.Errorf("%s: %q %v", key, got, ok)
		}
	}
}
