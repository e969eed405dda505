// Package query is the query language of collections: parsing and
// validation, matching a document's data, ordering, limits and cursors. It
// does no I/O; the REST query endpoint, live queries and the store-side
// engines all evaluate queries with it (docs/protocol.md, "Queries").
//
// A query is {"where": [[path, op, value], …], "order_by": [[path,
// "asc"|"desc"], …], "limit": n, "after": cursor}. Conditions are ANDed.
// Results are ordered by order_by, then by document id ascending, so every
// order is total and a cursor names one position in it.
package query

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"

	"github.com/open-autoglm/autoglm/app/core"
	"github.com/open-autoglm/autoglm/app/merge"
)

// Limits of a query.
const (
	MaxLimit   = 500 // largest "limit"
	MaxWhere   = 16  // conditions
	MaxOrderBy = 4   // order keys
	MaxIn      = 100 // values of one "in"
)

// Operators.
const (
	OpEq       = "=="
	OpNe       = "!="
	OpLt       = "<"
	OpLe       = "<="
	OpGt       = ">"
	OpGe       = ">="
	OpIn       = "in"
	OpContains = "contains"
)

// Operators lists every operator.
var Operators = []string{OpEq, OpNe, OpLt, OpLe, OpGt, OpGe, OpIn, OpContains}

// Cond is one condition: the value at Path compared with Value by Op.
type Cond struct {
	Path  string
	Op    string
	Value any
}

// Order is one order key.
type Order struct {
	Path string
	Desc bool
}

// Query is a parsed, valid query.
type Query struct {
	Where   []Cond
	OrderBy []Order
	// Limit is the most results (0: no limit).
	Limit int
	// After, when set, keeps only the results after this position.
	After *Cursor
}

// Cursor is a position in a query's order: the order key values and the id
// of a document.
type Cursor struct {
	Keys []any  `json:"k"`
	ID   string `json:"id"`
}

type wire struct {
	Where   []json.RawMessage `json:"where"`
	OrderBy []json.RawMessage `json:"order_by"`
	Limit   *json.Number      `json:"limit"`
	After   *string           `json:"after"`
}

func bad(format string, args ...any) error {
	return core.Errorf(core.CodeBadRequest, "query: "+format, args...)
}

// Parse reads and validates a query. Every refusal is a bad_request error
// whose message names the problem.
func Parse(b []byte) (Query, error) {
	var w wire
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	dec.UseNumber()
	if err := dec.Decode(&w); err != nil {
		return Query{}, bad("malformed: %v", err)
	}
	var q Query
	if len(w.Where) > MaxWhere {
		return Query{}, bad("more than %d where conditions", MaxWhere)
	}
	for i, raw := range w.Where {
		c, err := parseCond(i, raw)
		if err != nil {
			return Query{}, err
		}
		q.Where = append(q.Where, c)
	}
	if len(w.OrderBy) > MaxOrderBy {
		return Query{}, bad("more than %d order_by keys", MaxOrderBy)
	}
	for i, raw := range w.OrderBy {
		var parts []json.RawMessage
		if err := json.Unmarshal(raw, &parts); err != nil || len(parts) < 1 || len(parts) > 2 {
			return Query{}, bad("order_by[%d]: want [path, \"asc\"|\"desc\"]", i)
		}
		path, err := parsePath(fmt.Sprintf("order_by[%d]", i), parts[0])
		if err != nil {
			return Query{}, err
		}
		o := Order{Path: path}
		if len(parts) == 2 {
			var dir string
			if json.Unmarshal(parts[1], &dir) != nil || (dir != "asc" && dir != "desc") {
				return Query{}, bad("order_by[%d]: direction %s: want \"asc\" or \"desc\"", i, trunc(string(parts[1])))
			}
			o.Desc = dir == "desc"
		}
		q.OrderBy = append(q.OrderBy, o)
	}
	if w.Limit != nil {
		n, err := w.Limit.Int64()
		if err != nil || n < 0 {
			return Query{}, bad("limit %s: want an integer 1..%d", trunc(w.Limit.String()), MaxLimit)
		}
		if n > MaxLimit {
			return Query{}, bad("limit %d is over the maximum %d", n, MaxLimit)
		}
		q.Limit = int(n)
	}
	if w.After != nil {
		c, err := ParseCursor(*w.After)
		if err != nil {
			return Query{}, err
		}
		if len(c.Keys) != len(q.OrderBy) {
			return Query{}, bad("after: the cursor has %d order keys, the query %d", len(c.Keys), len(q.OrderBy))
		}
		q.After = &c
	}
	return q, nil
}

