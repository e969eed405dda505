package merge

import (
	"encoding/json"
	"fmt"
	"maps"
	"strings"
)

// applier merges one Input into a Doc in place. Every change is recorded
// in an undo log so a failing op leaves the Doc as it was without the cost
// of copying the whole document first.
type applier struct {
	d    *Doc
	in   Input
	pol  Policy
	self Stamp // the stamp this Input writes: (HLC, author, Current+1)
	undo []func()
	eff  []FieldOp
}

func (a *applier) apply(op FieldOp) error {
	if op.Op == KindIns || op.Op == KindDel {
		return a.text(op)
	}
	v, del, err := decodeValue(op)
	if err != nil {
		return err
	}
	if s, ok := v.(string); ok && op.Op == KindSet && (a.in.Text[op.Path] || IsText(a.d.Data, op.Path)) {
		return a.replaceText(op.Path, s)
	}
	if IsText(a.d.Data, op.Path) && op.Op != KindSet && op.Op != KindUnset && op.Op != KindResolve {
		return fmt.Errorf("%w: %s %q: the field is text (use ins and del)", ErrInvalidOp, op.Op, op.Path)
	}
	switch op.Op {
	case KindSet, KindUnset, KindResolve:
		switch a.pol {
		case LWW, CRDT:
			a.lwwWrite(op, v, del)
		case Strict:
			a.plainWrite(op, v, del)
		case Manual:
			if op.Op == KindResolve {
				return a.resolve(op, v, del)
			}
			a.manualWrite(op, v, del)
		}
		if op.Op == KindResolve {
			a.clearConflicts(op.Path)
		}
		return nil
	}
	switch a.pol {
	case LWW:
		// A whole-value write of the field (or an object holding it) stamped
		// after this op replaced the value this op was meant for.
		if a.superseded(op.Path) {
			return nil
		}
	case CRDT:
		// Increments and set edits belong to the value they were made on:
		// if the value was replaced by a write the author had not seen, the
		// replacement wins.
		if s, ok := a.instance(op.Path); ok && a.concurrent(s) {
			return nil
		}
		if op.Op == KindAdd || op.Op == KindRemove {
			return a.crdtSetOp(op, v)
		}
	}
	return a.relative(op, v)
}

// text applies an ins or del. Text merges by character under every policy
// (strict has refused a stale op already): concurrent typing is never a
// conflict, and a write that replaced the field (or an object holding it)
// leaves the op to merge into the new text.
func (a *applier) text(op FieldOp) error {
	eff, deleted, err := applyText(a.d.Data, op, a.in.Client, true, a.rec)
	if err != nil || eff == nil {
		return err
	}
	a.eff = append(a.eff, *eff)
	if deleted {
		a.textDeleted(op.Path)
	}
	return nil
}

// replaceText is a set of a text field: it replaces the text as it is now
// (docs/conflicts.md, "Text fields").
func (a *applier) replaceText(p, s string) error {
	if !IsText(a.d.Data, p) {
		// The field becomes text: a previous plain value of another type is
		// replaced as a whole first.
		if cur, ok := getPath(a.d.Data, splitPath(p)); ok {
			if _, isStr := cur.(string); !isStr {
				a.write(p, nil, true)
				a.emit(p, nil, nil, true)
			}
		}
	}
	eff, deleted, err := replaceText(a.d.Data, p, a.in.Client, s, a.rec)
	if err != nil {
		return err
	}
	a.eff = append(a.eff, eff...)
	if deleted {
		a.textDeleted(p)
	}
	if s, ok := a.d.Stamps[p]; !ok || a.self.wins(s) {
		a.setStamp(p, a.self)
	}
	return nil
}

// textDeleted records the version of the latest delete in the text at p.
func (a *applier) textDeleted(p string) {
	if a.d.TextDel == nil {
		a.d.TextDel = map[string]int64{}
	}
	recEntry(a, a.d.TextDel, p)
	a.d.TextDel[p] = a.self.V
}

// relative applies an inc, add or remove. An increment travels as itself
// (clients add the same float64); an add or remove travels as a set of the
// resulting array, so clients need not reproduce the set's canonical order.
func (a *applier) relative(op FieldOp, v any) error {
	changed, err := applyRelative(a.d.Data, op, v, a.rec)
	if err != nil || !changed {
		return err
	}
	if op.Op == KindInc {
		dropText(a.d.Data, op.Path, a.rec)
		a.eff = append(a.eff, op)
		return nil
	}
	cur, _ := getPath(a.d.Data, splitPath(op.Path))
	a.emit(op.Path, nil, cur, false)
	return nil
}

