package httpapi

import (
	"net/http"
	"testing"
)

// TestClientAddr: a proxy header counts only when configured, and then its
// last entry (the one the nearest trusted proxy wrote); by default the peer
// address counts, whatever headers a client sends.
func TestClientAddr(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name, header string
		values       []string
		want         string
	}{
		{"PeerByDefault", "", []string{"198.51.100.7"}, "192.0.2.1"},
		{"ConfiguredHeader", "X-Forwarded-For", []string{"198.51.100.7"}, "198.51.100.7"},
		{"LastEntryOfAList", "X-Forwarded-For", []string{"203.0.113.9, 198.51.100.7"}, "198.51.100.7"},
		{"LastOfRepeatedHeaders", "X-Forwarded-For", []string{"203.0.113.9", "198.51.100.8 "}, "198.51.100.8"},
		{"MissingHeaderFallsBackToPeer", "X-Real-IP", nil, "192.0.2.1"},
		{"EmptyHeaderFallsBackToPeer", "X-Forwarded-For", []string{" , "}, "192.0.2.1"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := &Server{ClientAddrHeader: c.header}
			r := &http.Request{RemoteAddr: "192.0.2.1:5555", Header: http.Header{}}
			for _, v := range c.values {
				r.Header.Add("X-Forwarded-For", v)
			}
			if got := s.clientAddr(r); got != c.want {
				t.Fatalf("got %q, want %q", got, c.want)
			}
		})
	}
}
