package clock

import (
	"slices"
	"strconv"
	"strings"
)

// VersionVector maps a client id to the sequence number of the last op of
// that client that has been seen. Missing entries are zero. Where an HLC
// orders every pair of events (so one can be picked as the winner), a
// version vector tells whether two histories are causally ordered or
// concurrent — the question a conflict policy asks before it decides.
type VersionVector map[string]uint64

// Order is the causal relation between two version vectors.
type Order int

// Causal relations, from the point of view of the receiver of Compare.
const (
	Equal      Order = iota // the same history
	Before                  // the receiver happened before the argument
	After                   // the receiver happened after the argument
	Concurrent              // neither saw all of the other
)

func (o Order) String() string {
	switch o {
	case Equal:
		return "equal"
	case Before:
		return "before"
	case After:
		return "after"
	case Concurrent:
		return "concurrent"
	}
	return "order(" + strconv.Itoa(int(o)) + ")"
}

// Get returns the sequence seen for client (zero if none).
func (v VersionVector) Get(client string) uint64 { return v[client] }

// Observe records that client's op seq has been seen. It reports whether
// seq was new (greater than what the vector held); a false answer means a
// duplicate or an out-of-order replay. A nil vector is allocated.
func (v *VersionVector) Observe(client string, seq uint64) bool {
	if seq <= (*v)[client] {
		return false
	}
	if *v == nil {
		*v = VersionVector{}
	}
	(*v)[client] = seq
	return true
}

// Clone returns a copy; the copy of a nil vector is nil.
func (v VersionVector) Clone() VersionVector {
	if v == nil {
		return nil
	}
	out := make(VersionVector, len(v))
	for k, n := range v {
		out[k] = n
	}
	return out
}

// Merge returns the pointwise maximum of v and o: the history that has seen
// everything either has seen. It is commutative, associative and idempotent,
// and leaves both inputs unchanged. Zero entries are dropped.
func (v VersionVector) Merge(o VersionVector) VersionVector {
	out := make(VersionVector, max(len(v), len(o)))
	for k, n := range v {
		if n > 0 {
			out[k] = n
		}
	}
	for k, n := range o {
		if n > out[k] {
			out[k] = n
		}
	}
	return out
}

// Compare reports how v relates causally to o.
func (v VersionVector) Compare(o VersionVector) Order {
	less, greater := false, false
	for k, n := range v {
		switch m := o[k]; {
		case n > m:
			greater = true
		case n < m:
			less = true
		}
	}
	for k, m := range o {
		if _, ok := v[k]; !ok && m > 0 {
			less = true
		}
	}
	switch {
	case less && greater:
		return Concurrent
	case less:
		return Before
	case greater:
		return After
	}
	return Equal
}

// Descends reports whether v has seen everything o has seen (v ≥ o
// pointwise), i.e. v is equal to or after o.
func (v VersionVector) Descends(o VersionVector) bool {
	for k, m := range o {
		if v[k] < m {
			return false
		}
	}
	return true
}

// String renders the vector with clients sorted, e.g. "{a:3 b:1}".
func (v VersionVector) String() string {
	keys := make([]string, 0, len(v))
	for k := range v {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var b strings.Builder
	b.WriteByte('{')
	for i, k := range keys {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(k)
		b.WriteByte(':')
		b.WriteString(strconv.FormatUint(v[k], 10))
	}
	b.WriteByte('}')
	return b.String()
}