// lwwWrite is a last-writer-wins register write. Its result is the same as
// replaying every write in (HLC, author) order: a write is dropped if the
// path or an object holding it was written later; it drops the older writes
// below it and keeps the newer ones on top of its value.
func (a *applier) lwwWrite(op FieldOp, v any, del bool) {
	p := op.Path
	if a.superseded(p) {
		return
	}
	var kept []string
	for k, s := range a.d.Stamps {
		if len(k) > len(p) && isUnder(k, p) {
			if s.wins(a.self) {
				kept = append(kept, k)
			} else {
				a.delStamp(k)
			}
		}
	}
	switch {
	case len(kept) > 0:
		merged := a.overlay(p, v, del, kept)
		a.write(p, merged, false)
		a.emit(p, nil, merged, false)
	case del:
		// A removal makes the objects on its path exist, as a set does, so
		// the document depends only on the live writes: the objects an
		// older, now superseded write created are there either way.
		segs := splitPath(p)
		if n := missingObject(a.d.Data, segs); n > 0 {
			writePath(a.d.Data, segs, nil, true, true, a.rec)
			q := strings.Join(segs[:n], ".")
			v, _ := getPath(a.d.Data, segs[:n])
			a.emit(q, nil, v, false)
		} else {
			a.write(p, nil, true)
			a.emit(p, nil, nil, true)
		}
	default:
		a.write(p, v, false)
		a.emit(p, op.Value, nil, false)
	}
	a.setStamp(p, a.self)
	a.dropElems(p, kept)
}

// overlay returns v with the current values of the newer writes below p
// (kept) laid on top, as replaying them after v would. The result is an
// object: every write below p makes p one.
func (a *applier) overlay(p string, v any, del bool, kept []string) any {
	var base any
	if !del {
		base = v
	}
	set := make(map[string]bool, len(kept))
	for _, k := range kept {
		set[k] = true
	}
	for _, k := range kept {
		if hasAncestorIn(k, p, set) {
			continue // its value is part of its ancestor's
		}
		cur, ok := getPath(a.d.Data, splitPath(k))
		rel := splitPath(k[len(p)+1:])
		m, isMap := base.(map[string]any)
		if !isMap {
			m = map[string]any{}
		}
		writePath(m, rel, CloneValue(cur), !ok, true, nil)
		base = m
	}
	return base
}

// hasAncestorIn reports whether a path strictly between top and k is in set.
func hasAncestorIn(k, top string, set map[string]bool) bool {
	for q := k; ; {
		i := strings.LastIndexByte(q, '.')
		if i <= len(top) {
			return false
		}
		q = q[:i]
		if set[q] {
			return true
		}
	}
}

// plainWrite replaces the value at op's path: the author has seen the
// current document (strict) or no one wrote it concurrently (manual).
func (a *applier) plainWrite(op FieldOp, v any, del bool) {
	p := op.Path
	for k := range a.d.Stamps {
		if len(k) > len(p) && isUnder(k, p) {
			a.delStamp(k)
		}
	}
	a.write(p, v, del)
	a.emit(p, op.Value, nil, del)
	a.setStamp(p, a.self)
	a.dropElems(p, nil)
}

// superseded reports whether p or an object holding it was written after
// this Input in last-writer-wins order.
func (a *applier) superseded(p string) bool {
	for q := p; ; {
		if s, ok := a.d.Stamps[q]; ok && s.wins(a.self) {
			return true
		}
		i := strings.LastIndexByte(q, '.')
		if i < 0 {
			return false
		}
		q = q[:i]
	}
}

// instance returns the stamp of the last whole-value write that produced
// the value at p: the deepest stamp on p's chain of ancestors (live stamps
// below a path are always newer than the path's own).
func (a *applier) instance(p string) (Stamp, bool) {
	for q := p; ; {
		if s, ok := a.d.Stamps[q]; ok {
			return s, true
		}
		i := strings.LastIndexByte(q, '.')
		if i < 0 {
			return Stamp{}, false
		}
		q = q[:i]
	}
}

