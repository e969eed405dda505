package merge

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Collaborative text (docs/conflicts.md, "Text fields").
//
// A text field holds a plain string in the document's data, what every
// reader sees, and its sequence-CRDT metadata under TextKey: the identity of
// every character, including deleted ones (tombstones) until compaction
// collects them. The algorithm is RGA (replicated growable array) with
// Lamport clocks and run-length items:
//
//   - Every character has an id (site, clock). The site is its author (the
//     op's client, optionally with a "~suffix" so that two devices of one
//     user never share ids); a run of characters typed in one insert takes
//     consecutive clocks. A new insert's clock is above every clock its
//     author has seen, in particular above its anchor's.
//   - An insert names the character it goes after (its anchor, or the start
//     of the text). It is placed right after the anchor, past every
//     character there whose id is greater than its own (clock, then site):
//     of concurrent inserts at one position, the one with the greater id
//     comes first, and each typist's run stays in one piece, because every
//     character anchors to the one its author typed before it.
//   - A delete names the ids it removes; they stay as tombstones, so inserts
//     anchored to them still find their place.
//
// Positions in ops and events count Unicode code points.

// TextKey is the reserved top-level key under which the metadata of text
// fields is kept in the document's data: path → {"s": sites, "m": the
// highest clock of each site, "r": runs}. Each run is three numbers: site
// index, first clock, length (negative for a tombstone run).
const TextKey = "_text"

// Text operation kinds.
const (
	// KindIns inserts text. Value: [site, clock, after, "text"], where after
	// is "" (the start), a number (a clock of the same site) or "site@clock";
	// or the positional form [pos, "text"], which the server resolves
	// against the text it holds (site: the author, clock: the next one).
	KindIns Kind = "ins"
	// KindDel deletes characters by id. Value: a site followed by (clock,
	// count) pairs, repeated per site: ["a", 4, 2, "b", 9, 1]; or the
	// positional form [pos, count].
	KindDel Kind = "del"
)

// MaxTextClock bounds clocks so that they stay exact as JSON numbers.
const MaxTextClock = 1<<53 - 1

// TextID names one character of a text: its site and clock. The zero
// TextID is the start of the text.
type TextID struct {
	Site  string
	Clock uint64
}

// IsStart reports whether id is the start of the text.
func (id TextID) IsStart() bool { return id.Clock == 0 }

// after reports whether a sorts after b in insert order (later clock, then
// greater site).
func (id TextID) after(o TextID) bool {
	return id.Clock > o.Clock || id.Clock == o.Clock && id.Site > o.Site
}

func (id TextID) String() string { return id.Site + "@" + strconv.FormatUint(id.Clock, 10) }

// TextRange is count consecutive clocks of one site, starting at Clock.
type TextRange struct {
	TextID
	N int
}

type textRun struct {
	site  int
	clock uint64
	n     int
	del   bool
	s     string // the characters of a live run (n code points)
}

func (r textRun) last() uint64 { return r.clock + uint64(r.n) - 1 }

// Text is the sequence CRDT of one text field.
type Text struct {
	sites []string
	index map[string]int
	max   []uint64
	runs  []textRun
}

// NewText returns an empty text.
func NewText() *Text { return &Text{index: map[string]int{}} }

// String returns the visible text.
func (t *Text) String() string {
	size := 0
	for _, r := range t.runs {
		size += len(r.s)
	}
	var b strings.Builder
	b.Grow(size)
	for _, r := range t.runs {
		b.WriteString(r.s)
	}
	return b.String()
}

// runeIndex returns the byte index of the n-th code point of s.
func runeIndex(s string, n int) int {
	i := 0
	for ; n > 0 && i < len(s); n-- {
		if s[i] < utf8.RuneSelf {
			i++
		} else {
			_, w := utf8.DecodeRuneInString(s[i:])
			i += w
		}
	}
	return i
}

// Len returns the number of visible characters.
func (t *Text) Len() int {
	n := 0
	for _, r := range t.runs {
		if !r.del {
			n += r.n
		}
	}
	return n
}

