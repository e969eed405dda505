package protocol

import (
	"bytes"
	"encoding/json"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Text edits (ins, del) travel in the binary encoding with their values in a
// binary layout rather than as JSON text (docs/client.md, "Binary
// encoding"):
//
//	ins  form u8 0: str site, uvarint clock, anchor, str text
//	       anchor: u8 0 (start) | 1 uvarint clock (same site) | 2 str site, uvarint clock
//	     form u8 1: uvarint pos, str text
//	del  form u8 0: uvarint groups, per group: str site, uvarint pairs, pairs of uvarint clock, uvarint count
//	     form u8 1: uvarint pos, uvarint count
//
// A value is sent this way only when decoding it gives back exactly the
// same JSON text (the canonical form JSON.stringify and the server write);
// anything else travels by name with its JSON value, like an unknown kind.

const (
	kindIns = 7
	kindDel = 8
)

// textJSON renders v as canonical JSON: no HTML escaping, no trailing
// newline.
func textJSON(v any) []byte {
	var b bytes.Buffer
	e := json.NewEncoder(&b)
	e.SetEscapeHTML(false)
	if err := e.Encode(v); err != nil {
		return nil
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n"))
}

// canonicalString reports whether s survives a JSON round trip in every
// encoder byte for byte (U+2028 and U+2029 are escaped by some, not others).
func canonicalString(s string) bool {
	return utf8.ValidString(s) && !strings.ContainsAny(s, "\u2028\u2029")
}

// clockOf reads a JSON number that is a whole clock or count.
func clockOf(v any) (uint64, bool) {
	f, ok := v.(float64)
	if !ok || f < 0 || f > 1<<53-1 || f != float64(uint64(f)) {
		return 0, false
	}
	return uint64(f), true
}

// encodeTextValue returns the binary layout of an ins or del value, or
// false when it must travel as JSON.
func encodeTextValue(code byte, value json.RawMessage) ([]byte, bool) {
	var arr []any
	if json.Unmarshal(value, &arr) != nil || len(arr) == 0 {
		return nil, false
	}
	var e enc
	str := func(v any) bool {
		s, ok := v.(string)
		if !ok || !canonicalString(s) {
			return false
		}
		e.bytes([]byte(s))
		return true
	}
	num := func(v any) bool {
		n, ok := clockOf(v)
		if ok {
			e.uvarint(n)
		}
		return ok
	}
	ok := false
	switch {
	case code == kindIns && len(arr) == 2:
		e.b = append(e.b, 1)
		ok = num(arr[0]) && str(arr[1])
	case code == kindIns && len(arr) == 4:
		e.b = append(e.b, 0)
		ok = str(arr[0]) && num(arr[1])
		if ok {
			switch a := arr[2].(type) {
			case string:
				if a == "" {
					e.b = append(e.b, 0)
				} else if i := strings.LastIndexByte(a, '@'); i >= 0 {
					c, err := strconv.ParseUint(a[i+1:], 10, 64)
					e.b = append(e.b, 2)
					ok = err == nil && str(a[:i]) && num(float64(c))
				} else {
					ok = false
				}
			case float64:
				e.b = append(e.b, 1)
				ok = num(a)
			default:
				ok = false
			}
		}
		ok = ok && str(arr[3])
	case code == kindDel && len(arr) == 2 && !isString(arr[0]):
		e.b = append(e.b, 1)
		ok = num(arr[0]) && num(arr[1])
	case code == kindDel && isString(arr[0]):
		e.b = append(e.b, 0)
		var groups [][]any
		for _, v := range arr {
			if isString(v) {
				groups = append(groups, []any{v})
			} else {
				groups[len(groups)-1] = append(groups[len(groups)-1], v)
			}
		}
		e.uvarint(uint64(len(groups)))
		ok = true
		for _, g := range groups {
			if len(g)%2 != 1 {
				ok = false
				break
			}
			str(g[0])
			e.uvarint(uint64(len(g) / 2))
			for _, v := range g[1:] {
				ok = ok && num(v)
			}
		}
	}
	if !ok {
		return nil, false
	}
	// Only a value that decodes to the same text is sent this way.
	back, err := decodeTextValue(code, e.b)
	if err != nil || !bytes.Equal(back, value) {
		return nil, false
	}
	return e.b, true
}

func isString(v any) bool { _, ok := v.(string); return ok }

// decodeTextValue renders a binary ins or del value as its JSON text.
func decodeTextValue(code byte, p []byte) (json.RawMessage, error) {
	d := dec{b: p}
	num := func() float64 {
		v := d.uvarint()
		if v > 1<<53-1 {
			d.fail("text clock %d out of range", v)
		}
		return float64(v)
	}
	var out []any
	form := d.byte()
	switch {
	case code == kindIns && form == 0:
		site, clock := d.str(), num()
		var anchor any
		switch a := d.byte(); a {
		case 0:
			anchor = ""
		case 1:
			anchor = num()
		case 2:
			s := d.str()
			anchor = s + "@" + strconv.FormatUint(uint64(num()), 10)
		default:
			d.fail("text anchor form %d", a)
		}
		out = []any{site, clock, anchor, d.str()}
	case code == kindIns && form == 1:
		out = []any{num(), d.str()}
	case code == kindDel && form == 0:
		groups := d.uvarint()
		if groups == 0 || groups > uint64(len(d.b)) {
			d.fail("%d delete groups", groups)
		}
		for i := uint64(0); i < groups && d.err == nil; i++ {
			out = append(out, d.str())
			pairs := d.uvarint()
			if pairs > uint64(len(d.b)) {
				d.fail("%d delete ranges", pairs)
			}
			for j := uint64(0); j < pairs && d.err == nil; j++ {
				out = append(out, num(), num())
			}
		}
	case code == kindDel && form == 1:
		out = []any{num(), num()}
	default:
		d.fail("text op form %d", form)
	}
	if d.err == nil && len(d.b) != 0 {
		d.fail("%d bytes after a text op", len(d.b))
	}
	if d.err != nil {
		return nil, d.err
	}
	return textJSON(out), nil
}
