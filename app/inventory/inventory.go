package inventory

import (
	"bytes"
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/open-autoglm/autoglm/app/core"
	"github.com/open-autoglm/autoglm/app/events"
	"github.com/open-autoglm/autoglm/app/kv"
)

// Event types the inventory publishes on its topic.
const (
	TypeStockReserved          = "com.autoglm.inventory.stock-reserved"
	TypeStockReservationFailed = "com.autoglm.inventory.stock-reservation-failed"
	TypeStockReleased          = "com.autoglm.inventory.stock-released"
)

// State is what the inventory keeps and publishes through the kv port:
// stock records and decisions, written together all or nothing, and its
// outcome events. On Dapr it is package daprkv on the store cfg.Store.
type State interface {
	kv.Records
	kv.Transactor
	kv.Publisher
}

// Service is the inventory app.
type Service struct {
	cfg   Config
	log   logrus.FieldLogger
	state State
	http  *http.Client
}

// New returns the service on state. It reads and updates orders through
// the sidecar's HTTP API (cfg.DaprHTTPPort).
func New(cfg Config, state State, log logrus.FieldLogger) *Service {
	return &Service{cfg: cfg, log: log, state: state, http: &http.Client{Timeout: 15 * time.Second}}
}

// Handler serves the subscriptions, the stock API and health.
func (s *Service) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) })
	mux.HandleFunc("GET /dapr/subscribe", s.dapr(s.serveSubscribe))
	mux.HandleFunc("POST /events/orders", s.dapr(s.serveOrderEvent))
	mux.HandleFunc("POST /events/inventory", s.dapr(s.serveInventoryEvent))
	mux.HandleFunc("PUT /v1/stock/{sku}", s.serveSetStock)
	mux.HandleFunc("GET /v1/stock/{sku}", s.serveGetStock)
	return mux
}

func (s *Service) dapr(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if s.cfg.AppAPIToken != "" && subtle.ConstantTimeCompare([]byte(r.Header.Get("dapr-api-token")), []byte(s.cfg.AppAPIToken)) != 1 {
			http.Error(w, "missing or wrong dapr-api-token", http.StatusUnauthorized)
			return
		}
		h(w, r)
	}
}

