// Package stacktest builds one replica's document path in process, as the
// service wires it: an in-memory store, a hub and an engine whose commits
// reach the hub's sessions through the local fast path. Session, live-query
// and telemetry tests start from it instead of wiring the three by hand.
package stacktest

import (
	"time"

	"github.com/open-autoglm/autoglm/app/clock"
	"github.com/open-autoglm/autoglm/app/engine"
	"github.com/open-autoglm/autoglm/app/hub"
	"github.com/open-autoglm/autoglm/app/inmem"
)

// Node is the replica's name in its clock and hub.
const Node = "n1"

// Options adjust a Stack; the zero value is the default collections and a
// wired fast path.
type Options struct {
	// Engine is completed before use: Store is the stack's memory store,
	// and Clock, when nil, is Node's with a minute of allowed skew.
	Engine engine.Options
	// Hub is completed with Node as its name.
	Hub hub.Options
	// Lossy leaves the engine without the local fast path: committed
	// changes reach the hub only when the test publishes them, as when the
	// broadcast loses them.
	Lossy bool
}

// Stack is one replica's store, hub and engine.
type Stack struct {
	Store *inmem.Store
	Hub   *hub.Hub
	Eng   *engine.Engine
}

// New builds a Stack. With a traced hub (Hub.Tracer set) the fast path is
// Deliver, so each delivery is a child span of its commit; otherwise it is
// Publish.
func New(opt Options) *Stack {
	s := &Stack{Store: inmem.NewStore()}
	opt.Hub.Node = Node
	s.Hub = hub.New(opt.Hub)
	eo := opt.Engine
	eo.Store = s.Store
	if eo.Clock == nil {
		eo.Clock = clock.New(Node, nil, time.Minute)
	}
	switch {
	case opt.Lossy:
	case opt.Hub.Tracer != nil:
		eo.LocalContext = s.Hub.Deliver
	default:
		eo.Local = s.Hub.Publish
	}
	s.Eng = engine.New(eo)
	return s
}
