// Package clock provides hybrid logical clocks (HLC).
//
// An HLC timestamp is wall-clock milliseconds plus a logical counter plus the
// id of the node that issued it. It orders events the way Lamport clocks do
// (a receive is always after the send), stays close to physical time, and
// needs no synchronised clocks. Ties are broken by node id, so any two
// timestamps from different nodes are totally ordered; merges that pick a
// winner by timestamp are therefore deterministic on every replica.
//
// The package is pure: the time source is injected.
package clock

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/open-autoglm/autoglm/app/internal/errcode"
)

// ErrSkew reports a remote timestamp further in the future than the clock
// accepts. Accepting it would drag every later local timestamp forward.
var ErrSkew = errcode.New("clock_skew", "clock: timestamp too far in the future")

// ErrFormat reports a timestamp that does not parse.
var ErrFormat = errcode.New("bad_request", "clock: malformed timestamp")

// MaxWall is the largest wall time Parse accepts: 2^53-1 ms, the largest
// integer a JavaScript client can hold exactly (about the year 287,000).
// Bounding it also keeps the receive rule's arithmetic from overflowing.
const MaxWall = 1<<53 - 1

// Timestamp is one HLC reading. The zero value sorts before every real one.
type Timestamp struct {
	Wall    int64  // milliseconds since the Unix epoch
	Logical uint32 // counter for events within the same millisecond
	Node    string // issuing node or client id; tie-breaker
}

// IsZero reports whether t is the zero timestamp.
func (t Timestamp) IsZero() bool { return t.Wall == 0 && t.Logical == 0 && t.Node == "" }

// Compare orders timestamps by wall time, then counter, then node id.
func (t Timestamp) Compare(u Timestamp) int {
	switch {
	case t.Wall < u.Wall:
		return -1
	case t.Wall > u.Wall:
		return 1
	case t.Logical < u.Logical:
		return -1
	case t.Logical > u.Logical:
		return 1
	}
	return strings.Compare(t.Node, u.Node)
}

// After reports whether t is strictly later than u.
func (t Timestamp) After(u Timestamp) bool { return t.Compare(u) > 0 }

// String renders "wall.logical.node" (node may be empty), e.g.
// "1764096000000.3.c1". The form is compact on the wire and easy to read in
// logs.
func (t Timestamp) String() string {
	if t.IsZero() {
		return ""
	}
	return strconv.FormatInt(t.Wall, 10) + "." + strconv.FormatUint(uint64(t.Logical), 10) + "." + t.Node
}

// Parse reads the String form. The empty string is the zero timestamp.
func Parse(s string) (Timestamp, error) {
	if s == "" {
		return Timestamp{}, nil
	}
	parts := strings.SplitN(s, ".", 3)
	if len(parts) != 3 {
		return Timestamp{}, fmt.Errorf("%w: %q", ErrFormat, s)
	}
	wall, err := strconv.ParseInt(parts[0], 10, 64)
	if err != nil || wall < 0 || wall > MaxWall {
		return Timestamp{}, fmt.Errorf("%w: %q", ErrFormat, s)
	}
	logical, err := strconv.ParseUint(parts[1], 10, 32)
	if err != nil {
		return Timestamp{}, fmt.Errorf("%w: %q", ErrFormat, s)
	}
	return Timestamp{Wall: wall, Logical: uint32(logical), Node: parts[2]}, nil
}

// MarshalText implements encoding.TextMarshaler (JSON string form).
func (t Timestamp) MarshalText() ([]byte, error) { return []byte(t.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (t *Timestamp) UnmarshalText(b []byte) error {
	v, err := Parse(string(b))
	if err != nil {
		return err
	}
	*t = v
	return nil
}

// Clock is a hybrid logical clock for one node. It is safe for concurrent use.
type Clock struct {
	node    string
	now     func() time.Time
	maxSkew time.Duration

	mu   sync.Mutex
	last Timestamp
}

// New returns a clock for node reading time from now. Remote timestamps more
// than maxSkew ahead of now are refused by Update; zero means no limit.
func New(node string, now func() time.Time, maxSkew time.Duration) *Clock {
	if now == nil {
		now = time.Now
	}
	return &Clock{node: node, now: now, maxSkew: maxSkew}
}

// Node returns the node id stamped on local timestamps.
func (c *Clock) Node() string { return c.node }

// Now returns a timestamp for a local or send event, strictly after every
// timestamp this clock has issued or received.
func (c *Clock) Now() Timestamp {
	c.mu.Lock()
	defer c.mu.Unlock()
	pt := c.now().UnixMilli()
	if pt > c.last.Wall {
		c.last = Timestamp{Wall: pt, Node: c.node}
	} else {
		c.last = tick(c.last.Wall, c.last.Logical, c.node)
	}
	return c.last
}

// tick returns the reading after (wall, logical). A counter that would wrap
// moves to the next millisecond instead, so readings never go backwards even
// when a peer sends a counter at its maximum.
func tick(wall int64, logical uint32, node string) Timestamp {
	if logical == math.MaxUint32 {
		return Timestamp{Wall: wall + 1, Node: node}
	}
	return Timestamp{Wall: wall, Logical: logical + 1, Node: node}
}

// Update applies the HLC receive rule for a remote timestamp and returns the
// new local reading, which is after both the remote stamp and everything this
// clock issued before. A remote stamp too far in the future is refused with
// ErrSkew and leaves the clock unchanged.
func (c *Clock) Update(remote Timestamp) (Timestamp, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	pt := c.now().UnixMilli()
	if c.maxSkew > 0 && remote.Wall-pt > c.maxSkew.Milliseconds() {
		return Timestamp{}, fmt.Errorf("%w: %d ms ahead (limit %s)", ErrSkew, remote.Wall-pt, c.maxSkew)
	}
	wall := max(pt, c.last.Wall, remote.Wall)
	switch {
	case wall == c.last.Wall && wall == remote.Wall:
		c.last = tick(wall, max(c.last.Logical, remote.Logical), c.node)
	case wall == c.last.Wall:
		c.last = tick(wall, c.last.Logical, c.node)
	case wall == remote.Wall:
		c.last = tick(wall, remote.Logical, c.node)
	default:
		c.last = Timestamp{Wall: wall, Node: c.node}
	}
	return c.last, nil
}
