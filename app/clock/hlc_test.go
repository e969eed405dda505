package clock

import (
	"errors"
	"math"
	"sync"
	"testing"
	"time"
)

// fakeTime is an injected time source tests move by hand.
type fakeTime struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeTime(ms int64) *fakeTime { return &fakeTime{t: time.UnixMilli(ms)} }

func (f *fakeTime) Now() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.t
}

func (f *fakeTime) Set(ms int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.t = time.UnixMilli(ms)
}

func TestNowUsesInjectedTime(t *testing.T) {
	ft := newFakeTime(1_000)
	c := New("n1", ft.Now, 0)
	if got, want := c.Now(), (Timestamp{Wall: 1_000, Node: "n1"}); got != want {
		t.Fatalf("Now = %v, want %v", got, want)
	}
	ft.Set(2_000)
	if got, want := c.Now(), (Timestamp{Wall: 2_000, Node: "n1"}); got != want {
		t.Fatalf("after advancing time, Now = %v, want %v", got, want)
	}
	if c.Node() != "n1" {
		t.Fatalf("Node = %q", c.Node())
	}
}

func TestNowMonotonic(t *testing.T) {
	t.Run("SameMillisecond", func(t *testing.T) {
		c := New("n1", newFakeTime(5_000).Now, 0)
		prev := c.Now()
		for i := 0; i < 100; i++ {
			ts := c.Now()
			if !ts.After(prev) {
				t.Fatalf("reading %d: %v not after %v", i, ts, prev)
			}
			if ts.Wall != 5_000 || ts.Logical != uint32(i+1) {
				t.Fatalf("reading %d: %v, want wall 5000 logical %d", i, ts, i+1)
			}
			prev = ts
		}
	})
	t.Run("ClockGoesBackwards", func(t *testing.T) {
		ft := newFakeTime(10_000)
		c := New("n1", ft.Now, 0)
		a := c.Now()
		ft.Set(9_000) // NTP step back
		b := c.Now()
		if !b.After(a) || b.Wall != 10_000 {
			t.Fatalf("after a step back: %v, want after %v at wall 10000", b, a)
		}
	})
	t.Run("CounterOverflow", func(t *testing.T) {
		c := New("n1", newFakeTime(7).Now, 0)
		c.last = Timestamp{Wall: 7, Logical: math.MaxUint32, Node: "n1"}
		got := c.Now()
		if want := (Timestamp{Wall: 8, Node: "n1"}); got != want {
			t.Fatalf("Now at a full counter = %v, want %v", got, want)
		}
	})
	t.Run("Concurrent", func(t *testing.T) {
		c := New("n1", newFakeTime(1).Now, 0)
		const workers, each = 8, 200
		var mu sync.Mutex
		seen := map[Timestamp]bool{}
		var wg sync.WaitGroup
		for range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range each {
					ts := c.Now()
					mu.Lock()
					seen[ts] = true
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		if len(seen) != workers*each {
			t.Fatalf("%d distinct readings, want %d", len(seen), workers*each)
		}
	})
}

func TestUpdateReceiveRule(t *testing.T) {
	tests := []struct {
		name   string
		now    int64
		last   Timestamp
		remote Timestamp
		want   Timestamp
	}{
		{"PhysicalAhead", 100, Timestamp{Wall: 50, Logical: 3, Node: "me"}, Timestamp{Wall: 60, Logical: 9, Node: "r"}, Timestamp{Wall: 100, Node: "me"}},
		{"RemoteAhead", 100, Timestamp{Wall: 50, Node: "me"}, Timestamp{Wall: 120, Logical: 4, Node: "r"}, Timestamp{Wall: 120, Logical: 5, Node: "me"}},
		{"LocalAhead", 100, Timestamp{Wall: 130, Logical: 2, Node: "me"}, Timestamp{Wall: 120, Logical: 9, Node: "r"}, Timestamp{Wall: 130, Logical: 3, Node: "me"}},
		{"SameWallRemoteCounterHigher", 100, Timestamp{Wall: 130, Logical: 2, Node: "me"}, Timestamp{Wall: 130, Logical: 7, Node: "r"}, Timestamp{Wall: 130, Logical: 8, Node: "me"}},
		{"SameWallLocalCounterHigher", 100, Timestamp{Wall: 130, Logical: 9, Node: "me"}, Timestamp{Wall: 130, Logical: 7, Node: "r"}, Timestamp{Wall: 130, Logical: 10, Node: "me"}},
		{"RemoteCounterFull", 100, Timestamp{Wall: 50, Node: "me"}, Timestamp{Wall: 120, Logical: math.MaxUint32, Node: "r"}, Timestamp{Wall: 121, Node: "me"}},
		{"ZeroRemote", 100, Timestamp{}, Timestamp{}, Timestamp{Wall: 100, Node: "me"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := New("me", newFakeTime(tt.now).Now, 0)
			c.last = tt.last
			got, err := c.Update(tt.remote)
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Fatalf("Update = %v, want %v", got, tt.want)
			}
			if !got.After(tt.remote) || !got.After(tt.last) {
				t.Fatalf("Update = %v is not after remote %v and last %v", got, tt.remote, tt.last)
			}
			if next := c.Now(); !next.After(got) {
				t.Fatalf("Now after Update = %v, not after %v", next, got)
			}
		})
	}
}

