package auth_test

import (
	"strings"
	"testing"

	"github.com/open-autoglm/autoglm/app/auth"
)

func TestClientID(t *testing.T) {
	alice, bob := auth.Identity{Subject: "alice"}, auth.Identity{Subject: "alice@corp"}
	anon := auth.Identity{Subject: "anonymous", Anonymous: true}
	cases := []struct {
		id             auth.Identity
		requested, got string
	}{
		{anon, "tab", "tab"}, // authentication off: as asked
		{anon, "x@alice", "x@alice"},
		{alice, "", ""}, // no id asked for: none (REST without X-Client-ID)
		{alice, "tab", "tab@alice"},
		{alice, "tab@alice", "tab@alice"}, // already hers: kept (reconnects)
		{alice, "tab@bob", "tab%40bob@alice"},
		{alice, "@alice", "%40alice@alice"},
		{alice, "50%", "50%25@alice"},
		{bob, "tab", "tab@alice@corp"},
		{bob, "tab@alice", "tab%40alice@alice@corp"},
		{alice, "tab@corp", "tab%40corp@alice"},
	}
	for _, c := range cases {
		if got := auth.ClientID(c.id, c.requested); got != c.got {
			t.Errorf("ClientID(%q, %q) = %q, want %q", c.id.Subject, c.requested, got, c.got)
		}
	}
	// No subject can produce an id bound to another: every id names its
	// subject after its first '@'.
	subjects := []string{"alice", "alice@corp", "corp", "a", "a@b@c", "b@c", "%40", "x%"}
	asks := []string{"", "tab", "tab@alice", "tab@alice@corp", "@corp", "a@b", "%", "%40", "tab%40alice", "@"}
	owner := map[string]string{}
	for _, s := range subjects {
		for _, a := range asks {
			got := auth.ClientID(auth.Identity{Subject: s}, a)
			if got == "" {
				continue
			}
			if _, sub, _ := strings.Cut(got, "@"); sub != s {
				t.Errorf("%q asking for %q got %q", s, a, got)
			}
			if o, ok := owner[got]; ok && o != s {
				t.Errorf("%q is produced for both %q and %q", got, o, s)
			}
			owner[got] = s
		}
	}
}
