package collections

import (
	"encoding/json"
	"slices"
	"strings"

	"github.com/open-autoglm/autoglm/app/merge"
)

// OwnerRole is the name that, in a field's readable_by, stands for the
// document's owner (its owner_field equals the reader's subject).
const OwnerRole = "owner"

// ReadRules are a collection's row rules: which of its documents a reader
// may see. A collection without them lets everyone who passes read_roles
// read every document. With them, a document is readable when at least one
// rule admits the reader.
type ReadRules struct {
	// Owner admits the document's owner (owner_field == the subject).
	Owner bool
	// Claims admit a reader when a document field (the key, a dot path)
	// equals the reader's token claim named by the value.
	Claims map[string]string
	// Roles admit readers holding one of them, whatever the document says.
	Roles []string
}

// Reader is who reads: the token's subject, roles and string claims.
type Reader struct {
	Subject string
	Roles   []string
	Claims  map[string]string
}

// View is what one reader may see of one document: nothing (Denied), or
// the document without the fields at the Hidden paths (and below them).
// Readers with equal views get the same messages, so Key groups them.
type View struct {
	Denied bool
	Hidden []string // sorted dot paths
	key    string
}

// Key identifies the view: equal keys, equal visible content.
func (v View) Key() string { return v.key }

// All reports whether the view shows the whole document.
func (v View) All() bool { return !v.Denied && len(v.Hidden) == 0 }

// DeniedView shows nothing.
var DeniedView = View{Denied: true, key: "\x00denied"}

// UnknownView is the view of a document whose rules could not be evaluated
// (reading it failed): it shows nothing, as DeniedView does, and differs
// from every view the rules give, so that whoever holds it evaluates them
// again at the next chance.
var UnknownView = View{Denied: true, key: "\x00unknown"}

// HasReadRules reports whether reading the collection depends on more than
// its read_roles: row rules or readable_by on some field.
func (c *Collection) HasReadRules() bool { return c.Rows != nil || len(c.readable) > 0 }

// RulePaths are the document fields the rules read (owner field, claim
// fields): a change touching one of them may change who sees what. Empty
// when every reader's view is fixed by its token alone.
func (c *Collection) RulePaths() []string { return c.rulePaths }

// ViewOf evaluates the rules for reader r on a document whose data is data
// (nil: none yet).
func (c *Collection) ViewOf(r Reader, data map[string]any) View {
	if !c.HasReadRules() {
		return View{}
	}
	owner := false
	if c.OwnerField != "" && r.Subject != "" {
		v, _ := merge.Lookup(data, c.OwnerField)
		s, ok := v.(string)
		owner = ok && s == r.Subject
	}
	if rows := c.Rows; rows != nil && !(rows.Owner && owner) && !claimMatch(rows.Claims, r.Claims, data) &&
		!slices.ContainsFunc(r.Roles, func(role string) bool { return slices.Contains(rows.Roles, role) }) {
		return DeniedView
	}
	var hidden []string
	for _, p := range c.readable {
		by := c.Fields[p].ReadableBy
		if owner && slices.Contains(by, OwnerRole) {
			continue
		}
		if !slices.ContainsFunc(r.Roles, func(role string) bool { return role != OwnerRole && slices.Contains(by, role) }) {
			hidden = append(hidden, p)
		}
	}
	return View{Hidden: hidden, key: strings.Join(hidden, "\x00")}
}

func claimMatch(rules, claims map[string]string, data map[string]any) bool {
	for field, claim := range rules {
		want, ok := claims[claim]
		if !ok {
			continue
		}
		if v, _ := merge.Lookup(data, field); v == want && want != "" {
			return true
		}
	}
	return false
}

// hides reports whether path p lies at or below a hidden path.
func (v View) hides(p string) bool {
	for _, h := range v.Hidden {
		if under(p, h) {
			return true
		}
	}
	return false
}

// holdsHidden reports whether path p is a proper ancestor of a hidden path
// (its value contains hidden fields).
func (v View) holdsHidden(p string) bool {
	for _, h := range v.Hidden {
		if len(h) > len(p) && under(h, p) {
			return true
		}
	}
	return false
}

// under reports whether path p equals anc or lies below it.
func under(p, anc string) bool {
	return p == anc || len(p) > len(anc) && p[len(anc)] == '.' && p[:len(anc)] == anc
}