// concurrent reports whether the write s happened without the author of
// this Input having seen it: it produced a version after the Input's base,
// and it was not the author's own earlier op.
func (a *applier) concurrent(s Stamp) bool {
	return s.V > a.in.Base && s.By != a.in.Client
}

// crdtSetOp applies add or remove to an add-wins set. Each add records its
// author and version; a remove cancels only the adds its author had seen,
// so an add concurrent with a remove keeps the element.
func (a *applier) crdtSetOp(op FieldOp, v any) error {
	p := op.Path
	cur, _ := getPath(a.d.Data, splitPath(p))
	switch cur.(type) {
	case nil, []any:
	default:
		_, err := applyRelative(a.d.Data, op, v, a.rec) // reports the type error
		return err
	}
	key := canonical(v)
	dots := a.d.Elems[p][key]
	if op.Op == KindAdd {
		next := make(map[string]int64, len(dots)+1)
		maps.Copy(next, dots)
		next[a.in.Client] = a.self.V
		a.setDots(p, key, next)
	} else {
		var keep map[string]int64
		for by, ver := range dots {
			if ver > a.in.Base && by != a.in.Client {
				if keep == nil {
					keep = map[string]int64{}
				}
				keep[by] = ver
			}
		}
		a.setDots(p, key, keep)
		if len(keep) > 0 {
			return nil // an add this author had not seen keeps the element
		}
	}
	return a.relative(op, v)
}

// manualWrite writes a field unless someone else wrote it (or an object
// holding it, or a field inside it) after the author's base version with a
// different value. Then both values are kept as candidates under
// ConflictsKey; the field shows the last-writer-wins candidate until a
// resolve. A field already in conflict collects the author's value as one
// more candidate (one per author).
func (a *applier) manualWrite(op FieldOp, v any, del bool) {
	p := op.Path
	conf, _ := a.d.Data[ConflictsKey].(map[string]any)
	cands := candsOf(conf[p])
	if cands == nil {
		rival, found := a.rival(p)
		cur, ok := getPath(a.d.Data, splitPath(p))
		if !found || sameValue(cur, ok, v, del) {
			a.plainWrite(op, v, del)
			return
		}
		cands = []cand{{val: CloneValue(cur), del: !ok, by: rival.By, v: rival.V, hlc: rival.HLC}}
	}
	mine := cand{val: v, del: del, by: a.in.Client, v: a.self.V, hlc: a.in.HLC}
	replaced := false
	for i := range cands {
		if cands[i].by == mine.by {
			cands[i], replaced = mine, true
		}
	}
	if !replaced {
		cands = append(cands, mine)
	}
	w := cands[0]
	for _, c := range cands[1:] {
		if c.stamp().wins(w.stamp()) {
			w = c
		}
	}
	if cur, ok := getPath(a.d.Data, splitPath(p)); !sameValue(cur, ok, w.val, w.del) {
		val := CloneValue(w.val)
		a.write(p, val, w.del)
		a.emit(p, nil, val, w.del)
	}
	a.setStamp(p, a.self)
	next := make(map[string]any, len(conf)+1)
	maps.Copy(next, conf)
	next[p] = plainCands(cands)
	a.putConflicts(next)
}

// rival returns the most recent write overlapping p (p, an object holding
// it, or a field inside it) that the author had not seen.
func (a *applier) rival(p string) (Stamp, bool) {
	var best Stamp
	found := false
	consider := func(s Stamp) {
		if a.concurrent(s) && (!found || s.V > best.V) {
			best, found = s, true
		}
	}
	for q := p; ; {
		if s, ok := a.d.Stamps[q]; ok {
			consider(s)
		}
		i := strings.LastIndexByte(q, '.')
		if i < 0 {
			break
		}
		q = q[:i]
	}
	for k, s := range a.d.Stamps {
		if len(k) > len(p) && isUnder(k, p) {
			consider(s)
		}
	}
	return best, found
}

// resolve settles the conflicts at and below op's path with the chosen
// value. The author must have seen every candidate; otherwise it is refused
// with a *ConflictError listing them, so nobody's value disappears unseen.
func (a *applier) resolve(op FieldOp, v any, del bool) error {
	p := op.Path
	conf, _ := a.d.Data[ConflictsKey].(map[string]any)
	var unseen map[string][]Candidate
	for path, raw := range conf {
		if !isUnder(path, p) {
			continue
		}
		cands := candsOf(raw)
		for _, c := range cands {
			if c.v > a.in.Base && c.by != a.in.Client {
				if unseen == nil {
					unseen = map[string][]Candidate{}
				}
				unseen[path] = exportCands(cands)
				break
			}
		}
	}
	if unseen != nil {
		return &ConflictError{Base: a.in.Base, Current: a.in.Current, Theirs: theirs(a.d.Data, a.in.Ops), Yours: a.in.Ops, Conflicts: unseen}
	}
	a.plainWrite(op, v, del)
	a.clearConflicts(p)
	return nil
}