// Tombstones returns the number of deleted characters still kept.
func (t *Text) Tombstones() int {
	n := 0
	for _, r := range t.runs {
		if r.del {
			n += r.n
		}
	}
	return n
}

// MaxClock returns the highest clock in the text (a new insert takes a
// greater one).
func (t *Text) MaxClock() uint64 {
	var m uint64
	for _, c := range t.max {
		m = max(m, c)
	}
	return m
}

// SiteMax returns the highest clock of site.
func (t *Text) SiteMax(site string) uint64 {
	if i, ok := t.index[site]; ok {
		return t.max[i]
	}
	return 0
}

func (t *Text) site(name string) int {
	if i, ok := t.index[name]; ok {
		return i
	}
	t.index[name] = len(t.sites)
	t.sites = append(t.sites, name)
	t.max = append(t.max, 0)
	return len(t.sites) - 1
}

func (t *Text) id(i int, off int) TextID {
	r := t.runs[i]
	return TextID{Site: t.sites[r.site], Clock: r.clock + uint64(off)}
}

// locate finds the run holding id and the offset in it.
func (t *Text) locate(id TextID) (int, int, bool) {
	si, ok := t.index[id.Site]
	if !ok {
		return 0, 0, false
	}
	for i, r := range t.runs {
		if r.site == si && id.Clock >= r.clock && id.Clock <= r.last() {
			return i, int(id.Clock - r.clock), true
		}
	}
	return 0, 0, false
}

// split cuts run i before offset off (0 < off < n); the second part becomes
// run i+1.
func (t *Text) split(i, off int) {
	r := t.runs[i]
	a, b := r, r
	a.n, b.n = off, r.n-off
	b.clock = r.clock + uint64(off)
	if !r.del {
		i := runeIndex(r.s, off)
		a.s, b.s = r.s[:i], r.s[i:]
	}
	t.runs = slices.Insert(t.runs, i+1, b)
	t.runs[i] = a
}

// IDAt returns the id of the visible character at pos (0-based).
func (t *Text) IDAt(pos int) (TextID, bool) {
	for i, r := range t.runs {
		if r.del {
			continue
		}
		if pos < r.n {
			return t.id(i, pos), true
		}
		pos -= r.n
	}
	return TextID{}, false
}

// Insert places s with the ids (site, clock), (site, clock+1), ... after
// the anchor and returns the anchor it ended up right after (the start, or
// the character now immediately before it), which reproduces the placement
// on any copy holding at least the same characters. An unknown anchor (a
// deleted character already collected) puts the text at the end: it is
// never dropped.
func (t *Text) Insert(site string, clock uint64, anchor TextID, s string) (TextID, error) {
	return t.insert(site, clock, anchor, s, true)
}

// insert is Insert; causal requires the new id to be above its anchor, as
// every op made by a client is (an effective op's anchor is where the server
// placed the text, which may be a greater id it went past).
func (t *Text) insert(site string, clock uint64, anchor TextID, s string, causal bool) (TextID, error) {
	n := utf8.RuneCountInString(s)
	if n == 0 {
		return TextID{}, fmt.Errorf("%w: empty insert", ErrInvalidOp)
	}
	if clock == 0 || clock+uint64(n)-1 > MaxTextClock {
		return TextID{}, fmt.Errorf("%w: text clock %d out of range", ErrInvalidOp, clock)
	}
	if clock <= t.SiteMax(site) {
		return TextID{}, fmt.Errorf("%w: text id %s@%d already used (site's last clock is %d)", ErrInvalidOp, site, clock, t.SiteMax(site))
	}
	me := TextID{Site: site, Clock: clock}
	idx := len(t.runs)
	if anchor.IsStart() {
		idx = 0
	} else if i, off, ok := t.locate(anchor); ok {
		if causal && !me.after(anchor) {
			return TextID{}, fmt.Errorf("%w: text id %s must be above its anchor %s", ErrInvalidOp, me, anchor)
		}
		if off < t.runs[i].n-1 {
			t.split(i, off+1)
		}
		idx = i + 1
	}
	for idx < len(t.runs) && t.id(idx, 0).after(me) {
		idx++
	}
	si := t.site(site)
	t.max[si] = clock + uint64(n) - 1
	var resolved TextID
	if idx > 0 {
		resolved = t.id(idx-1, t.runs[idx-1].n-1)
	}
	t.runs = slices.Insert(t.runs, idx, textRun{site: si, clock: clock, n: n, s: s})
	// The split at the anchor may have been passed over: merging keeps the
	// runs what every copy gets from the same characters.
	t.normalize()
	return resolved, nil
}