// Touches reports whether ops change a field the rules read (see
// RulePaths); created tells that the change (re)creates the document,
// which touches them all.
func (c *Collection) Touches(ops []merge.FieldOp, created bool) bool {
	if len(c.rulePaths) == 0 {
		return false
	}
	if created {
		return true
	}
	for _, o := range ops {
		for _, rp := range c.rulePaths {
			if under(o.Path, rp) || under(rp, o.Path) {
				return true
			}
		}
	}
	return false
}

// Data returns data as the view shows it. It shares what it does not
// change with data: callers must not modify either. A denied view shows
// nil.
func (v View) Data(data map[string]any) map[string]any {
	if v.Denied {
		return nil
	}
	if len(v.Hidden) == 0 || data == nil {
		return data
	}
	return v.prune("", data)
}

// prune copies m (found at prefix) without the hidden fields, sharing the
// subtrees that hold none.
func (v View) prune(prefix string, m map[string]any) map[string]any {
	out := make(map[string]any, len(m))
	for k, e := range m {
		p := k
		if prefix != "" {
			p = prefix + "." + k
		}
		switch {
		case prefix == "" && isPathKeyed(k):
			if conf := v.conflicts(e); len(conf) > 0 {
				out[k] = conf
			}
		case v.hides(p):
		case v.holdsHidden(p):
			if child, ok := e.(map[string]any); ok {
				out[k] = v.prune(p, child)
			} else {
				out[k] = e
			}
		default:
			out[k] = e
		}
	}
	return out
}

// isPathKeyed reports whether the top-level key k holds metadata keyed by
// field path: the open conflicts and the text fields' character metadata.
// An entry for a hidden field is hidden with it.
func isPathKeyed(k string) bool { return k == merge.ConflictsKey || k == merge.TextKey }

// metaPath returns the field path an op on path-keyed metadata
// (_conflicts.<p>, _text.<p>) is about.
func metaPath(p string) (string, bool) {
	for _, k := range []string{merge.ConflictsKey, merge.TextKey} {
		if strings.HasPrefix(p, k+".") {
			return p[len(k)+1:], true
		}
	}
	return "", false
}

// conflicts keeps the entries of path-keyed metadata (open conflicts, text
// metadata) whose field is not hidden and holds no hidden field.
func (v View) conflicts(e any) map[string]any {
	m, _ := e.(map[string]any)
	out := make(map[string]any, len(m))
	for p, cands := range m {
		if !v.hides(p) && !v.holdsHidden(p) {
			out[p] = cands
		}
	}
	return out
}

// Ops returns the field operations of a change as the view shows them:
// without the ops on hidden fields, and with hidden fields taken out of the
// values of ops on their ancestors. The result is never nil for a non-nil
// input, so a change whose ops are all hidden still shows as one (with no
// ops) and keeps the reader's versions dense.
func (v View) Ops(ops []merge.FieldOp) []merge.FieldOp {
	if len(v.Hidden) == 0 || ops == nil {
		return ops
	}
	out := make([]merge.FieldOp, 0, len(ops))
	for _, o := range ops {
		switch {
		case isPathKeyed(o.Path) && len(o.Value) > 0:
			var m map[string]any
			if json.Unmarshal(o.Value, &m) == nil {
				o.Value, _ = json.Marshal(v.conflicts(m))
			}
		case metaPathHidden(v, o.Path):
			continue
		case v.hides(o.Path):
			continue
		case v.holdsHidden(o.Path) && len(o.Value) > 0:
			var val any
			if json.Unmarshal(o.Value, &val) == nil {
				if m, ok := val.(map[string]any); ok {
					o.Value, _ = json.Marshal(v.prune(o.Path, m))
				}
			}
		}
		out = append(out, o)
	}
	return out
}

// metaPathHidden reports whether p is an op path inside path-keyed metadata
// whose field the view hides.
func metaPathHidden(v View, p string) bool {
	f, ok := metaPath(p)
	return ok && (v.hides(f) || v.holdsHidden(f))
}

// Values returns a map keyed by field path (such as a conflict's "theirs")
// without the hidden paths, and with hidden fields taken out of the values
// of their ancestors.
func (v View) Values(m map[string]any) map[string]any {
	if len(v.Hidden) == 0 || m == nil {
		return m
	}
	out := make(map[string]any, len(m))
	for p, e := range m {
		if v.hides(p) {
			continue
		}
		if child, ok := e.(map[string]any); ok && v.holdsHidden(p) {
			e = v.prune(p, child)
		}
		out[p] = e
	}
	return out
}

// Hides reports whether the view hides the field at path p (or the path
// holds hidden fields, so its value cannot be shown whole).
func (v View) Hides(p string) bool { return v.Denied || v.hides(p) || v.holdsHidden(p) }