func trunc(s string) string {
	if len(s) > 60 {
		return s[:60] + "…"
	}
	return s
}

func parsePath(what string, raw json.RawMessage) (string, error) {
	var p string
	if err := json.Unmarshal(raw, &p); err != nil {
		return "", bad("%s: path %s: want a string", what, trunc(string(raw)))
	}
	if err := merge.ValidatePath(p); err != nil {
		return "", bad("%s: bad path %q: %s", what, trunc(p), strings.TrimPrefix(err.Error(), merge.ErrInvalidOp.Error()+": "))
	}
	return p, nil
}

func parseCond(i int, raw json.RawMessage) (Cond, error) {
	what := fmt.Sprintf("where[%d]", i)
	var parts []json.RawMessage
	if err := json.Unmarshal(raw, &parts); err != nil || len(parts) != 3 {
		return Cond{}, bad("%s: want [path, op, value]", what)
	}
	path, err := parsePath(what, parts[0])
	if err != nil {
		return Cond{}, err
	}
	var op string
	if json.Unmarshal(parts[1], &op) != nil || !slices.Contains(Operators, op) {
		return Cond{}, bad("%s: unknown operator %s: want one of %s", what, trunc(string(parts[1])), strings.Join(Operators, " "))
	}
	var v any
	d := json.NewDecoder(bytes.NewReader(parts[2]))
	d.UseNumber()
	if err := d.Decode(&v); err != nil {
		return Cond{}, bad("%s: value: %v", what, err)
	}
	v = Normalize(v)
	switch op {
	case OpLt, OpLe, OpGt, OpGe:
		switch v.(type) {
		case float64, string:
		default:
			return Cond{}, bad("%s: %s needs a number or a string, not %s", what, op, typeName(v))
		}
	case OpIn:
		list, ok := v.([]any)
		if !ok {
			return Cond{}, bad("%s: in needs an array of values, not %s", what, typeName(v))
		}
		if len(list) > MaxIn {
			return Cond{}, bad("%s: in has more than %d values", what, MaxIn)
		}
		for _, e := range list {
			if !scalar(e) {
				return Cond{}, bad("%s: in values must be strings, numbers, booleans or null, not %s", what, typeName(e))
			}
		}
	default:
		if !scalar(v) {
			return Cond{}, bad("%s: %s needs a string, number, boolean or null, not %s", what, op, typeName(v))
		}
	}
	return Cond{Path: path, Op: op, Value: v}, nil
}

func scalar(v any) bool {
	switch v.(type) {
	case nil, bool, float64, string:
		return true
	}
	return false
}

func typeName(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case bool:
		return "a boolean"
	case float64:
		return "a number"
	case string:
		return "a string"
	case []any:
		return "an array"
	case map[string]any:
		return "an object"
	}
	return fmt.Sprintf("%T", v)
}

// Normalize turns the numbers of a decoded JSON value (json.Number, Go
// integer types) into float64, as documents hold them.
func Normalize(v any) any {
	switch x := v.(type) {
	case json.Number:
		f, err := x.Float64()
		if err != nil {
			return math.Inf(1)
		}
		return f
	case int:
		return float64(x)
	case int64:
		return float64(x)
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = Normalize(e)
		}
		return out
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			out[k] = Normalize(e)
		}
		return out
	}
	return v
}