// Delete turns the live characters of the ranges into tombstones and
// returns the ranges it deleted. Unknown ids are ignored: they were deleted
// and collected already.
func (t *Text) Delete(ranges []TextRange) []TextRange {
	var out []TextRange
	for _, rg := range ranges {
		si, ok := t.index[rg.Site]
		if !ok || rg.N <= 0 {
			continue
		}
		lo, hi := rg.Clock, rg.Clock+uint64(rg.N)-1
		for i := 0; i < len(t.runs); i++ {
			r := t.runs[i]
			if r.site != si || r.del || r.last() < lo || r.clock > hi {
				continue
			}
			if r.clock < lo {
				t.split(i, int(lo-r.clock))
				continue // the part from lo is run i+1
			}
			if r.last() > hi {
				t.split(i, int(hi-r.clock)+1)
				r = t.runs[i]
			}
			t.runs[i].del, t.runs[i].s = true, ""
			out = appendRange(out, TextRange{TextID{Site: rg.Site, Clock: r.clock}, r.n})
		}
	}
	t.normalize()
	return out
}

// appendRange adds rg to out, extending the last range when they touch.
func appendRange(out []TextRange, rg TextRange) []TextRange {
	if n := len(out); n > 0 && out[n-1].Site == rg.Site && out[n-1].Clock+uint64(out[n-1].N) == rg.Clock {
		out[n-1].N += rg.N
		return out
	}
	return append(out, rg)
}

// Live returns the ranges of the visible characters from pos, count of
// them, in text order.
func (t *Text) Live(pos, count int) []TextRange {
	var out []TextRange
	for i, r := range t.runs {
		if r.del || count <= 0 {
			continue
		}
		if pos >= r.n {
			pos -= r.n
			continue
		}
		n := min(r.n-pos, count)
		out = appendRange(out, TextRange{t.id(i, pos), n})
		count -= n
		pos = 0
	}
	return out
}

// Collect drops every tombstone and returns how many characters it
// dropped. Copies that still hold them show the same text and place every
// later insert the same way (an insert lands right after a character both
// hold, and tombstones are invisible).
func (t *Text) Collect() int {
	n := 0
	t.runs = slices.DeleteFunc(t.runs, func(r textRun) bool {
		if r.del {
			n += r.n
		}
		return r.del
	})
	t.normalize()
	return n
}

// normalize merges neighbouring runs of one site with consecutive clocks
// and the same state.
func (t *Text) normalize() {
	out := t.runs[:0]
	for _, r := range t.runs {
		if n := len(out); n > 0 {
			l := &out[n-1]
			if l.site == r.site && l.del == r.del && l.last()+1 == r.clock {
				l.s += r.s
				l.n += r.n
				continue
			}
		}
		out = append(out, r)
	}
	t.runs = out
}

// Clone returns a deep copy.
func (t *Text) Clone() *Text {
	c := &Text{sites: slices.Clone(t.sites), index: make(map[string]int, len(t.index)), max: slices.Clone(t.max), runs: slices.Clone(t.runs)}
	for k, v := range t.index {
		c.index[k] = v
	}
	return c
}

// meta renders the metadata as it is kept under TextKey (JSON types only).
func (t *Text) meta() map[string]any {
	s := make([]any, len(t.sites))
	for i, v := range t.sites {
		s[i] = v
	}
	m := make([]any, len(t.max))
	for i, v := range t.max {
		m[i] = float64(v)
	}
	r := make([]any, 0, 3*len(t.runs))
	for _, run := range t.runs {
		n := float64(run.n)
		if run.del {
			n = -n
		}
		r = append(r, float64(run.site), float64(run.clock), n)
	}
	return map[string]any{"s": s, "m": m, "r": r}
}

