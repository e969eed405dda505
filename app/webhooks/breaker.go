package webhooks

// The per-endpoint circuit breaker and the counters it reports.

import (
	"slices"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/sony/gobreaker/v2"
)

type breaker struct {
	cb          *gobreaker.CircuitBreaker[struct{}]
	mu          sync.Mutex
	transitions []Transition
}

// Transition is a change of an endpoint's breaker state.
type Transition struct {
	From string    `json:"from"`
	To   string    `json:"to"`
	At   time.Time `json:"at"`
}

func (s *Service) breaker(id string) *breaker {
	s.brMu.Lock()
	defer s.brMu.Unlock()
	b := s.breakers[id]
	if b == nil {
		b = &breaker{}
		failures := uint32(s.opt.Breaker.Failures)
		b.cb = gobreaker.NewCircuitBreaker[struct{}](gobreaker.Settings{
			Name:        id,
			MaxRequests: 1,
			Timeout:     s.opt.Breaker.Open,
			ReadyToTrip: func(c gobreaker.Counts) bool { return c.ConsecutiveFailures >= failures },
			OnStateChange: func(name string, from, to gobreaker.State) {
				b.mu.Lock()
				b.transitions = append(b.transitions, Transition{From: from.String(), To: to.String(), At: s.opt.Now().UTC()})
				if len(b.transitions) > 50 {
					b.transitions = b.transitions[len(b.transitions)-50:]
				}
				b.mu.Unlock()
				s.opt.Log.WithFields(logrus.Fields{"webhook": name, "from": from.String(), "to": to.String()}).Warn("webhook circuit breaker")
			},
		})
		s.breakers[id] = b
	}
	return b
}

// EndpointStats is one endpoint's breaker as seen by this replica.
type EndpointStats struct {
	Breaker     string       `json:"breaker"`
	Transitions []Transition `json:"transitions,omitempty"`
}

// Stats are this replica's delivery counters.
type Stats struct {
	Sent         int64                    `json:"sent"`
	Failed       int64                    `json:"failed"`
	DeadLettered int64                    `json:"dead_lettered"`
	Endpoints    map[string]EndpointStats `json:"endpoints"`
}

// Stats returns this replica's counters and breaker states.
func (s *Service) Stats() Stats {
	st := Stats{Sent: s.sent.Load(), Failed: s.failures.Load(), DeadLettered: s.deadLettered.Load(),
		Endpoints: map[string]EndpointStats{}}
	s.brMu.Lock()
	defer s.brMu.Unlock()
	for id, b := range s.breakers {
		// State takes the breaker's lock, under which it calls
		// OnStateChange, which takes b.mu: never hold b.mu here.
		state := b.cb.State().String()
		b.mu.Lock()
		st.Endpoints[id] = EndpointStats{Breaker: state, Transitions: slices.Clone(b.transitions)}
		b.mu.Unlock()
	}
	return st
}
