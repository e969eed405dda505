package service_test

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/google/uuid"

	"github.com/open-autoglm/autoglm/app/collections/schemafile"
	"github.com/open-autoglm/autoglm/app/config"
	"github.com/open-autoglm/autoglm/app/internal/servicetest"
	"github.com/open-autoglm/autoglm/app/protocol"
)

// TestHostileInputs is the catalogue of malformed and hostile inputs: each
// gets its documented error code (HTTP status + code, or WebSocket close
// code), the replica stays healthy, and the stored data is unchanged.
func TestHostileInputs(t *testing.T) {
	r := servicetest.Start(t, servicetest.Options{})
	coll := "h" + strings.ReplaceAll(uuid.NewString()[:8], "-", "")
	docs := []string{coll + "/a", coll + "/b", "forms/h-" + coll}
	for i, d := range docs {
		wantStatus(t, do(t, "PUT", r.URL()+"/v1/docs/"+d, fmt.Sprintf(`{"title":"doc %d","n":%d}`, i, i)), 201, "")
	}
	checksum := func() string {
		h := sha256.New()
		for _, d := range docs {
			h.Write([]byte(do(t, "GET", r.URL()+"/v1/docs/"+d, "").Raw))
		}
		return hex.EncodeToString(h.Sum(nil))
	}
	before := checksum()
	doc := r.URL() + "/v1/docs/" + docs[0]
	n := 0

	t.Run("REST", func(t *testing.T) {
		deep := strings.Repeat(`{"a":`, 5000) + "1" + strings.Repeat("}", 5000)
		longPath := strings.Repeat("a.", 20) + "z"
		n += runREST(t, []restCase{
			{"TruncatedJSON", "PUT", doc, `{"title":`, nil, 400, "bad_request"},
			{"JSONNull", "PUT", doc, `null`, nil, 400, "bad_request"},
			{"JSONArray", "PUT", doc, `[{"title":"x"}]`, nil, 400, "bad_request"},
			{"NestingBomb", "PUT", doc, deep, nil, 400, "bad_request"},
			{"Oversized", "PUT", doc, `{"x":"` + strings.Repeat("A", 3<<20) + `"}`, nil, 413, "too_large"},
			{"InvalidUTF8Name", "GET", r.URL() + "/v1/docs/" + coll + "/%ff%fe", "", nil, 400, "invalid_name"},
			{"DotDotID", "GET", r.URL() + "/v1/docs/" + coll + "/a..b", "", nil, 400, "invalid_name"},
			{"UpperCollection", "GET", r.URL() + "/v1/docs/Users/a", "", nil, 400, "invalid_name"},
			{"LongID", "GET", r.URL() + "/v1/docs/" + coll + "/" + strings.Repeat("x", 200), "", nil, 400, "invalid_name"},
			{"PathTooDeep", "PATCH", doc, `{"ops":[{"op":"set","path":"` + longPath + `","value":1}]}`, nil, 422, "invalid_op"},
			{"EmptyPathSegment", "PATCH", doc, `{"ops":[{"op":"set","path":"a..b","value":1}]}`, nil, 422, "invalid_op"},
			{"ReservedKey", "PATCH", doc, `{"ops":[{"op":"set","path":"_conflicts","value":{}}]}`, nil, 422, "invalid_op"},
			{"SetWithoutValue", "PATCH", doc, `{"ops":[{"op":"set","path":"a"}]}`, nil, 422, "invalid_op"},
			{"IncNotNumber", "PATCH", doc, `{"ops":[{"op":"inc","path":"n","value":"1"}]}`, nil, 422, "invalid_op"},
			{"TooManyOps", "PATCH", doc, `{"ops":[` + strings.TrimSuffix(strings.Repeat(`{"op":"inc","path":"n","value":1},`, 300), ",") + `]}`, nil, 413, "too_large"},
			{"BaseOverflow", "PATCH", doc, `{"base":99999999999999999999,"ops":[{"op":"inc","path":"n","value":1}]}`, nil, 400, "bad_request"},
			{"BaseFuture", "PATCH", doc, `{"base":1000,"ops":[{"op":"inc","path":"n","value":1}]}`, nil, 409, "conflict"},
			{"HugeOpID", "PATCH", doc, `{"ops":[{"op":"inc","path":"n","value":1}]}`, []string{"X-Client-ID", "c", "X-Op-ID", "18446744073709551616"}, 400, "bad_request"},
			{"LongClientID", "PATCH", doc, `{"ops":[{"op":"inc","path":"n","value":1}]}`, []string{"X-Client-ID", strings.Repeat("c", 500)}, 400, "bad_request"},
			{"IfMatchGarbage", "PUT", doc, `{"a":1}`, []string{"If-Match", `"; DROP TABLE`}, 400, "bad_request"},
			{"StaleIfMatch", "DELETE", doc, "", []string{"If-Match", `"99"`}, 412, "precondition_failed"},
			{"FormBody", "PUT", doc, `a=1`, []string{"Content-Type", "application/x-www-form-urlencoded"}, 415, "unsupported_media"},
			{"ClockFromFuture", "PATCH", doc, fmt.Sprintf(`{"hlc":"%d.0.x","ops":[{"op":"inc","path":"n","value":1}]}`, time.Now().Add(24*time.Hour).UnixMilli()), nil, 422, "clock_skew"},
			{"SinceNegative", "GET", doc + "/changes?since=-5", "", nil, 400, "bad_request"},
			{"TraceMethod", "TRACE", doc, "", nil, 405, "method_not_allowed"},
		})
	})

	t.Run("WebSocketJSON", func(t *testing.T) {
		hello := protocol.Message{T: protocol.THello, Client: "hostile"}
		cases := []struct {
			name   string
			run    func(w *rawWS)
			close  int    // expected close code, or 0
			errMsg string // expected error/reject code when the connection stays open
		}{
			{"NotJSON", func(w *rawWS) { w.sendRaw(websocket.MessageText, []byte("hello?")) }, protocol.CloseProtocolError, ""},
			{"NoType", func(w *rawWS) { w.sendRaw(websocket.MessageText, []byte(`{"doc":"a/b"}`)) }, protocol.CloseProtocolError, ""},
			{"OpBeforeHello", func(w *rawWS) { w.send(protocol.Message{T: protocol.TOp, Doc: docs[0], Op: 1}) }, protocol.CloseProtocolError, ""},
			{"BinaryOnJSON", func(w *rawWS) { w.sendRaw(websocket.MessageBinary, []byte{1, 2, 3}) }, protocol.CloseUnsupported, ""},
			{"FutureProtocol", func(w *rawWS) { w.send(protocol.Message{T: protocol.THello, Proto: 99}) }, protocol.CloseUnsupported, ""},
			{"HelloTwice", func(w *rawWS) { w.send(hello); w.expect(protocol.TWelcome); w.send(hello) }, protocol.CloseProtocolError, ""},
			{"Oversized", func(w *rawWS) {
				w.send(hello)
				w.expect(protocol.TWelcome)
				w.sendRaw(websocket.MessageText, []byte(`{"t":"ping","msg":"`+strings.Repeat("x", 3<<19)+`"}`))
			}, protocol.CloseTooLarge, ""},
			{"NestingBomb", func(w *rawWS) {
				w.sendRaw(websocket.MessageText, []byte(`{"t":"hello","data":`+strings.Repeat("[", 10000)+strings.Repeat("]", 10000)+`}`))
			}, protocol.CloseProtocolError, ""},
			{"UnknownType", func(w *rawWS) { w.send(hello); w.expect(protocol.TWelcome); w.send(protocol.Message{T: "rm -rf"}) }, 0, "bad_request"},
			{"SubBadName", func(w *rawWS) {
				w.send(hello)
				w.expect(protocol.TWelcome)
				w.send(protocol.Message{T: protocol.TSub, Doc: "../../etc/passwd"})
			}, 0, "invalid_name"},
			{"SubNegativeSince", func(w *rawWS) {
				w.send(hello)
				w.expect(protocol.TWelcome)
				w.send(protocol.Message{T: protocol.TSub, Doc: docs[0], Since: -1})
			}, 0, "bad_request"},
			{"OpWithoutID", func(w *rawWS) {
				w.send(hello)
				w.expect(protocol.TWelcome)
				w.send(protocol.Message{T: protocol.TOp, Doc: docs[0], Ops: toFieldOps(t, []byte(`[{"op":"inc","path":"n","value":1}]`))})
			}, 0, "bad_request"},
			{"OpInvalid", func(w *rawWS) {
				w.send(hello)
				w.expect(protocol.TWelcome)
				w.send(protocol.Message{T: protocol.TOp, Doc: docs[0], Op: 5, Ops: toFieldOps(t, []byte(`[{"op":"inc","path":"title","value":1}]`))})
			}, 0, "invalid_op"},
			{"PresenceTooLarge", func(w *rawWS) {
				w.send(hello)
				w.expect(protocol.TWelcome)
				w.send(protocol.Message{T: protocol.TSub, Doc: docs[1]})
				w.expect(protocol.TSnap)
				w.expect(protocol.TSynced)
				w.send(protocol.Message{T: protocol.TPresence, Doc: docs[1], Data: map[string]any{"x": strings.Repeat("p", 4000)}})
			}, 0, "too_large"},
			{"PresenceUnwatched", func(w *rawWS) {
				w.send(hello)
				w.expect(protocol.TWelcome)
				w.send(protocol.Message{T: protocol.TPresence, Doc: docs[2], Data: map[string]any{"f": "x"}})
			}, 0, "bad_request"},
		}
		for _, c := range cases {
			n++
			t.Run(c.name, func(t *testing.T) {
				w := dialRaw(t, r.WSURL())
				c.run(w)
				if c.close != 0 {
					w.expectClose(c.close, 5*time.Second)
					return
				}
				m, code := w.next(5 * time.Second)
				if string(m.Code) != c.errMsg || code != 0 {
					t.Fatalf("got %+v (close %d), want code %q", m, code, c.errMsg)
				}
				// The connection is still usable.
				w.send(protocol.Message{T: protocol.TPing, TS: 7})
				if m := w.expect(protocol.TPong); m.TS != 7 {
					t.Fatalf("pong %+v", m)
				}
			})
		}
	})

	t.Run("BinaryFrames", func(t *testing.T) {
		frames := map[string][]byte{
			"BadCRC":        {0x01, 0x02, 'h', 'i', 0x00},
			"Truncated":     {0x01, 0x40, 'h'},
			"UnknownOpcode": {0xEE, 0x00, 0x00},
			"Empty":         {},
		}
		for name, f := range frames {
			n++
			t.Run(name, func(t *testing.T) {
				ctx := t.Context()
				c, _, err := websocket.Dial(ctx, r.WSURL(), &websocket.DialOptions{Subprotocols: []string{protocol.SubprotocolBinary}})
				if err != nil {
					t.Fatal(err)
				}
				defer c.CloseNow()
				if c.Subprotocol() != protocol.SubprotocolBinary {
					t.Fatalf("binary subprotocol not negotiated: %q", c.Subprotocol())
				}
				w := &rawWS{t: t, conn: c}
				w.sendRaw(websocket.MessageBinary, f)
				_, _, err = c.Read(ctx)
				if code := websocket.CloseStatus(err); code != protocol.CloseProtocolError {
					t.Fatalf("close %d (%v), want %d", code, err, protocol.CloseProtocolError)
				}
			})
		}
	})

	t.Run("FallbackTransports", func(t *testing.T) {
		big := url.QueryEscape(`{"t":"hello","client":"` + strings.Repeat("x", 70000) + `"}`)
		cases := []struct {
			name, method, url, body string
			status                  int
			code                    string
		}{
			{"SSEWithoutHello", "GET", r.URL() + "/v1/events", "", 400, "bad_request"},
			{"SSEHelloNotJSON", "GET", r.URL() + "/v1/events?hello=%7Bnope", "", 400, "bad_request"},
			{"SSEHelloNotHello", "GET", r.URL() + "/v1/events?hello=" + url.QueryEscape(`{"t":"sub","doc":"a/b"}`), "", 400, "bad_request"},
			{"SSEHelloHuge", "GET", r.URL() + "/v1/events?hello=" + big, "", 413, "too_large"},
			{"SSEPostUnknownSession", "POST", r.URL() + "/v1/events/" + uuid.NewString(), `[{"t":"ping"}]`, 404, "not_found"},
			{"PollUnknownSession", "GET", r.URL() + "/v1/poll/" + uuid.NewString() + "?after=0", "", 404, "not_found"},
			{"PollOpenGarbage", "POST", r.URL() + "/v1/poll", `{{{`, 400, "bad_request"},
		}
		for _, c := range cases {
			n++
			t.Run(c.name, func(t *testing.T) {
				wantStatus(t, do(t, c.method, c.url, c.body), c.status, c.code)
			})
		}
	})

	t.Run("ConfigFiles", func(t *testing.T) {
		cases := map[string]string{
			"NotYAML":           "collections: [",
			"UnknownKey":        "collections:\n  forms:\n    polcy: lww\n",
			"UnknownPolicy":     "collections:\n  forms:\n    policy: yolo\n",
			"NegativeLimit":     "collections:\n  forms:\n    limits:\n      max_ops: -1\n",
			"UndeclaredState":   "collections:\n  a:\n    state_machines:\n      s:\n        states: [x]\n        initial: x\n        transitions:\n          - {from: x, to: y}\n",
			"BadCollectionName": "collections:\n  Bad/Name:\n    policy: lww\n",
			"InitialNotAState":  "collections:\n  a:\n    state_machines:\n      s:\n        states: [x]\n        initial: z\n",
			"WrongTypeForRoles": "collections:\n  a:\n    read_roles: admin\n",
		}
		for name, body := range cases {
			n++
			t.Run(name, func(t *testing.T) {
				_, err := schemafile.Parse("bad.yaml", []byte(body))
				if err == nil || !strings.Contains(err.Error(), "bad.yaml:") {
					t.Fatalf("got %v, want an error naming bad.yaml and its line", err)
				}
			})
		}
		env := map[string]string{"AUTOGLM_PORT": "http", "AUTOGLM_LOG_WINDOW": "-3", "AUTOGLM_HEARTBEAT": "soon", "AUTOGLM_AUTH": "maybe"}
		for k, v := range env {
			n++
			t.Run("Env"+k, func(t *testing.T) {
				_, err := config.FromEnv(func(name string) (string, bool) {
					if name == k {
						return v, true
					}
					return "", false
				})
				if err == nil || !strings.Contains(err.Error(), k) {
					t.Fatalf("got %v, want an error naming %s", err, k)
				}
			})
		}
	})

	if after := checksum(); after != before {
		t.Fatalf("stored data changed: checksum %s → %s", before, after)
	}
	wantStatus(t, do(t, "GET", r.URL()+"/readyz", ""), 200, "")
	wantStatus(t, do(t, "PATCH", doc, `{"ops":[{"op":"inc","path":"n","value":1}]}`), 200, "")
	t.Logf("%d hostile inputs: each answered with its code; data unchanged; replica healthy", n)
}