// textFrom rebuilds a text from its visible string and its metadata (nil: a
// plain string, whose characters take the ids ""@1, ""@2, ...).
func textFrom(v any, meta any) (*Text, error) {
	str, ok := v.(string)
	if !ok && v != nil {
		return nil, fmt.Errorf("%w: field is not text", ErrInvalidOp)
	}
	t := NewText()
	if meta == nil {
		if n := utf8.RuneCountInString(str); n > 0 {
			t.site("")
			t.max[0] = uint64(n)
			t.runs = []textRun{{clock: 1, n: n, s: str}}
		}
		return t, nil
	}
	rest := str
	bad := func(what string) (*Text, error) {
		return nil, fmt.Errorf("%w: text metadata: %s", ErrInvalidOp, what)
	}
	m, ok := meta.(map[string]any)
	if !ok {
		return bad("not an object")
	}
	sites, _ := m["s"].([]any)
	maxes, _ := m["m"].([]any)
	runs, _ := m["r"].([]any)
	if len(sites) != len(maxes) || len(runs)%3 != 0 {
		return bad("malformed")
	}
	for i, s := range sites {
		name, ok := s.(string)
		if !ok {
			return bad("site is not a string")
		}
		if _, dup := t.index[name]; dup {
			return bad("site listed twice")
		}
		c, ok := jsonUint(maxes[i])
		if !ok {
			return bad("clock is not a count")
		}
		t.index[name] = i
		t.sites = append(t.sites, name)
		t.max = append(t.max, c)
	}
	for i := 0; i < len(runs); i += 3 {
		si, ok1 := jsonUint(runs[i])
		c, ok2 := jsonUint(runs[i+1])
		f, ok3 := runs[i+2].(float64)
		if !ok1 || !ok2 || !ok3 || si >= uint64(len(sites)) || c == 0 || f == 0 || f != math.Trunc(f) || math.Abs(f) > MaxTextClock {
			return bad("malformed run")
		}
		r := textRun{site: int(si), clock: c, n: int(math.Abs(f)), del: f < 0}
		if r.last() > t.max[si] {
			return bad("run beyond its site's clock")
		}
		if !r.del {
			i := runeIndex(rest, r.n)
			if utf8.RuneCountInString(rest[:i]) != r.n {
				return bad("runs longer than the text")
			}
			r.s, rest = rest[:i], rest[i:]
		}
		t.runs = append(t.runs, r)
	}
	if rest != "" {
		return bad("text longer than its runs")
	}
	return t, nil
}

func jsonUint(v any) (uint64, bool) {
	f, ok := v.(float64)
	if !ok || f < 0 || f > MaxTextClock || f != math.Trunc(f) {
		return 0, false
	}
	return uint64(f), true
}

// Text ops as sent.

// insOp is a parsed ins value.
type insOp struct {
	pos    int // positional form; -1 otherwise
	site   string
	clock  uint64
	anchor TextID
	text   string
}

// delOp is a parsed del value.
type delOp struct {
	pos, count int // positional form (pos -1 otherwise)
	ranges     []TextRange
}

func parseIns(raw json.RawMessage) (insOp, error) {
	bad := func(format string, args ...any) (insOp, error) {
		return insOp{}, fmt.Errorf("%w: ins: "+format, append([]any{ErrInvalidOp}, args...)...)
	}
	var arr []any
	if err := json.Unmarshal(raw, &arr); err != nil {
		return bad("value must be [site, clock, after, text] or [pos, text]")
	}
	switch len(arr) {
	case 2:
		pos, ok := jsonUint(arr[0])
		text, ok2 := arr[1].(string)
		if !ok || !ok2 {
			return bad("value must be [pos, text]")
		}
		if text == "" {
			return bad("empty text")
		}
		return insOp{pos: int(min(pos, math.MaxInt32)), text: text}, nil
	case 4:
		site, ok := arr[0].(string)
		clock, ok2 := jsonUint(arr[1])
		text, ok3 := arr[3].(string)
		if !ok || !ok2 || !ok3 || clock == 0 {
			return bad("value must be [site, clock, after, text] with a clock from 1")
		}
		if text == "" {
			return bad("empty text")
		}
		anchor, err := parseAnchor(arr[2], site)
		if err != nil {
			return insOp{}, err
		}
		return insOp{pos: -1, site: site, clock: clock, anchor: anchor, text: text}, nil
	}
	return bad("value must be [site, clock, after, text] or [pos, text]")
}