func (s *Service) serveSubscribe(w http.ResponseWriter, r *http.Request) {
	subs := []map[string]any{
		{"pubsubname": s.cfg.Pubsub, "topic": s.cfg.OrdersTopic, "route": "/events/orders"},
		{"pubsubname": s.cfg.Pubsub, "topic": s.cfg.Topic, "route": "/events/inventory"},
	}
	writeJSON(w, http.StatusOK, subs)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func answer(w http.ResponseWriter, err error, log logrus.FieldLogger) {
	status := "SUCCESS"
	switch {
	case errors.Is(err, errDrop):
		status = "DROP"
		log.WithError(err).Warn("event dropped")
	case err != nil:
		status = "RETRY"
		log.WithError(err).Info("event failed; daprd retries it")
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": status})
}

var errDrop = errors.New("malformed event")

// cloudEvent is the envelope daprd delivers.
type cloudEvent struct {
	ID   string          `json:"id"`
	Type string          `json:"type"`
	Data json.RawMessage `json:"data"`
}

func decodeEvent(r *http.Request, data any) (cloudEvent, error) {
	var ce cloudEvent
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		return ce, err
	}
	if err := json.Unmarshal(body, &ce); err != nil {
		return ce, fmt.Errorf("%w: %v", errDrop, err)
	}
	raw := []byte(ce.Data)
	var str string
	if len(raw) > 0 && raw[0] == '"' && json.Unmarshal(raw, &str) == nil {
		raw = []byte(str)
	}
	if err := json.Unmarshal(raw, data); err != nil {
		return ce, fmt.Errorf("%w: data: %v", errDrop, err)
	}
	return ce, nil
}

// serveOrderEvent handles the sync service's integration events: a created
// order is reserved; an order moved to cancelled releases its stock.
func (s *Service) serveOrderEvent(w http.ResponseWriter, r *http.Request) {
	var d events.Data
	ce, err := decodeEvent(r, &d)
	if err != nil || d.Collection != "orders" {
		answer(w, err, s.log)
		return
	}
	log := s.log.WithFields(logrus.Fields{"order": d.ID, "event": ce.Type, "version": d.Version})
	switch {
	case ce.Type == events.TypeCreated:
		err = s.reserve(r.Context(), d.ID, log)
	case cancels(d):
		err = s.release(r.Context(), d.ID, log)
	}
	answer(w, err, log)
}

// cancels reports whether the changes set the order's status to cancelled.
func cancels(d events.Data) bool {
	for _, c := range d.Changes {
		for _, op := range c.Ops {
			if op.Path == "status" && string(op.Value) == `"cancelled"` {
				return true
			}
		}
	}
	return false
}

// Item is one order line.
type Item struct {
	SKU string `json:"sku"`
	Qty int64  `json:"qty"`
}

// order is what the inventory reads of an order.
type order struct {
	Version int64 `json:"version"`
	Data    struct {
		Items  []Item `json:"items"`
		Status string `json:"status"`
	} `json:"data"`
}

// decision is the inventory's record of one order: written with the stock
// change in one transaction, and only once (first write).
type decision struct {
	Status      string `json:"status"` // reserved, rejected, released
	Reservation string `json:"reservation,omitempty"`
	Reason      string `json:"reason,omitempty"`
	Items       []Item `json:"items,omitempty"`
}

type stock struct {
	Qty int64 `json:"qty"`
}

func stockKey(sku string) string      { return "stock:" + sku }
func decisionKey(order string) string { return "order:" + order }

// getOrder reads an order through Dapr service invocation of the sync
// service.
// pendingOrder reads order id and reports whether it still waits for a
// decision; when it does not, settled is logged with its status.
func (s *Service) pendingOrder(ctx context.Context, id string, log logrus.FieldLogger, settled string) (o order, pending bool, err error) {
	if o, err = s.getOrder(ctx, id); err != nil {
		return o, false, err
	}
	if o.Data.Status != "" && o.Data.Status != "pending" {
		log.WithField("status", o.Data.Status).Info(settled)
		return o, false, nil
	}
	return o, true, nil
}

func (s *Service) getOrder(ctx context.Context, id string) (order, error) {
	var o order
	url := fmt.Sprintf("http://127.0.0.1:%d/v1.0/invoke/%s/method/v1/docs/orders/%s", s.cfg.DaprHTTPPort, s.cfg.OrdersApp, id)
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	s.invokeHeaders(req)
	resp, err := s.http.Do(req)
	if err != nil {
		return o, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return o, fmt.Errorf("read order %s: %d %s", id, resp.StatusCode, bytes.TrimSpace(b))
	}
	return o, json.NewDecoder(resp.Body).Decode(&o)
}

func (s *Service) invokeHeaders(req *http.Request) {
	req.Header.Set("X-Roles", "inventory")
	if s.cfg.DaprAPIToken != "" {
		req.Header.Set("dapr-api-token", s.cfg.DaprAPIToken)
	}
}

// reserve decides a new order: all of its items are taken from stock, or
// none is.
func (s *Service) reserve(ctx context.Context, id string, log logrus.FieldLogger) error {
	if dec, ok, err := s.decision(ctx, id); err != nil {
		return err
	} else if ok {
		// Decided before (a redelivery): publish the outcome again.
		return s.publishOutcome(ctx, id, dec)
	}
	o, pending, err := s.pendingOrder(ctx, id, log, "order no longer pending; nothing to reserve")
	if err != nil || !pending {
		return err
	}
	need := map[string]int64{}
	for _, it := range o.Data.Items {
		if it.SKU == "" || it.Qty <= 0 {
			return s.decide(ctx, id, nil, decision{Status: "rejected", Reason: fmt.Sprintf("invalid item %+v", it)}, log)
		}
		need[it.SKU] += it.Qty
	}
	skus := make([]string, 0, len(need))
	for sku := range need {
		skus = append(skus, sku)
	}
	slices.Sort(skus)
	for attempt := 0; attempt < 50; attempt++ {
		keys := make([]string, len(skus))
		for i, sku := range skus {
			keys[i] = stockKey(sku)
		}
		items, err := s.state.GetMany(ctx, keys)
		if err != nil {
			return err
		}
		var writes []kv.Write
		var short []string
		for i, sku := range skus {
			var st stock
			if items[i].Exists() {
				if err := json.Unmarshal(items[i].Value, &st); err != nil {
					return err
				}
			}
			if st.Qty < need[sku] {
				short = append(short, fmt.Sprintf("%s: wants %d, %d in stock", sku, need[sku], st.Qty))
				continue
			}
			b, _ := json.Marshal(stock{Qty: st.Qty - need[sku]})
			writes = append(writes, kv.Write{Key: stockKey(sku), Value: b, ETag: items[i].ETag})
		}
		dec := decision{Status: "reserved", Reservation: "rsv-" + id, Items: o.Data.Items}
		if len(short) > 0 {
			dec = decision{Status: "rejected", Reason: "insufficient stock: " + strings.Join(short, "; ")}
			writes = nil
		}
		err = s.decide(ctx, id, writes, dec, log)
		if err == nil || !errors.Is(err, errStockChanged) {
			return err
		}
		// Another order took stock between our read and our write: read
		// again and decide again.
		time.Sleep(time.Duration(attempt+1) * time.Millisecond)
	}
	return fmt.Errorf("order %s: stock kept changing", id)
}

var errStockChanged = errors.New("stock changed concurrently")

// decide writes the stock changes and the decision in one transaction (the
// decision a create, so an order is decided once), then publishes the
// outcome.
func (s *Service) decide(ctx context.Context, id string, writes []kv.Write, dec decision, log logrus.FieldLogger) error {
	b, _ := json.Marshal(dec)
	writes = append(writes, kv.Write{Key: decisionKey(id), Value: b})
	if err := s.state.Transact(ctx, writes); err != nil {
		if !errors.Is(err, core.ErrVersionConflict) {
			return err
		}
		// A stock record or the decision changed. If the decision exists,
		// the order was decided elsewhere (a redelivery racing us).
		if prev, ok, derr := s.decision(ctx, id); derr == nil && ok {
			return s.publishOutcome(ctx, id, prev)
		}
		return errStockChanged
	}
	log.WithFields(logrus.Fields{"decision": dec.Status, "reason": dec.Reason}).Info("order decided")
	return s.publishOutcome(ctx, id, dec)
}

func (s *Service) decision(ctx context.Context, id string) (decision, bool, error) {
	var dec decision
	item, err := s.state.Get(ctx, decisionKey(id))
	if err != nil || !item.Exists() {
		return dec, false, err
	}
	return dec, true, json.Unmarshal(item.Value, &dec)
}

// outcome is the data of the inventory's events.
type outcome struct {
	Order       string `json:"order"`
	Reservation string `json:"reservation,omitempty"`
	Reason      string `json:"reason,omitempty"`
	Items       []Item `json:"items,omitempty"`
}

func (s *Service) publishOutcome(ctx context.Context, id string, dec decision) error {
	typ := TypeStockReserved
	switch dec.Status {
	case "rejected":
		typ = TypeStockReservationFailed
	case "released":
		typ = TypeStockReleased
	}
	data := outcome{Order: id, Reservation: dec.Reservation, Reason: dec.Reason, Items: dec.Items}
	b, _ := json.Marshal(data)
	return s.state.Publish(ctx, kv.Message{Pubsub: s.cfg.Pubsub, Topic: s.cfg.Topic, Body: b,
		ContentType: "application/json",
		Metadata: map[string]string{
			"cloudevent.type": typ,
			"cloudevent.id":   typ + ":" + id,
		}})
}

// serveInventoryEvent applies the inventory's own outcomes to the order,
// through the sync service's API.
func (s *Service) serveInventoryEvent(w http.ResponseWriter, r *http.Request) {
	var out outcome
	ce, err := decodeEvent(r, &out)
	if err != nil || out.Order == "" {
		answer(w, err, s.log)
		return
	}
	log := s.log.WithFields(logrus.Fields{"order": out.Order, "event": ce.Type})
	var ops []map[string]any
	switch ce.Type {
	case TypeStockReserved:
		ops = []map[string]any{{"op": "set", "path": "status", "value": "reserved"},
			{"op": "set", "path": "reservation", "value": out.Reservation}}
	case TypeStockReservationFailed:
		ops = []map[string]any{{"op": "set", "path": "status", "value": "rejected"},
			{"op": "set", "path": "reason", "value": out.Reason}}
	default:
		answer(w, nil, log)
		return
	}
	answer(w, s.updateOrder(r.Context(), out.Order, ops, log), log)
}

// updateOrder sets the order's status from pending, retrying when the
// order changed meanwhile (orders are strict: a write names the version it
// is based on). The (client, op) pair makes a retried update apply once.
func (s *Service) updateOrder(ctx context.Context, id string, ops []map[string]any, log logrus.FieldLogger) error {
	for attempt := 0; attempt < 10; attempt++ {
		o, pending, err := s.pendingOrder(ctx, id, log, "order already settled")
		if err != nil || !pending {
			return err
		}
		body, _ := json.Marshal(map[string]any{"base": o.Version, "ops": ops})
		url := fmt.Sprintf("http://127.0.0.1:%d/v1.0/invoke/%s/method/v1/docs/orders/%s", s.cfg.DaprHTTPPort, s.cfg.OrdersApp, id)
		req, _ := http.NewRequestWithContext(ctx, http.MethodPatch, url, bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("X-Client-ID", "inventory-"+id)
		req.Header.Set("X-Op-ID", "1")
		s.invokeHeaders(req)
		resp, err := s.http.Do(req)
		if err != nil {
			return err
		}
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		resp.Body.Close()
		switch {
		case resp.StatusCode/100 == 2:
			return nil
		case resp.StatusCode == http.StatusConflict:
			continue // the order moved on; read it again
		case resp.StatusCode/100 == 4:
			// A rule refuses it (e.g. a clerk cancelled the order first):
			// retrying cannot help.
			log.WithField("answer", string(bytes.TrimSpace(msg))).Warn("order update refused")
			return nil
		default:
			return fmt.Errorf("update order %s: %d %s", id, resp.StatusCode, bytes.TrimSpace(msg))
		}
	}
	return fmt.Errorf("update order %s: it kept changing", id)
}

// release puts a cancelled order's reserved stock back, once.
func (s *Service) release(ctx context.Context, id string, log logrus.FieldLogger) error {
	for attempt := 0; attempt < 50; attempt++ {
		item, err := s.state.Get(ctx, decisionKey(id))
		if err != nil {
			return err
		}
		var dec decision
		if !item.Exists() {
			return nil
		}
		if err := json.Unmarshal(item.Value, &dec); err != nil {
			return err
		}
		if dec.Status != "reserved" {
			return nil
		}
		var writes []kv.Write
		need := map[string]int64{}
		for _, it := range dec.Items {
			need[it.SKU] += it.Qty
		}
		for sku, n := range need {
			st, err := s.state.Get(ctx, stockKey(sku))
			if err != nil {
				return err
			}
			var cur stock
			if st.Exists() {
				_ = json.Unmarshal(st.Value, &cur)
			}
			b, _ := json.Marshal(stock{Qty: cur.Qty + n})
			writes = append(writes, kv.Write{Key: stockKey(sku), Value: b, ETag: st.ETag})
		}
		dec.Status = "released"
		b, _ := json.Marshal(dec)
		writes = append(writes, kv.Write{Key: decisionKey(id), Value: b, ETag: item.ETag})
		err = s.state.Transact(ctx, writes)
		if err == nil {
			log.Info("stock released")
			return s.publishOutcome(ctx, id, dec)
		}
		if !errors.Is(err, core.ErrVersionConflict) {
			return err
		}
		time.Sleep(time.Duration(attempt+1) * time.Millisecond)
	}
	return fmt.Errorf("release %s: stock kept changing", id)
}

// serveSetStock sets a SKU's stock: PUT /v1/stock/{sku} {"qty": n}.
func (s *Service) serveSetStock(w http.ResponseWriter, r *http.Request) {
	var in stock
	if err := json.NewDecoder(io.LimitReader(r.Body, 4096)).Decode(&in); err != nil || in.Qty < 0 {
		http.Error(w, `want {"qty": n >= 0}`, http.StatusBadRequest)
		return
	}
	sku := r.PathValue("sku")
	if _, err := core.NewKey("stock", sku); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	b, _ := json.Marshal(in)
	if err := s.state.Set(r.Context(), stockKey(sku), b, 0); err != nil {
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"sku": sku, "qty": in.Qty})
}

// serveGetStock answers GET /v1/stock/{sku}.
func (s *Service) serveGetStock(w http.ResponseWriter, r *http.Request) {
	sku := r.PathValue("sku")
	item, err := s.state.Get(r.Context(), stockKey(sku))
	if err != nil {
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	var st stock
	if item.Exists() {
		_ = json.Unmarshal(item.Value, &st)
	}
	writeJSON(w, http.StatusOK, map[string]any{"sku": sku, "qty": st.Qty})
}
