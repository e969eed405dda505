// Package querytest makes random documents and queries for property tests
// of the query engines.
package querytest

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strings"

	"github.com/open-autoglm/autoglm/app/query"
)

// RandomDocs makes n documents over a few fields with values of mixed types.
func RandomDocs(r *rand.Rand, n int) []query.Item {
	out := make([]query.Item, n)
	for i := range out {
		out[i] = query.Item{ID: fmt.Sprintf("d%02d", r.IntN(100)*100+i), Data: RandomData(r)}
	}
	return out
}

// RandomData is one document's data for property tests.
func RandomData(r *rand.Rand) map[string]any {
	d := map[string]any{}
	for _, f := range []string{"a", "b", "s"} {
		if r.IntN(5) > 0 {
			d[f] = randomValue(r)
		}
	}
	if r.IntN(2) == 0 {
		tags := []any{}
		for range r.IntN(3) {
			tags = append(tags, randomValue(r))
		}
		d["tags"] = tags
	}
	if r.IntN(2) == 0 {
		d["o"] = map[string]any{"x": randomValue(r)}
	}
	return d
}

func randomValue(r *rand.Rand) any {
	switch r.IntN(6) {
	case 0:
		return nil
	case 1:
		return r.IntN(2) == 0
	case 2, 3:
		return float64(r.IntN(5))
	}
	return string(rune('p' + r.IntN(4)))
}

// RandomQuery makes a valid query over RandomData's fields.
func RandomQuery(r *rand.Rand) query.Query {
	paths := []string{"a", "b", "s", "tags", "o.x", "o"}
	var body strings.Builder
	body.WriteString(`{"where":[`)
	for i := range r.IntN(3) {
		if i > 0 {
			body.WriteString(",")
		}
		op := query.Operators[r.IntN(len(query.Operators))]
		var v any = randomValue(r)
		switch op {
		case query.OpLt, query.OpLe, query.OpGt, query.OpGe:
			if r.IntN(2) == 0 {
				v = float64(r.IntN(5))
			} else {
				v = string(rune('p' + r.IntN(4)))
			}
		case query.OpIn:
			v = []any{randomValue(r), randomValue(r)}
		}
		b, _ := json.Marshal([]any{paths[r.IntN(len(paths))], op, v})
		body.Write(b)
	}
	body.WriteString(`],"order_by":[`)
	for i := range r.IntN(3) {
		if i > 0 {
			body.WriteString(",")
		}
		dir := "asc"
		if r.IntN(2) == 0 {
			dir = "desc"
		}
		fmt.Fprintf(&body, `[%q,%q]`, paths[r.IntN(len(paths)-1)], dir)
	}
	fmt.Fprintf(&body, `],"limit":%d}`, r.IntN(6))
	q, err := query.Parse([]byte(body.String()))
	if err != nil {
		panic(body.String() + ": " + err.Error())
	}
	return q
}