// parseAnchor reads "" (start), a clock of site, or "site@clock".
func parseAnchor(v any, site string) (TextID, error) {
	switch a := v.(type) {
	case string:
		if a == "" {
			return TextID{}, nil
		}
		return parseTextID(a)
	case float64:
		c, ok := jsonUint(a)
		if ok && c > 0 {
			return TextID{Site: site, Clock: c}, nil
		}
	}
	return TextID{}, fmt.Errorf("%w: text anchor %v: want \"\", a clock or \"site@clock\"", ErrInvalidOp, v)
}

// parseTextID reads "site@clock" (the site may itself hold '@').
func parseTextID(s string) (TextID, error) {
	i := strings.LastIndexByte(s, '@')
	if i >= 0 {
		if c, err := strconv.ParseUint(s[i+1:], 10, 64); err == nil && c > 0 && c <= MaxTextClock {
			return TextID{Site: s[:i], Clock: c}, nil
		}
	}
	return TextID{}, fmt.Errorf("%w: text id %q: want \"site@clock\"", ErrInvalidOp, s)
}

func parseDel(raw json.RawMessage) (delOp, error) {
	bad := func(format string, args ...any) (delOp, error) {
		return delOp{}, fmt.Errorf("%w: del: "+format, append([]any{ErrInvalidOp}, args...)...)
	}
	var arr []any
	if err := json.Unmarshal(raw, &arr); err != nil || len(arr) == 0 {
		return bad("value must be [site, clock, count, ...] or [pos, count]")
	}
	if _, num := arr[0].(float64); num {
		pos, ok := jsonUint(arr[0])
		n, ok2 := jsonUint(arr[1%len(arr)])
		if len(arr) != 2 || !ok || !ok2 || n == 0 {
			return bad("value must be [pos, count] with a count from 1")
		}
		return delOp{pos: int(min(pos, math.MaxInt32)), count: int(min(n, math.MaxInt32))}, nil
	}
	out := delOp{pos: -1}
	site := ""
	for i := 0; i < len(arr); {
		if s, ok := arr[i].(string); ok {
			site = s
			i++
			continue
		}
		if i+1 >= len(arr) {
			return bad("a clock without a count")
		}
		c, ok := jsonUint(arr[i])
		n, ok2 := jsonUint(arr[i+1])
		if !ok || !ok2 || c == 0 || n == 0 || c+n-1 > MaxTextClock {
			return bad("ranges are (clock, count) pairs from 1")
		}
		out.ranges = append(out.ranges, TextRange{TextID{Site: site, Clock: c}, int(n)})
		i += 2
	}
	if len(out.ranges) == 0 {
		return bad("no range")
	}
	return out, nil
}

// Effective forms (always by id).

func insValue(site string, clock uint64, anchor TextID, text string) json.RawMessage {
	var a any = ""
	switch {
	case anchor.IsStart():
	case anchor.Site == site:
		a = anchor.Clock
	default:
		a = anchor.String()
	}
	return compactJSON([]any{site, clock, a, text})
}

// compactJSON renders a text op value as JSON.stringify does (no HTML
// escaping), the form the binary encoding carries compactly.
func compactJSON(v any) json.RawMessage {
	var b bytes.Buffer
	e := json.NewEncoder(&b)
	e.SetEscapeHTML(false)
	_ = e.Encode(v) // strings and numbers only
	return bytes.TrimSuffix(b.Bytes(), []byte("\n"))
}