func TestUpdateSkew(t *testing.T) {
	ft := newFakeTime(1_000_000)
	c := New("me", ft.Now, 5*time.Second)
	before := c.Now()

	t.Run("ErrSkew", func(t *testing.T) {
		_, err := c.Update(Timestamp{Wall: 1_000_000 + 5_001, Node: "r"})
		if !errors.Is(err, ErrSkew) {
			t.Fatalf("Update 5001 ms ahead: err = %v, want ErrSkew", err)
		}
		if next := c.Now(); next.Wall != before.Wall {
			t.Fatalf("a refused stamp moved the clock: %v", next)
		}
	})
	t.Run("OKAtLimit", func(t *testing.T) {
		got, err := c.Update(Timestamp{Wall: 1_000_000 + 5_000, Node: "r"})
		if err != nil {
			t.Fatalf("Update exactly at the limit: %v", err)
		}
		if got.Wall != 1_005_000 {
			t.Fatalf("Update = %v, want wall 1005000", got)
		}
	})
	t.Run("OKOldStamp", func(t *testing.T) {
		// An offline client's stamp from last week is fine: only the
		// future is bounded.
		if _, err := c.Update(Timestamp{Wall: 1, Node: "r"}); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("NoLimit", func(t *testing.T) {
		c := New("me", ft.Now, 0)
		if _, err := c.Update(Timestamp{Wall: math.MaxInt64 / 2, Node: "r"}); err != nil {
			t.Fatalf("without a limit: %v", err)
		}
	})
}

func TestCompare(t *testing.T) {
	a := Timestamp{Wall: 10, Logical: 1, Node: "a"}
	tests := []struct {
		x, y Timestamp
		want int
	}{
		{a, a, 0},
		{a, Timestamp{Wall: 11, Node: "a"}, -1},
		{a, Timestamp{Wall: 10, Logical: 2, Node: "a"}, -1},
		{a, Timestamp{Wall: 10, Logical: 1, Node: "b"}, -1},
		{a, Timestamp{Wall: 9, Logical: 99, Node: "z"}, 1},
		{Timestamp{}, a, -1},
	}
	for _, tt := range tests {
		if got := tt.x.Compare(tt.y); got != tt.want {
			t.Errorf("%v.Compare(%v) = %d, want %d", tt.x, tt.y, got, tt.want)
		}
		if got := tt.y.Compare(tt.x); got != -tt.want {
			t.Errorf("%v.Compare(%v) = %d, want %d", tt.y, tt.x, got, -tt.want)
		}
	}
}

func TestParseFormat(t *testing.T) {
	t.Run("RoundTrip", func(t *testing.T) {
		for _, ts := range []Timestamp{
			{},
			{Wall: 1764096000000, Logical: 3, Node: "c1"},
			{Wall: 1, Node: ""},
			{Wall: 0, Logical: 1, Node: "x"},
			{Wall: MaxWall, Logical: math.MaxUint32, Node: "node.with.dots"},
		} {
			got, err := Parse(ts.String())
			if err != nil || got != ts {
				t.Errorf("Parse(%q) = %v, %v; want %v", ts.String(), got, err, ts)
			}
		}
	})
	t.Run("Format", func(t *testing.T) {
		ts := Timestamp{Wall: 1764096000000, Logical: 3, Node: "c1"}
		if got := ts.String(); got != "1764096000000.3.c1" {
			t.Fatalf("String = %q", got)
		}
	})
	t.Run("ErrFormat", func(t *testing.T) {
		for _, s := range []string{"x", "1.2", "a.1.n", "1.b.n", "-1.0.n", "9007199254740992.0.n", "1.4294967296.n", "1.-1.n", ".."} {
			if _, err := Parse(s); !errors.Is(err, ErrFormat) {
				t.Errorf("Parse(%q) err = %v, want ErrFormat", s, err)
			}
		}
	})
	t.Run("Text", func(t *testing.T) {
		ts := Timestamp{Wall: 42, Logical: 7, Node: "n"}
		b, err := ts.MarshalText()
		if err != nil {
			t.Fatal(err)
		}
		var got Timestamp
		if err := got.UnmarshalText(b); err != nil || got != ts {
			t.Fatalf("UnmarshalText(%q) = %v, %v", b, got, err)
		}
		if err := got.UnmarshalText([]byte("bad")); !errors.Is(err, ErrFormat) {
			t.Fatalf("UnmarshalText(bad) = %v", err)
		}
	})
}

func FuzzParseTimestamp(f *testing.F) {
	for _, s := range []string{"", "1764096000000.3.c1", "0.0.", "1.2", "-1.0.n", "+5.0.x", "1.4294967295.a.b.c"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ts, err := Parse(s)
		if err != nil {
			if !errors.Is(err, ErrFormat) {
				t.Fatalf("Parse(%q): error %v does not wrap ErrFormat", s, err)
			}
			return
		}
		again, err := Parse(ts.String())
		if err != nil || again != ts {
			t.Fatalf("Parse(%q) = %v; round trip through %q gives %v, %v", s, ts, ts.String(), again, err)
		}
		if ts.Wall < 0 {
			t.Fatalf("Parse(%q) gave a negative wall time", s)
		}
		// The receive rule must put any parsed stamp behind the next reading.
		c := New("me", func() time.Time { return time.UnixMilli(0) }, 0)
		got, err := c.Update(ts)
		if err != nil {
			t.Fatal(err)
		}
		if got.Compare(Timestamp{Wall: ts.Wall, Logical: ts.Logical}) <= 0 {
			t.Fatalf("Update(%v) = %v, not after its wall/counter", ts, got)
		}
	})
}
