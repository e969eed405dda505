package protocol_test

import (
	"strings"
	"testing"

	"github.com/open-autoglm/autoglm/app/core"
	"github.com/open-autoglm/autoglm/app/protocol"
)

func TestDecode(t *testing.T) {
	cases := []struct {
		name, in string
		code     core.Code
	}{
		{"OK", `{"t":"sub","doc":"a/b","since":3}`, ""},
		{"NoType", `{"doc":"a/b"}`, core.CodeBadRequest},
		{"NotJSON", `{"t":`, core.CodeBadRequest},
		{"WrongFieldType", `{"t":"sub","since":"three"}`, core.CodeBadRequest},
		{"TooDeep", `{"t":"op","ops":[{"op":"set","path":"a","value":` + strings.Repeat("[", 40) + strings.Repeat("]", 40) + `}]}`, core.CodeBadRequest},
		{"DeepInsideString", `{"t":"ping","msg":"` + strings.Repeat("[", 100) + `"}`, ""},
		{"BadHLC", `{"t":"op","hlc":"noon"}`, core.CodeBadRequest},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := protocol.Decode([]byte(c.in))
			if got := core.CodeOf(err); got != c.code {
				t.Fatalf("code %q (%v), want %q", got, err, c.code)
			}
		})
	}
}

func FuzzDecode(f *testing.F) {
	for _, s := range []string{`{"t":"hello","client":"c"}`, `{"t":"op","doc":"a/b","op":1,"ops":[{"op":"set","path":"x","value":1}]}`,
		`{"t":"sub","doc":"a/b","since":-1}`, `[]`, `{"t":"presence","data":{"a":[[[1]]]}}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := protocol.Decode(b)
		if err != nil {
			if core.CodeOf(err) != core.CodeBadRequest {
				t.Fatalf("decode error with code %q: %v", core.CodeOf(err), err)
			}
			return
		}
		if m.T == "" {
			t.Fatal("decoded a message without a type")
		}
		if _, err := protocol.Encode(m); err != nil {
			t.Fatalf("re-encode: %v", err)
		}
	})
}

func TestURLHelpers(t *testing.T) {
	for in, want := range map[string]string{
		"http://h:1": "ws://h:1/v1/sync",
		"https://h/": "wss://h/v1/sync",
		"ws://h:2":   "ws://h:2/v1/sync",
		"wss://h":    "wss://h/v1/sync",
	} {
		if got := protocol.SyncURL(in); got != want {
			t.Errorf("SyncURL(%q) = %q, want %q", in, got, want)
		}
	}
	if got := protocol.DocURL("http://h/", "notes/a"); got != "http://h/v1/docs/notes/a" {
		t.Errorf("DocURL = %q", got)
	}
}
