package jsonvalue

import (
	"bytes"
	"encoding/json"
	"math"
	"testing"
)

// same fails t unless Append writes v as json.Marshal does.
func same(t *testing.T, v any) {
	t.Helper()
	want, werr := json.Marshal(v)
	got, gerr := Append(nil, v)
	if (werr != nil) != (gerr != nil) || !bytes.Equal(got, want) {
		t.Fatalf("%#v:\n got %s (%v)\nwant %s (%v)", v, got, gerr, want, werr)
	}
}

func TestAppendWritesWhatEncodingJSONWrites(t *testing.T) {
	for _, v := range []any{
		nil, true, false, "", "plain", `quote " and \ back`, "<tag> & more", "\x00\x01\b\f\n\r\t\x1f\x7f",
		"\u2028 \u2029 é 日本 😀", "bad \xff utf8 \xed\xa0\x80", 0.0, math.Copysign(0, -1), 1.0, -1.5, 1e20, 1e21, 1e-6, 1e-7,
		123456789.125, 5e-324, math.MaxFloat64, 0.1, 1e-9,
		[]any{}, []any(nil), []any{1.0, "a", nil, []any{map[string]any{}}},
		map[string]any{}, map[string]any(nil), map[string]any{"b": 1.0, "a": "x", "<k>": true, "ü": nil, "": []any{2.0}},
		map[string]any{"n": json.Number("12.50"), "i": 3, "raw": json.RawMessage(`{"z": 1}`)},
		json.RawMessage(nil), json.RawMessage(` [1, "<a & b>", "\u2028", " x "] `), json.RawMessage(`{"a":`),
	} {
		same(t, v)
	}
	for _, f := range []float64{math.NaN(), math.Inf(1)} {
		if _, err := Append(nil, f); err == nil {
			t.Fatalf("%v: no error", f)
		}
	}
}

// Any JSON text, decoded as encoding/json decodes it, is written back
// exactly as encoding/json writes it; and any string, however malformed.
func FuzzAppend(f *testing.F) {
	for _, s := range []string{`{"a":[1,2.5e-8,"x<y>"],"b":{"c":null,"d":true}}`, `"\u2028\ud800"`, `1e300`, `[-0, 0.000001]`, "\"\xff\""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		same(t, s)
		same(t, json.RawMessage(s))
		var v any
		if json.Unmarshal([]byte(s), &v) == nil {
			same(t, v)
		}
	})
}

func BenchmarkAppendDocument(b *testing.B) {
	doc := map[string]any{}
	for i := range 100 {
		doc[string(rune('a'+i%26))+string(rune('a'+i/26))] = "seed value of a hundred bytes, more or less, as the benchmark's documents hold <&> ....."
	}
	b.Run("jsonvalue", func(b *testing.B) {
		var buf []byte
		for b.Loop() {
			buf, _ = Append(buf[:0], doc)
		}
	})
	b.Run("encoding_json", func(b *testing.B) {
		for b.Loop() {
			_, _ = json.Marshal(doc)
		}
	})
}