func delValue(ranges []TextRange) json.RawMessage {
	out := make([]any, 0, 3*len(ranges))
	site := ""
	for i, r := range ranges {
		if i == 0 || r.Site != site {
			site = r.Site
			out = append(out, site)
		}
		out = append(out, r.Clock, r.N)
	}
	return compactJSON(out)
}

// validText checks a text op's value without a document.
func validText(o FieldOp) error {
	if len(o.Value) == 0 {
		return fmt.Errorf("%w: %s %q needs a value", ErrInvalidOp, o.Op, o.Path)
	}
	if o.Op == KindIns {
		op, err := parseIns(o.Value)
		if err == nil && !utf8.ValidString(op.text) {
			err = fmt.Errorf("%w: ins: text is not UTF-8", ErrInvalidOp)
		}
		return err
	}
	_, err := parseDel(o.Value)
	return err
}

// Text fields in a document's data.

// loadText reads the text at p with its metadata.
func loadText(data map[string]any, p string) (*Text, error) {
	v, _ := getPath(data, splitPath(p))
	var meta any
	if all, ok := data[TextKey].(map[string]any); ok {
		meta = all[p]
	}
	return textFrom(v, meta)
}

// storeText writes t's string at p and its metadata under TextKey. rec (nil:
// none) sees every key before it changes.
func storeText(data map[string]any, p string, t *Text, rec recorder) {
	writePath(data, splitPath(p), t.String(), false, false, rec)
	all, ok := data[TextKey].(map[string]any)
	if !ok {
		if rec != nil {
			rec(data, TextKey)
		}
		all = map[string]any{}
		data[TextKey] = all
	}
	if rec != nil {
		rec(all, p)
	}
	all[p] = t.meta()
}

// dropText forgets the metadata of the texts a write of p replaces: at or
// below p, or above it (a write inside a string makes it an object).
func dropText(data map[string]any, p string, rec recorder) {
	all, ok := data[TextKey].(map[string]any)
	if !ok || p == TextKey {
		return
	}
	for k := range all {
		if isUnder(k, p) || isUnder(p, k) {
			if rec != nil {
				rec(all, k)
			}
			delete(all, k)
		}
	}
	if len(all) == 0 {
		if rec != nil {
			rec(data, TextKey)
		}
		delete(data, TextKey)
	}
}

// applyText applies an ins or del to the text at op's path. author is the
// op's client (sites it may write as; "" for a client applying effective
// ops, which are trusted), and a positional op takes site author. It
// returns the effective op (nil when nothing changed) and whether any
// character was deleted.
func applyText(data map[string]any, op FieldOp, author string, check bool, rec recorder) (*FieldOp, bool, error) {
	t, err := loadText(data, op.Path)
	if err != nil {
		return nil, false, fmt.Errorf("%s %q: %w", op.Op, op.Path, err)
	}
	var eff FieldOp
	deleted := false
	switch op.Op {
	case KindIns:
		in, err := parseIns(op.Value)
		if err != nil {
			return nil, false, err
		}
		if in.pos >= 0 {
			in.site, in.clock = author, t.MaxClock()+1
			if in.pos > 0 {
				in.anchor, _ = t.IDAt(min(in.pos, t.Len()) - 1)
			}
		} else if check && in.site != author && !strings.HasPrefix(in.site, author+"~") {
			return nil, false, fmt.Errorf("%w: ins %q: site %q is not the author's", ErrInvalidOp, op.Path, in.site)
		}
		at, err := t.insert(in.site, in.clock, in.anchor, in.text, check)
		if err != nil {
			return nil, false, fmt.Errorf("ins %q: %w", op.Path, err)
		}
		eff = FieldOp{Op: KindIns, Path: op.Path, Value: insValue(in.site, in.clock, at, in.text)}
	case KindDel:
		d, err := parseDel(op.Value)
		if err != nil {
			return nil, false, err
		}
		if d.pos >= 0 {
			d.ranges = t.Live(d.pos, d.count)
		}
		done := t.Delete(d.ranges)
		if len(done) == 0 {
			return nil, false, nil
		}
		deleted = true
		eff = FieldOp{Op: KindDel, Path: op.Path, Value: delValue(done)}
	default:
		return nil, false, fmt.Errorf("%w: %s is not a text op", ErrInvalidOp, op.Op)
	}
	storeText(data, op.Path, t, rec)
	return &eff, deleted, nil
}

