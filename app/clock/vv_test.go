package clock

import (
	"math/rand/v2"
	"testing"
)

func TestVersionVectorCompare(t *testing.T) {
	tests := []struct {
		name string
		a, b VersionVector
		want Order
	}{
		{"BothEmpty", nil, VersionVector{}, Equal},
		{"Equal", VersionVector{"a": 2, "b": 1}, VersionVector{"a": 2, "b": 1}, Equal},
		{"ZeroEntriesIgnored", VersionVector{"a": 2, "z": 0}, VersionVector{"a": 2}, Equal},
		{"Before", VersionVector{"a": 1}, VersionVector{"a": 2}, Before},
		{"BeforeNewClient", VersionVector{"a": 2}, VersionVector{"a": 2, "b": 1}, Before},
		{"After", VersionVector{"a": 3, "b": 1}, VersionVector{"a": 2}, After},
		{"Concurrent", VersionVector{"a": 3}, VersionVector{"a": 2, "b": 1}, Concurrent},
		{"ConcurrentDisjoint", VersionVector{"a": 1}, VersionVector{"b": 1}, Concurrent},
	}
	flip := map[Order]Order{Equal: Equal, Before: After, After: Before, Concurrent: Concurrent}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.a.Compare(tt.b); got != tt.want {
				t.Errorf("%v.Compare(%v) = %v, want %v", tt.a, tt.b, got, tt.want)
			}
			if got := tt.b.Compare(tt.a); got != flip[tt.want] {
				t.Errorf("%v.Compare(%v) = %v, want %v", tt.b, tt.a, got, flip[tt.want])
			}
			wantDesc := tt.want == Equal || tt.want == After
			if got := tt.a.Descends(tt.b); got != wantDesc {
				t.Errorf("%v.Descends(%v) = %v, want %v", tt.a, tt.b, got, wantDesc)
			}
		})
	}
}

func TestVersionVectorObserve(t *testing.T) {
	var v VersionVector
	if !v.Observe("a", 1) || !v.Observe("a", 3) {
		t.Fatal("new sequence numbers not reported as new")
	}
	if v.Observe("a", 3) || v.Observe("a", 2) || v.Observe("b", 0) {
		t.Fatal("a duplicate or older sequence reported as new")
	}
	if v.Get("a") != 3 || v.Get("b") != 0 {
		t.Fatalf("vector = %v", v)
	}
	if got := v.String(); got != "{a:3}" {
		t.Fatalf("String = %q", got)
	}
	c := v.Clone()
	c.Observe("b", 1)
	if v.Get("b") != 0 {
		t.Fatal("Clone shares storage")
	}
	if VersionVector(nil).Clone() != nil {
		t.Fatal("Clone of nil is not nil")
	}
}

// The join laws that let replicas exchange vectors in any order.
func TestVersionVectorMergeLaws(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	gen := func() VersionVector {
		v := VersionVector{}
		for _, c := range []string{"a", "b", "c", "d"} {
			if r.IntN(3) > 0 {
				v[c] = uint64(r.IntN(5))
			}
		}
		return v
	}
	const cases = 2000
	for i := 0; i < cases; i++ {
		a, b, c := gen(), gen(), gen()
		if a.Merge(b).Compare(b.Merge(a)) != Equal {
			t.Fatalf("not commutative: %v %v", a, b)
		}
		if a.Merge(b).Merge(c).Compare(a.Merge(b.Merge(c))) != Equal {
			t.Fatalf("not associative: %v %v %v", a, b, c)
		}
		if a.Merge(a).Compare(a) != Equal {
			t.Fatalf("not idempotent: %v", a)
		}
		m := a.Merge(b)
		if !m.Descends(a) || !m.Descends(b) {
			t.Fatalf("merge %v does not descend from %v and %v", m, a, b)
		}
		if o := a.Compare(b); (o == Equal || o == After) != a.Descends(b) {
			t.Fatalf("Compare %v and Descends disagree for %v, %v", o, a, b)
		}
	}
	t.Logf("%d cases", cases)
}
