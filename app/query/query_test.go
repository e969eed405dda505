package query_test

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/open-autoglm/autoglm/app/core"
	. "github.com/open-autoglm/autoglm/app/query"
	"github.com/open-autoglm/autoglm/app/query/querytest"
)

func TestParseRefusesWithTheProblemNamed(t *testing.T) {
	cases := []struct{ body, want string }{
		{`{"where":[["a","~=",1]]}`, "unknown operator"},
		{`{"where":[["_a","==",1]]}`, "bad path"},
		{`{"where":[["a..b","==",1]]}`, "bad path"},
		{`{"where":[[3,"==",1]]}`, "want a string"},
		{`{"where":[["a","<",true]]}`, "needs a number or a string"},
		{`{"where":[["a","in",3]]}`, "in needs an array"},
		{`{"where":[["a","in",[[1]]]]}`, "in values must be"},
		{`{"where":[["a","==",{"x":1}]]}`, "needs a string, number, boolean or null"},
		{`{"where":[["a","=="]]}`, "want [path, op, value]"},
		{`{"order_by":[["a","up"]]}`, "want \"asc\" or \"desc\""},
		{`{"limit":501}`, "over the maximum 500"},
		{`{"limit":-1}`, "want an integer"},
		{`{"limit":1.5}`, "want an integer"},
		{`{"after":"xyz"}`, "not a cursor"},
		{`{"wher":[]}`, "unknown field"},
	}
	for _, c := range cases {
		_, err := Parse([]byte(c.body))
		if err == nil {
			t.Errorf("%s: accepted", c.body)
			continue
		}
		if core.CodeOf(err) != core.CodeBadRequest || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v (%s), want bad_request naming %q", c.body, err, core.CodeOf(err), c.want)
		}
	}
	q, err := Parse([]byte(`{"where":[["a.b","in",[1,"x",null]],["c","contains","t"]],"order_by":[["n","desc"],["s"]],"limit":500}`))
	if err != nil {
		t.Fatal(err)
	}
	if len(q.Where) != 2 || q.Limit != 500 || !q.OrderBy[0].Desc || q.OrderBy[1].Desc {
		t.Fatalf("parsed %+v", q)
	}
}

func TestMatchSemantics(t *testing.T) {
	data := map[string]any{"n": 3.0, "s": "b", "tags": []any{"x", 2.0}, "set": map[string]any{"k": true},
		"nested": map[string]any{"v": 1}, "nil": nil, "yes": true}
	cases := []struct {
		where string
		want  bool
	}{
		{`[["n","==",3]]`, true}, {`[["n","==","3"]]`, false}, {`[["n","!=",4]]`, true},
		{`[["missing","!=",4]]`, true}, {`[["missing","==",null]]`, false}, {`[["nil","==",null]]`, true},
		{`[["n","<",4]]`, true}, {`[["n","<","4"]]`, false}, {`[["s",">=","b"]]`, true}, {`[["s",">","b"]]`, false},
		{`[["n","in",[1,3]]]`, true}, {`[["n","in",[]]]`, false},
		{`[["tags","contains","x"]]`, true}, {`[["tags","contains",2]]`, true}, {`[["tags","contains","y"]]`, false},
		{`[["set","contains","k"]]`, true}, {`[["s","contains","b"]]`, false},
		{`[["nested.v","==",1]]`, true}, {`[["nested.v.w","==",1]]`, false},
		{`[["yes","==",true],["n",">",2]]`, true}, {`[["yes","==",true],["n",">",3]]`, false},
	}
	for _, c := range cases {
		q, err := Parse([]byte(`{"where":` + c.where + `}`))
		if err != nil {
			t.Fatal(err)
		}
		if got := q.Match(data); got != c.want {
			t.Errorf("%s: %v, want %v", c.where, got, c.want)
		}
	}
}

// Random documents and queries: Run, and paging through Run with cursors,
// give the results of a brute-force evaluation written independently.
func TestQueryProperty(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for round := range 300 {
		docs := querytest.RandomDocs(r, 1+r.IntN(40))
		q := querytest.RandomQuery(r)
		want := bruteForce(q, docs)
		all := q
		all.Limit = 0
		got, _ := all.Run(docs)
		if !sameIDs(got, want) {
			t.Fatalf("round %d: query %s\n got %v\nwant %v", round, describe(q), ids(got), ids(want))
		}
		// Page through with the query's limit (or 3) and its cursors.
		page := q
		if page.Limit == 0 {
			page.Limit = 3
		}
		var paged []Item
		for i := 0; ; i++ {
			items, more := page.Run(docs)
			paged = append(paged, items...)
			if !more {
				break
			}
			c, err := ParseCursor(page.CursorOf(items[len(items)-1]).Encode())
			if err != nil {
				t.Fatal(err)
			}
			page.After = &c
			if i > 100 {
				t.Fatal("paging does not end")
			}
		}
		if !sameIDs(paged, want) {
			t.Fatalf("round %d: paged %s\n got %v\nwant %v", round, describe(q), ids(paged), ids(want))
		}
	}
}