// clearConflicts drops the conflicts at and below p.
func (a *applier) clearConflicts(p string) {
	conf, ok := a.d.Data[ConflictsKey].(map[string]any)
	if !ok {
		return
	}
	if next, changed := withoutConflicts(conf, p); changed {
		a.putConflicts(next)
	}
}

func (a *applier) putConflicts(next map[string]any) {
	if len(next) == 0 {
		a.write(ConflictsKey, nil, true)
		a.emit(ConflictsKey, nil, nil, true)
		return
	}
	a.write(ConflictsKey, next, false)
	a.emit(ConflictsKey, nil, next, false)
}

func sameValue(a any, aok bool, b any, bdel bool) bool {
	if !aok || bdel {
		return !aok && bdel
	}
	return jsonEqual(a, b)
}

// Undo log.

func (a *applier) rec(m map[string]any, k string) { recEntry(a, m, k) }

// recEntry records m[k] in the undo log before it changes.
func recEntry[V any](a *applier, m map[string]V, k string) {
	old, ok := m[k]
	a.undo = append(a.undo, func() {
		if ok {
			m[k] = old
		} else {
			delete(m, k)
		}
	})
}

func (a *applier) rollback() {
	for i := len(a.undo) - 1; i >= 0; i-- {
		a.undo[i]()
	}
	a.undo = nil
}

func (a *applier) write(p string, v any, del bool) {
	writePath(a.d.Data, splitPath(p), v, del, false, a.rec)
}

// emit records an effective set or unset of p: raw when the op's own value
// can be passed on, else v encoded now (before later ops change it).
func (a *applier) emit(p string, raw json.RawMessage, v any, del bool) {
	dropText(a.d.Data, p, a.rec)
	if del {
		a.eff = append(a.eff, FieldOp{Op: KindUnset, Path: p})
		return
	}
	if raw == nil {
		raw, _ = json.Marshal(v) // Data holds JSON values only
	}
	a.eff = append(a.eff, FieldOp{Op: KindSet, Path: p, Value: raw})
}

func (a *applier) setStamp(p string, s Stamp) {
	if a.d.Stamps == nil {
		a.d.Stamps = map[string]Stamp{}
	}
	recEntry(a, a.d.Stamps, p)
	a.d.Stamps[p] = s
}

func (a *applier) delStamp(p string) {
	stamps := a.d.Stamps
	old := stamps[p]
	a.undo = append(a.undo, func() { stamps[p] = old })
	delete(stamps, p)
}

// setDots replaces the adds recorded for one element of the set at p
// (empty: none). The maps are copied, never changed in place, so the undo
// log can hold on to the old ones.
func (a *applier) setDots(p, key string, dots map[string]int64) {
	old := a.d.Elems[p]
	if len(dots) == 0 {
		if _, ok := old[key]; !ok {
			return
		}
	}
	next := make(map[string]map[string]int64, len(old)+1)
	maps.Copy(next, old)
	if len(dots) == 0 {
		delete(next, key)
	} else {
		next[key] = dots
	}
	a.setElems(p, next)
}

func (a *applier) setElems(p string, es map[string]map[string]int64) {
	if a.d.Elems == nil {
		if len(es) == 0 {
			return
		}
		a.d.Elems = map[string]map[string]map[string]int64{}
	}
	recEntry(a, a.d.Elems, p)
	if len(es) == 0 {
		delete(a.d.Elems, p)
	} else {
		a.d.Elems[p] = es
	}
}

// dropElems forgets the set metadata at and below p, except below the paths
// in kept (whose values survive the write of p).
func (a *applier) dropElems(p string, kept []string) {
	for k := range a.d.Elems {
		if !isUnder(k, p) {
			continue
		}
		survives := false
		for _, q := range kept {
			if isUnder(k, q) {
				survives = true
				break
			}
		}
		if !survives {
			a.setElems(k, nil)
		}
	}
}
