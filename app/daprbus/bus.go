// Package daprbus implements core.Bus over Dapr pub/sub, and the handler
// through which daprd delivers the broadcast back to this replica.
//
// The broadcast component must give every replica its own consumer group
// (consumerID "{uuid}" or "{podName}"), because Dapr otherwise delivers each
// message to one replica of the app id only. See components/.
package daprbus

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sync"

	dapr "github.com/dapr/go-sdk/client"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/open-autoglm/autoglm/app/core"
	"github.com/open-autoglm/autoglm/app/internal/daprconn"
)

// MaxInlineOps is the largest encoded ops list a broadcast carries; larger
// changes travel as pull hints and receivers read them from the op log.
const MaxInlineOps = 32 << 10

// Publisher is the part of the Dapr client the bus uses.
type Publisher interface {
	PublishEvent(ctx context.Context, pubsubName, topicName string, data interface{}, opts ...dapr.PublishEventOption) error
}

// Inspector is the part of the Dapr client that tells which component
// type the broadcast pub/sub is. A Publisher that is also an Inspector
// lets the bus skip broadcasts nobody else can receive (see Bus).
type Inspector interface {
	GetMetadata(ctx context.Context) (*dapr.GetMetadataResponse, error)
}

// LocalOnly is the pub/sub component type whose messages never leave the
// sidecar that publishes them: the only subscriber it can reach is this
// replica, which has already delivered its own commits locally.
const LocalOnly = "pubsub.in-memory"

// Message is the broadcast payload: change summaries from one commit, or
// presence updates.
type Message struct {
	Node     string          `json:"node"`
	Changes  []core.Change   `json:"changes,omitempty"`
	Presence []core.Presence `json:"presence,omitempty"`
}

// Bus publishes change summaries to the broadcast topic.
//
// When the broadcast component is pubsub.in-memory (LocalOnly), a
// broadcast could only come back to the replica that sent it, which
// delivered its commits and presence locally before publishing and drops
// its own echoes (Handler.Node): the bus then publishes nothing, sparing
// the sidecar the publish and the callback to the app per write. It asks
// the sidecar once (when the Publisher is an Inspector); until it knows,
// it publishes.
type Bus struct {
	pub    Publisher
	pubsub string
	topic  string
	node   string

	mu    sync.Mutex
	kind  string // the broadcast component's type, once known
	asked bool   // kind is settled (known, or no Inspector)
}

var _ core.Bus = (*Bus)(nil)

// New returns a Bus publishing to topic on the pubsub component.
func New(pub Publisher, pubsub, topic, node string) *Bus {
	return &Bus{pub: pub, pubsub: pubsub, topic: topic, node: node}
}

// Publish sends one message with the changes of one commit.
func (b *Bus) Publish(ctx context.Context, changes []core.Change) error {
	msg := Message{Node: b.node, Changes: make([]core.Change, len(changes))}
	for i, c := range changes {
		if opsSize(c) > MaxInlineOps {
			c.Ops, c.Pull = nil, true
		}
		msg.Changes[i] = c
	}
	return b.publish(ctx, msg)
}

// PublishPresence broadcasts ephemeral presence; nothing stores it.
func (b *Bus) PublishPresence(ctx context.Context, ps []core.Presence) error {
	return b.publish(ctx, Message{Node: b.node, Presence: ps})
}

// Local reports whether the broadcast component can reach no other
// replica (pubsub.in-memory), asking the sidecar on the first call that
// it answers.
func (b *Bus) Local(ctx context.Context) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.asked {
		return b.kind == LocalOnly
	}
	in, ok := b.pub.(Inspector)
	if !ok {
		b.asked = true
		return false
	}
	md, err := in.GetMetadata(ctx)
	if err != nil {
		return false // publish meanwhile; ask again next time
	}
	if c := daprconn.Component(md, b.pubsub); c != nil {
		b.kind = c.Type
	}
	// A component not (yet) registered is asked about again.
	b.asked = b.kind != ""
	return b.kind == LocalOnly
}

func (b *Bus) publish(ctx context.Context, msg Message) error {
	if b.Local(ctx) {
		return nil
	}
	body, err := json.Marshal(msg)
	if err != nil {
		return err
	}
	opts := []dapr.PublishEventOption{dapr.PublishEventWithContentType("application/json")}
	if trace.SpanContextFromContext(ctx).IsValid() {
		// The CloudEvent carries the span of the commit to every replica,
		// whose receipt becomes its child (daprd would otherwise put its
		// own publish span there, or none when its tracing is off).
		tc := propagation.MapCarrier{}
		propagation.TraceContext{}.Inject(ctx, tc)
		md := map[string]string{"cloudevent.traceparent": tc["traceparent"]}
		if ts := tc["tracestate"]; ts != "" {
			md["cloudevent.tracestate"] = ts
		}
		opts = append(opts, dapr.PublishEventWithMetadata(md))
	}
	if err := b.pub.PublishEvent(ctx, b.pubsub, b.topic, body, opts...); err != nil {
		return fmt.Errorf("publish %s/%s: %w: %v", b.pubsub, b.topic, core.ErrUnavailable, err)
	}
	return nil
}

func opsSize(c core.Change) int {
	n := 0
	for _, o := range c.Ops {
		n += len(o.Path) + len(o.Value) + 24
	}
	return n
}