// replaceText is a set of a text field: every visible character is deleted
// and the new value inserted at the start by author. It returns the
// effective ops (a del and an ins).
func replaceText(data map[string]any, p, author string, value string, rec recorder) ([]FieldOp, bool, error) {
	t, err := loadText(data, p)
	if err != nil {
		return nil, false, fmt.Errorf("set %q: %w", p, err)
	}
	var eff []FieldOp
	done := t.Delete(t.Live(0, t.Len()))
	if len(done) > 0 {
		eff = append(eff, FieldOp{Op: KindDel, Path: p, Value: delValue(done)})
	}
	if value != "" {
		clock := t.MaxClock() + 1
		if _, err := t.Insert(author, clock, TextID{}, value); err != nil {
			return nil, false, fmt.Errorf("set %q: %w", p, err)
		}
		eff = append(eff, FieldOp{Op: KindIns, Path: p, Value: insValue(author, clock, TextID{}, value)})
	}
	storeText(data, p, t, rec)
	return eff, len(done) > 0, nil
}

// IsText reports whether the data holds text metadata for p.
func IsText(data map[string]any, p string) bool {
	all, _ := data[TextKey].(map[string]any)
	_, ok := all[p]
	return ok
}

// TextOf returns the text CRDT at p (a plain string or absent field is a
// text without metadata), for clients that edit it by position.
func TextOf(data map[string]any, p string) (*Text, error) { return loadText(data, p) }

// CollectText drops the tombstones of every text of d whose last delete
// happened before version horizon (outside the op-log window, which every
// watcher has passed: a client further behind gets a snapshot). It returns
// the number of characters dropped.
func CollectText(d *Doc, horizon int64) int {
	n := 0
	for p, v := range d.TextDel {
		if v >= horizon {
			continue
		}
		delete(d.TextDel, p)
		t, err := loadText(d.Data, p)
		if err != nil || !IsText(d.Data, p) {
			continue
		}
		if c := t.Collect(); c > 0 {
			n += c
			storeText(d.Data, p, t, nil)
		}
	}
	if len(d.TextDel) == 0 {
		d.TextDel = nil
	}
	return n
}

// TextGarbage reports whether CollectText(d, horizon) has work to do.
func TextGarbage(d *Doc, horizon int64) bool {
	for _, v := range d.TextDel {
		if v < horizon {
			return true
		}
	}
	return false
}

// InsertOp builds the ins op that inserts s at visible position pos of the
// text at path in data (a client's copy, with its own pending edits
// applied), as site. The op carries the anchor the client saw, so it merges
// wherever the text has moved meanwhile.
func InsertOp(data map[string]any, path, site string, pos int, s string) (FieldOp, error) {
	t, err := loadText(data, path)
	if err != nil {
		return FieldOp{}, err
	}
	if s == "" || !utf8.ValidString(s) {
		return FieldOp{}, fmt.Errorf("%w: ins %q: text must be non-empty UTF-8", ErrInvalidOp, path)
	}
	var anchor TextID
	if pos = min(max(pos, 0), t.Len()); pos > 0 {
		anchor, _ = t.IDAt(pos - 1)
	}
	return FieldOp{Op: KindIns, Path: path, Value: insValue(site, t.MaxClock()+1, anchor, s)}, nil
}

// DeleteOp builds the del op that deletes count visible characters from
// position pos of the text at path in data. ok is false when the range is
// empty.
func DeleteOp(data map[string]any, path string, pos, count int) (op FieldOp, ok bool, err error) {
	t, err := loadText(data, path)
	if err != nil {
		return FieldOp{}, false, err
	}
	rs := t.Live(max(pos, 0), count)
	if len(rs) == 0 {
		return FieldOp{}, false, nil
	}
	return FieldOp{Op: KindDel, Path: path, Value: delValue(rs)}, true, nil
}