// EqualityKey returns the query's first "==" condition as a path and the
// key of its value (see ValueKey): every result holds that value there, so
// an index on the path narrows the candidates. ok is false when the query
// has no such condition.
func (q Query) EqualityKey() (path, key string, ok bool) {
	for _, c := range q.Where {
		if c.Op == OpEq {
			if k, ok := ValueKey(c.Value); ok {
				return c.Path, k, true
			}
		}
	}
	return "", "", false
}

// ValueKey renders a scalar value (null, boolean, number, string) as a
// string that is equal for equal values; ok is false for other values.
func ValueKey(v any) (string, bool) {
	switch x := num(v).(type) {
	case nil:
		return "z", true
	case bool:
		if x {
			return "t", true
		}
		return "f", true
	case float64:
		return "n" + strconv.FormatFloat(x, 'g', -1, 64), true
	case string:
		return "s" + x, true
	}
	return "", false
}

// Paths lists the fields the query reads (where and order_by), each once.
func (q Query) Paths() []string {
	var out []string
	for _, c := range q.Where {
		if !slices.Contains(out, c.Path) {
			out = append(out, c.Path)
		}
	}
	for _, o := range q.OrderBy {
		if !slices.Contains(out, o.Path) {
			out = append(out, o.Path)
		}
	}
	return out
}

// Match reports whether data satisfies every condition. A condition on a
// missing field matches only "!=" (a missing field equals nothing);
// "<", "<=", ">", ">=" match only values of the condition's type (numbers
// with numbers, strings with strings); "contains" matches an array holding
// the value, or an object with the value (a string) as a key.
func (q Query) Match(data map[string]any) bool {
	for _, c := range q.Where {
		if !c.match(data) {
			return false
		}
	}
	return true
}

func (c Cond) match(data map[string]any) bool {
	v, ok := merge.Lookup(data, c.Path)
	if !ok {
		return c.Op == OpNe
	}
	v = num(v)
	switch c.Op {
	case OpEq:
		return equal(v, c.Value)
	case OpNe:
		return !equal(v, c.Value)
	case OpIn:
		return slices.ContainsFunc(c.Value.([]any), func(e any) bool { return equal(v, e) })
	case OpContains:
		switch x := v.(type) {
		case []any:
			return slices.ContainsFunc(x, func(e any) bool { return equal(num(e), c.Value) })
		case map[string]any:
			s, ok := c.Value.(string)
			if !ok {
				return false
			}
			_, has := x[s]
			return has
		}
		return false
	}
	// ordering operators
	var cmp int
	switch want := c.Value.(type) {
	case float64:
		f, ok := v.(float64)
		if !ok {
			return false
		}
		cmp = cmpFloat(f, want)
	case string:
		s, ok := v.(string)
		if !ok {
			return false
		}
		cmp = strings.Compare(s, want)
	}
	switch c.Op {
	case OpLt:
		return cmp < 0
	case OpLe:
		return cmp <= 0
	case OpGt:
		return cmp > 0
	default:
		return cmp >= 0
	}
}

// num turns Go integer values into float64 (documents built in process may
// hold them).
func num(v any) any {
	switch x := v.(type) {
	case int:
		return float64(x)
	case int64:
		return float64(x)
	case json.Number:
		return Normalize(x)
	}
	return v
}

func equal(a, b any) bool {
	switch a.(type) {
	case nil:
		return b == nil
	case bool, float64, string:
		return a == b
	}
	return false // arrays and objects equal no scalar
}