// Handler serves daprd's deliveries of the broadcast (mount it as the
// broadcast subscription's handler, package daprsub).
type Handler struct {
	// Node is this replica's node id. A broadcast this replica sent comes
	// back to it (every replica subscribes to the topic); its changes and
	// presence were delivered locally before the publish, so the echo is
	// answered at once and not delivered again. Node ids are unique per
	// replica (they also tell the replicas' clock stamps apart).
	Node string
	// Deliver is called with every received broadcast; ctx carries the
	// receipt's span.
	Deliver func(ctx context.Context, changes []core.Change)
	// DeliverPresence is called with presence broadcast by other replicas.
	DeliverPresence func([]core.Presence)
	MaxBytes        int64
	OnError         func(error)
	// Tracer, when set, records the receipt of each change broadcast as a
	// span, a child of the span its CloudEvent names (the commit).
	Tracer trace.Tracer
}

// cloudEvent is the envelope daprd delivers (structured CloudEvents JSON).
type cloudEvent struct {
	ID          string          `json:"id"`
	Type        string          `json:"type"`
	Topic       string          `json:"topic"`
	Data        json.RawMessage `json:"data"`
	DataBase64  string          `json:"data_base64"`
	TraceParent string          `json:"traceparent"`
	TraceState  string          `json:"tracestate"`
	PubsubName  string          `json:"pubsubname"`
}

// ServeHTTP handles one broadcast delivery. A malformed message is dropped
// (answering DROP, so daprd does not redeliver it forever); sessions repair
// anything missed from the op log.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	limit := h.MaxBytes
	if limit <= 0 {
		limit = 8 << 20
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, limit+1))
	if err != nil || int64(len(body)) > limit {
		h.status(w, "DROP", fmt.Errorf("broadcast body unreadable or over %d bytes", limit))
		return
	}
	var ce cloudEvent
	if err := json.Unmarshal(body, &ce); err != nil {
		h.status(w, "DROP", fmt.Errorf("broadcast envelope: %w", err))
		return
	}
	data := ce.Data
	// Some components hand JSON data over as a JSON string.
	var s string
	if len(data) > 0 && data[0] == '"' && json.Unmarshal(data, &s) == nil {
		data = json.RawMessage(s)
	}
	if h.echo(data) {
		h.status(w, "SUCCESS", nil)
		return
	}
	var msg Message
	if err := json.Unmarshal(data, &msg); err != nil {
		h.status(w, "DROP", fmt.Errorf("broadcast payload: %w", err))
		return
	}
	if h.Node != "" && msg.Node == h.Node {
		h.status(w, "SUCCESS", nil)
		return
	}
	valid := msg.Changes[:0]
	for _, c := range msg.Changes {
		if _, err := core.ParseKey(c.Doc); err != nil || c.Version < 1 || c.Prev != c.Version-1 {
			h.status(w, "DROP", fmt.Errorf("broadcast change %q@%d is malformed", c.Doc, c.Version))
			return
		}
		valid = append(valid, c)
	}
	if h.Deliver != nil && len(valid) > 0 {
		ctx := r.Context()
		if h.Tracer != nil {
			var span trace.Span
			ctx, span = h.startReceipt(r, ce, msg)
			defer span.End()
		}
		h.Deliver(ctx, valid)
	}
	if h.DeliverPresence != nil && len(msg.Presence) > 0 {
		ps := msg.Presence[:0]
		for _, p := range msg.Presence {
			if _, err := core.ParseKey(p.Doc); err == nil && p.Client != "" {
				ps = append(ps, p)
			}
		}
		h.DeliverPresence(ps)
	}
	h.status(w, "SUCCESS", nil)
}

// echo reports, without decoding the changes, whether data is a message
// this replica published: Bus encodes the node first.
func (h *Handler) echo(data []byte) bool {
	if h.Node == "" {
		return false
	}
	node, _ := json.Marshal(h.Node)
	rest, ok := bytes.CutPrefix(data, []byte(`{"node":`))
	if !ok {
		return false
	}
	rest, ok = bytes.CutPrefix(rest, node)
	return ok && len(rest) > 0 && (rest[0] == ',' || rest[0] == '}')
}

// startReceipt starts the span of a broadcast's receipt: a child of the
// commit span the CloudEvent names, linked to daprd's delivery span (the
// request's traceparent) when daprd traces too.
func (h *Handler) startReceipt(r *http.Request, ce cloudEvent, msg Message) (context.Context, trace.Span) {
	ctx := propagation.TraceContext{}.Extract(context.Background(),
		propagation.MapCarrier{"traceparent": ce.TraceParent, "tracestate": ce.TraceState})
	var links []trace.Link
	delivery := propagation.TraceContext{}.Extract(context.Background(), propagation.HeaderCarrier(r.Header))
	if sc := trace.SpanContextFromContext(delivery); sc.IsValid() && !sc.Equal(trace.SpanContextFromContext(ctx)) {
		links = append(links, trace.Link{SpanContext: sc})
	}
	return h.Tracer.Start(ctx, "receive "+ce.Topic, trace.WithSpanKind(trace.SpanKindConsumer), trace.WithLinks(links...),
		trace.WithAttributes(
			attribute.String("messaging.system", "dapr"),
			attribute.String("messaging.operation.type", "process"),
			attribute.String("messaging.destination.name", ce.Topic),
			attribute.String("messaging.message.id", ce.ID),
			attribute.String("autoglm.pubsub", ce.PubsubName),
			attribute.String("autoglm.from_node", msg.Node),
			attribute.Int("autoglm.changes", len(msg.Changes))))
}

func (h *Handler) status(w http.ResponseWriter, s string, err error) {
	if err != nil && h.OnError != nil {
		h.OnError(err)
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = fmt.Fprintf(w, `{"status":%q}`, s)
}
