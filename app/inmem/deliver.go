package inmem

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/open-autoglm/autoglm/app/daprsub"
	"github.com/open-autoglm/autoglm/app/kv"
)

// Redelivery is how State redelivers a message whose handler did not
// succeed, as the inbound retry policy of a Dapr pub/sub component does
// (components/*/resiliency.yaml: exponential, five retries).
type Redelivery struct {
	// Retries after the first delivery (default 5; negative: none).
	Retries int
	// Backoff before the first retry; it doubles per retry up to
	// MaxBackoff (defaults 500ms and 30s).
	Backoff, MaxBackoff time.Duration
}

func (r Redelivery) retries() int {
	switch {
	case r.Retries < 0:
		return 0
	case r.Retries == 0:
		return 5
	}
	return r.Retries
}

func (r Redelivery) delay(retry int) time.Duration {
	d, top := r.Backoff, r.MaxBackoff
	if d <= 0 {
		d = 500 * time.Millisecond
	}
	if top <= 0 {
		top = 30 * time.Second
	}
	for range retry {
		if d >= top/2 {
			return top
		}
		d *= 2
	}
	return min(d, top)
}

// subscriber is one Subscribe call's subscription to one topic.
type subscriber struct {
	sub daprsub.Subscription
	ctx context.Context // ends when the subscriber leaves
	wg  *sync.WaitGroup // its deliveries in progress
	// gone is set, under State.mu, when the subscriber leaves: no
	// delivery to it starts after that.
	gone bool
}

// group is the subscribers of one pub/sub component and topic: as a Dapr
// consumer group (the replicas of one app id), each message goes to one of
// them. Its messages are delivered one at a time, in publish order, as
// pubsub.in-memory (the local profile) delivers a topic.
type group struct {
	members []*subscriber
	next    int
	queue   []kv.Message
	busy    bool // a goroutine is draining queue
}

func topicKey(pubsub, topic string) string { return pubsub + "\x00" + topic }

// Subscribe delivers the messages published from now on to subs, as daprd
// delivers them to an app's programmatic subscriptions: a structured
// CloudEvent POSTed to the subscription's handler, each message to one of
// the subscribers of its topic (those of every Subscribe call: the
// replicas of one app), one message of a topic at a time, in publish order
// (topics are delivered concurrently). The handler's answer decides what
// happens next, as with daprd:
//
//	200 with SUCCESS or no status   delivered
//	200 with RETRY, or any failure  redelivered after Redelivery's backoff;
//	                                when the retries are spent, published to
//	                                the subscription's DeadLetterTopic (or
//	                                dropped without one)
//	200 with DROP, or 404           published to the DeadLetterTopic (or
//	                                dropped without one)
//
// A message is acknowledged only when its handler has answered, so a
// handler that has not finished keeps its message. stop removes the
// subscriptions and waits for the deliveries in progress; a message whose
// redelivery is still pending then goes to another subscriber of its
// topic, or is lost when none is left (as with pubsub.in-memory).
func (s *State) Subscribe(subs []daprsub.Subscription) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	wg := new(sync.WaitGroup)
	var mine []*subscriber
	s.mu.Lock()
	if s.groups == nil {
		s.groups = map[string]*group{}
	}
	for _, sub := range subs {
		if sub.Handler == nil {
			continue
		}
		k := topicKey(sub.PubsubName, sub.Topic)
		g := s.groups[k]
		if g == nil {
			g = &group{}
			s.groups[k] = g
		}
		m := &subscriber{sub: sub, ctx: ctx, wg: wg}
		g.members = append(g.members, m)
		mine = append(mine, m)
	}
	s.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			s.mu.Lock()
			for _, m := range mine {
				m.gone = true
				k := topicKey(m.sub.PubsubName, m.sub.Topic)
				g := s.groups[k]
				for i, x := range g.members {
					if x == m {
						g.members = append(g.members[:i:i], g.members[i+1:]...)
						break
					}
				}
			}
			s.mu.Unlock()
			cancel()
			wg.Wait()
		})
	}
}

// pick returns the subscriber of g next in turn, with a delivery to it
// counted in progress, or nil; the caller holds s.mu.
func (g *group) pick() *subscriber {
	if len(g.members) == 0 {
		return nil
	}
	g.next = (g.next + 1) % len(g.members)
	to := g.members[g.next]
	to.wg.Add(1)
	return to
}

// dispatch queues m for its topic's subscribers; the caller holds s.mu. A
// topic nobody subscribes to keeps nothing (Messages still lists it).
func (s *State) dispatch(m kv.Message) {
	g := s.groups[topicKey(m.Pubsub, m.Topic)]
	if g == nil || len(g.members) == 0 {
		return
	}
	g.queue = append(g.queue, m)
	if !g.busy {
		g.busy = true
		go s.drain(g)
	}
}

