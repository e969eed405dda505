package config

import "testing"

// A session queue set larger than half the op-log window is held to half
// the window, so an overflowing session can always replay from the log.
func TestSessionQueueIsAtMostHalfTheLogWindow(t *testing.T) {
	for _, c := range []struct {
		env  map[string]string
		want int
	}{
		{nil, 500},
		{map[string]string{"AUTOGLM_SESSION_QUEUE": "4096"}, 500},
		{map[string]string{"AUTOGLM_SESSION_QUEUE": "4096", "AUTOGLM_LOG_WINDOW": "10000"}, 4096},
		{map[string]string{"AUTOGLM_SESSION_QUEUE": "100"}, 100},
		{map[string]string{"AUTOGLM_LOG_WINDOW": "64"}, 32},
	} {
		cfg, err := FromEnv(func(k string) (string, bool) { v, ok := c.env[k]; return v, ok })
		if err != nil {
			t.Fatal(err)
		}
		if got := cfg.SessionQueueLen(); got != c.want {
			t.Errorf("%v: session queue %d, want %d", c.env, got, c.want)
		}
	}
}