// bruteForce evaluates q by its documented semantics, without Match or
// Compare: each condition on its own, then an order by explicit sort keys.
func bruteForce(q Query, docs []Item) []Item {
	var out []Item
	for _, d := range docs {
		ok := true
		for _, c := range q.Where {
			v, has := lookupSlow(d.Data, c.Path)
			var m bool
			switch {
			case !has:
				m = c.Op == OpNe
			case c.Op == OpEq:
				m = isScalar(v) && v == c.Value
			case c.Op == OpNe:
				m = !(isScalar(v) && v == c.Value)
			case c.Op == OpIn:
				m = isScalar(v) && slices.Contains(c.Value.([]any), v)
			case c.Op == OpContains:
				if arr, isArr := v.([]any); isArr {
					m = slices.Contains(arr, c.Value)
				} else if obj, isObj := v.(map[string]any); isObj {
					if s, isStr := c.Value.(string); isStr {
						_, m = obj[s]
					}
				}
			default:
				m = orderedMatch(c.Op, v, c.Value)
			}
			ok = ok && m
		}
		if ok && q.After != nil {
			ok = sortKey(q, d) > cursorKey(q, *q.After)
		}
		if ok {
			out = append(out, d)
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return sortKey(q, out[i]) < sortKey(q, out[j]) })
	return out
}

func orderedMatch(op string, v, want any) bool {
	var c int
	switch w := want.(type) {
	case float64:
		f, ok := v.(float64)
		if !ok {
			return false
		}
		c = int(f - w) // values are small integers
	case string:
		s, ok := v.(string)
		if !ok {
			return false
		}
		c = strings.Compare(s, w)
	}
	return map[string]bool{OpLt: c < 0, OpLe: c <= 0, OpGt: c > 0, OpGe: c >= 0}[op]
}

func lookupSlow(d map[string]any, path string) (any, bool) {
	parts := strings.Split(path, ".")
	var cur any = d
	for _, p := range parts {
		m, ok := cur.(map[string]any)
		if !ok {
			return nil, false
		}
		cur, ok = m[p]
		if !ok {
			return nil, false
		}
	}
	return cur, true
}

// sortKey renders a document's position as a string that sorts as the
// documented order: per key a type rank and a fixed-width value (inverted
// for desc), then the id.
func sortKey(q Query, d Item) string {
	var b strings.Builder
	for _, o := range q.OrderBy {
		v, has := lookupSlow(d.Data, o.Path)
		b.WriteString(keyPart(v, has, o.Desc))
	}
	b.WriteString(d.ID)
	return b.String()
}

func cursorKey(q Query, c Cursor) string {
	var b strings.Builder
	for i, o := range q.OrderBy {
		v, has := c.Keys[i], true
		if m, ok := v.(map[string]any); ok && m["$missing"] == true {
			v, has = nil, false
		}
		b.WriteString(keyPart(v, has, o.Desc))
	}
	b.WriteString(c.ID)
	return b.String()
}

func keyPart(v any, has, desc bool) string {
	var s string
	switch x := v.(type) {
	case nil:
		s = "1"
		if !has {
			s = "0"
		}
		s += strings.Repeat(" ", 30)
	case bool:
		s = "2" + map[bool]string{false: "0", true: "1"}[x] + strings.Repeat(" ", 29)
	case float64:
		s = fmt.Sprintf("3%030d", int(x))
	case string:
		s = fmt.Sprintf("4%-30s", x)
	default:
		j, _ := json.Marshal(x)
		s = fmt.Sprintf("5%-30s", string(j))
	}
	if desc {
		r := []byte(s)
		for i := range r {
			r[i] = 255 - r[i]
		}
		s = string(r)
	}
	return s + "|"
}

func ids(items []Item) []string {
	out := make([]string, len(items))
	for i, it := range items {
		out[i] = it.ID
	}
	return out
}

func sameIDs(a, b []Item) bool { return slices.Equal(ids(a), ids(b)) }

func describe(q Query) string { b, _ := json.Marshal(q); return string(b) }

func isScalar(v any) bool {
	switch v.(type) {
	case nil, bool, float64, string:
		return true
	}
	return false
}