func cmpFloat(a, b float64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// rank orders values of different types: missing, null, booleans,
// numbers, strings, then arrays and objects.
func rank(v any, ok bool) int {
	if !ok {
		return 0
	}
	switch v.(type) {
	case nil:
		return 1
	case bool:
		return 2
	case float64:
		return 3
	case string:
		return 4
	}
	return 5
}

// CompareValues orders two order-key values (ok: the field exists): by
// type rank, then within numbers, strings and booleans by value. Arrays
// and objects compare by their JSON text.
func CompareValues(a any, aok bool, b any, bok bool) int {
	a, b = num(a), num(b)
	ra, rb := rank(a, aok), rank(b, bok)
	if ra != rb {
		return ra - rb
	}
	switch x := a.(type) {
	case bool:
		y := b.(bool)
		switch {
		case x == y:
			return 0
		case !x:
			return -1
		}
		return 1
	case float64:
		return cmpFloat(x, b.(float64))
	case string:
		return strings.Compare(x, b.(string))
	}
	if ra == 5 {
		ja, _ := json.Marshal(a)
		jb, _ := json.Marshal(b)
		return bytes.Compare(ja, jb)
	}
	return 0
}

// Item is a document as queries see it.
type Item struct {
	ID   string
	Data map[string]any
}

// Compare orders two documents by the query's order: its order keys, then
// the id ascending.
func (q Query) Compare(a, b Item) int {
	for _, o := range q.OrderBy {
		av, aok := merge.Lookup(a.Data, o.Path)
		bv, bok := merge.Lookup(b.Data, o.Path)
		c := CompareValues(av, aok, bv, bok)
		if o.Desc {
			c = -c
		}
		if c != 0 {
			return c
		}
	}
	return strings.Compare(a.ID, b.ID)
}

// key is a cursor's value for one order key: missing fields are absent
// from the cursor's JSON as a marker object.
type missing struct {
	Missing bool `json:"$missing"`
}

// CursorOf is the position of item in the query's order.
func (q Query) CursorOf(it Item) Cursor {
	c := Cursor{ID: it.ID, Keys: make([]any, len(q.OrderBy))}
	for i, o := range q.OrderBy {
		v, ok := merge.Lookup(it.Data, o.Path)
		if !ok {
			c.Keys[i] = missing{true}
			continue
		}
		c.Keys[i] = v
	}
	return c
}

// AfterCursor reports whether item comes after cursor c in the order.
func (q Query) AfterCursor(it Item, c Cursor) bool {
	for i, o := range q.OrderBy {
		av, aok := merge.Lookup(it.Data, o.Path)
		cv, cok := c.Keys[i], true
		if m, isM := cv.(map[string]any); isM && m["$missing"] == true {
			cv, cok = nil, false
		} else if _, isM := cv.(missing); isM {
			cv, cok = nil, false
		}
		r := CompareValues(av, aok, cv, cok)
		if o.Desc {
			r = -r
		}
		if r != 0 {
			return r > 0
		}
	}
	return it.ID > c.ID
}

// Encode renders the cursor as the opaque string clients send back.
func (c Cursor) Encode() string {
	b, _ := json.Marshal(c)
	return base64.RawURLEncoding.EncodeToString(b)
}

// ParseCursor reads a cursor made by Encode.
func ParseCursor(s string) (Cursor, error) {
	b, err := base64.RawURLEncoding.DecodeString(s)
	var c Cursor
	if err == nil {
		d := json.NewDecoder(bytes.NewReader(b))
		d.UseNumber()
		err = d.Decode(&c)
	}
	if err != nil || c.ID == "" {
		return Cursor{}, bad("after: not a cursor this service made")
	}
	for i, k := range c.Keys {
		c.Keys[i] = Normalize(k)
	}
	return c, nil
}

// Admits reports whether item is a result of the query, limit aside: it
// matches and comes after the query's cursor.
func (q Query) Admits(it Item) bool {
	return q.Match(it.Data) && (q.After == nil || q.AfterCursor(it, *q.After))
}

// Run evaluates the query over items: the admitted ones in order, at most
// Limit of them, and whether more follow.
func (q Query) Run(items []Item) (out []Item, more bool) {
	for _, it := range items {
		if q.Admits(it) {
			out = append(out, it)
		}
	}
	slices.SortFunc(out, q.Compare)
	if q.Limit > 0 && len(out) > q.Limit {
		return out[:q.Limit], true
	}
	return out, false
}
