package merge

import (
	"encoding/json"
	"maps"

	"github.com/open-autoglm/autoglm/app/clock"
)

// Candidate is one competing value of a field in conflict (manual policy).
// In the document's data, ConflictsKey maps each conflicted path to its
// candidates:
//
//	"_conflicts": {
//	  "title": [
//	    {"value": "Q3 plan", "by": "alice", "v": 7, "hlc": "1764096000000.0.alice"},
//	    {"value": "Q3 roadmap", "by": "bob", "v": 8, "hlc": "1764096000450.0.bob"}
//	  ]
//	}
//
// A candidate that removed the field has "deleted": true and no value.
type Candidate struct {
	Value   json.RawMessage `json:"value,omitempty"`
	Deleted bool            `json:"deleted,omitempty"`
	By      string          `json:"by"`  // author
	V       int64           `json:"v"`   // version the write produced
	HLC     clock.Timestamp `json:"hlc"` // author's stamp; the field shows the latest candidate
}

// Conflicts returns the open conflicts recorded in a document's data, by
// path, or nil when there are none.
func Conflicts(data map[string]any) map[string][]Candidate {
	raw, ok := data[ConflictsKey].(map[string]any)
	if !ok || len(raw) == 0 {
		return nil
	}
	out := make(map[string][]Candidate, len(raw))
	for p, r := range raw {
		out[p] = exportCands(candsOf(r))
	}
	return out
}

// cand is a Candidate as held in Data (decoded value).
type cand struct {
	val any
	del bool
	by  string
	v   int64
	hlc clock.Timestamp
}

func (c cand) stamp() Stamp { return Stamp{HLC: c.hlc, By: c.by, V: c.v} }

// plain renders a candidate with JSON types only, as Data must hold.
func (c cand) plain() map[string]any {
	m := map[string]any{"by": c.by, "v": float64(c.v), "hlc": c.hlc.String()}
	if c.del {
		m["deleted"] = true
	} else {
		m["value"] = c.val
	}
	return m
}

func plainCands(cs []cand) []any {
	out := make([]any, len(cs))
	for i, c := range cs {
		out[i] = c.plain()
	}
	return out
}

// candsOf reads candidates back from Data; nil when raw is not a list.
func candsOf(raw any) []cand {
	list, ok := raw.([]any)
	if !ok {
		return nil
	}
	out := make([]cand, 0, len(list))
	for _, e := range list {
		m, ok := e.(map[string]any)
		if !ok {
			continue
		}
		var c cand
		c.val = m["value"]
		c.del, _ = m["deleted"].(bool)
		c.by, _ = m["by"].(string)
		if v, ok := m["v"].(float64); ok {
			c.v = int64(v)
		}
		if s, ok := m["hlc"].(string); ok {
			c.hlc, _ = clock.Parse(s)
		}
		out = append(out, c)
	}
	return out
}

func exportCands(cs []cand) []Candidate {
	out := make([]Candidate, len(cs))
	for i, c := range cs {
		out[i] = Candidate{Deleted: c.del, By: c.by, V: c.v, HLC: c.hlc}
		if !c.del {
			out[i].Value, _ = json.Marshal(c.val)
		}
	}
	return out
}

// withoutConflicts returns conf without the entries at and below p.
func withoutConflicts(conf map[string]any, p string) (map[string]any, bool) {
	changed := false
	for k := range conf {
		if isUnder(k, p) {
			changed = true
			break
		}
	}
	if !changed {
		return conf, false
	}
	next := maps.Clone(conf)
	for k := range next {
		if isUnder(k, p) {
			delete(next, k)
		}
	}
	return next, true
}