// drain delivers g's queue until it is empty.
func (s *State) drain(g *group) {
	for {
		s.mu.Lock()
		if len(g.queue) == 0 {
			g.busy = false
			s.mu.Unlock()
			return
		}
		m := g.queue[0]
		g.queue = g.queue[1:]
		to := g.pick()
		s.mu.Unlock()
		s.deliver(g, to, m)
	}
}

// outcome of one delivery.
type outcome int

const (
	delivered outcome = iota
	retry
	drop
)

// deliver hands m to to (counted in progress by pick), redelivering it as
// Redelivery says, to another subscriber if to leaves meanwhile.
func (s *State) deliver(g *group, to *subscriber, m kv.Message) {
	for attempt := 0; to != nil; attempt++ {
		out := post(to, m)
		if out == retry && attempt < s.Redelivery.retries() {
			t := time.NewTimer(s.Redelivery.delay(attempt))
			select {
			case <-t.C:
			case <-to.ctx.Done():
				t.Stop()
			}
		}
		sub := to.sub
		to.wg.Done()
		switch {
		case out == delivered:
			return
		case out == drop || attempt >= s.Redelivery.retries():
			s.deadLetter(sub, m)
			return
		}
		s.mu.Lock()
		if to.gone {
			// The subscriber left: the broker hands the message to
			// another one, or loses it when none is left.
			to = g.pick()
		} else {
			to.wg.Add(1)
		}
		s.mu.Unlock()
	}
}

// deadLetter publishes m to sub's dead-letter topic, if it has one.
func (s *State) deadLetter(sub daprsub.Subscription, m kv.Message) {
	if sub.DeadLetterTopic == "" {
		return
	}
	m.Topic = sub.DeadLetterTopic
	_ = s.Publish(context.Background(), m)
}

// cloudEvent is the structured CloudEvents envelope daprd delivers.
type cloudEvent struct {
	SpecVersion     string          `json:"specversion"`
	ID              string          `json:"id"`
	Type            string          `json:"type"`
	Source          string          `json:"source"`
	Topic           string          `json:"topic"`
	PubsubName      string          `json:"pubsubname"`
	DataContentType string          `json:"datacontenttype,omitempty"`
	Data            json.RawMessage `json:"data,omitempty"`
	DataBase64      []byte          `json:"data_base64,omitempty"`
}

func envelope(m kv.Message) []byte {
	ce := cloudEvent{SpecVersion: "1.0", ID: m.Metadata["cloudevent.id"], Type: m.Metadata["cloudevent.type"],
		Source: "inmem", Topic: m.Topic, PubsubName: m.Pubsub, DataContentType: m.ContentType}
	if ce.ID == "" {
		ce.ID = uuid.NewString()
	}
	if ce.Type == "" {
		ce.Type = "com.dapr.event.sent"
	}
	if strings.Contains(m.ContentType, "json") && json.Valid(m.Body) {
		ce.Data = m.Body
	} else {
		ce.DataBase64 = m.Body
	}
	b, _ := json.Marshal(ce)
	return b
}

// post hands m to the subscriber's handler and reads its answer.
func post(to *subscriber, m kv.Message) (out outcome) {
	defer func() {
		if recover() != nil {
			out = retry // a handler that panics fails the delivery
		}
	}()
	r, err := http.NewRequestWithContext(to.ctx, http.MethodPost, to.sub.Route, bytes.NewReader(envelope(m)))
	if err != nil {
		return drop
	}
	r.Header.Set("Content-Type", "application/cloudevents+json")
	w := &answer{header: http.Header{}, status: http.StatusOK}
	to.sub.Handler.ServeHTTP(w, r)
	switch {
	case w.status == http.StatusNotFound:
		return drop
	case w.status/100 != 2:
		return retry
	}
	var a struct{ Status string }
	if w.body.Len() > 0 && json.Unmarshal(w.body.Bytes(), &a) != nil {
		return retry
	}
	switch strings.ToUpper(a.Status) {
	case "", "SUCCESS":
		return delivered
	case "DROP":
		return drop
	default:
		return retry
	}
}

// answer records a handler's response.
type answer struct {
	header http.Header
	status int
	wrote  bool
	body   bytes.Buffer
}

func (a *answer) Header() http.Header { return a.header }

func (a *answer) WriteHeader(status int) {
	if !a.wrote {
		a.status, a.wrote = status, true
	}
}

func (a *answer) Write(b []byte) (int, error) {
	a.wrote = true
	return a.body.Write(b)
}
