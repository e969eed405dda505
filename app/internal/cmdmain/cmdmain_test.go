package cmdmain

import (
	"errors"
	"flag"
	"fmt"
	"testing"
)

func TestExitCode(t *testing.T) {
	base := errors.New("bad config")
	for _, tc := range []struct {
		err  error
		want int
	}{
		{base, 1},
		{WithCode(2, base), 2},
		{fmt.Errorf("start: %w", WithCode(3, base)), 3},
	} {
		if got := exitCode(tc.err); got != tc.want {
			t.Errorf("exitCode(%v) = %d, want %d", tc.err, got, tc.want)
		}
	}
	if err := WithCode(2, base); err.Error() != base.Error() || !errors.Is(err, base) {
		t.Errorf("WithCode changed the error: %v", err)
	}
	if WithCode(2, nil) != nil {
		t.Error("WithCode(2, nil) is not nil")
	}
}

func TestExplicit(t *testing.T) {
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	fs.Int("port", 8080, "")
	fs.Int("other", 1, "")
	if err := fs.Parse([]string{"-port", "8080"}); err != nil {
		t.Fatal(err)
	}
	got := Explicit(fs)
	if !got["port"] || got["other"] || len(got) != 1 {
		t.Fatalf("Explicit = %v, want only port (given, even at its default)", got)
	}
}
