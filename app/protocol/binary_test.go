package protocol

import (
	"encoding/hex"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/open-autoglm/autoglm/app/merge"
)

// Tags from the field table, to build payloads by hand.
var (
	tagType, tagDoc, tagV, tagHLC = tagOf("t", wireType), tagOf("doc", wireStr), tagOf("v", wireZigzag), tagOf("hlc", wireHLC)
	tagOps, tagFlags, tagData     = tagOf("ops", wireOps), tagOf("del", wireFlag), tagOf("data", wireObject)
	tagTS, tagRoles, tagHLCHere   = tagOf("ts", wireZigzag), tagOf("roles", wireStrs), tagOf("hlc", wireHLCHere)
)

func tagOf(name string, w wire) byte {
	for _, f := range fields {
		if f.name == name && f.wire == w {
			return f.tag
		}
	}
	panic("no field " + name)
}

// validMessages are the messages the vectors cover, as JSON text.
func validMessages() []vector {
	long := strings.Repeat("lorem ipsum ", 50)
	// A snapshot whose payload is exactly one full frame, and one byte more.
	fill := func(payload int) string {
		base := `{"t":"snap","doc":"forms/f1","v":3,"data":{"x":""}}`
		m, _ := Decode([]byte(base))
		p, _ := EncodePayload(m)
		pad := strings.Repeat("z", payload-len(p))
		return fmt.Sprintf(`{"t":"snap","doc":"forms/f1","v":3,"data":{"x":%q}}`, pad)
	}
	return []vector{
		{Name: "hello", JSON: `{"t":"hello","client":"c-1","token":"tok","proto":1}`},
		{Name: "hello_roles", JSON: `{"t":"hello","client":"c-1","roles":["approver","editor"],"proto":1}`},
		{Name: "hello_anonymous", JSON: `{"t":"hello"}`},
		{Name: "welcome", JSON: `{"t":"welcome","client":"c-1","session":"2f1c0d3e-8a7b-4c1d-9e2f-3a4b5c6d7e8f","node":"replica-0","hb":15000,"proto":1}`},
		{Name: "sub", JSON: `{"t":"sub","doc":"forms/f1","since":42}`},
		{Name: "sub_from_zero", JSON: `{"t":"sub","doc":"forms/f1"}`},
		{Name: "sub_full", JSON: `{"t":"sub","doc":"forms/f1","since":3,"full":true}`},
		{Name: "unsub", JSON: `{"t":"unsub","doc":"forms/f1"}`},
		{Name: "op_set", JSON: `{"t":"op","doc":"forms/f1","op":7,"base":41,"hlc":"1764096000000.0.c-1","ops":[{"op":"set","path":"title","value":"Hello"}]}`},
		{Name: "op_every_kind", JSON: `{"t":"op","doc":"profiles/u1","op":300,"base":2,"ops":[{"op":"set","path":"address.city","value":{"name":"Oslo","zip":"0150"}},{"op":"unset","path":"nickname"},{"op":"inc","path":"visits","value":-2.5},{"op":"add","path":"tags","value":"vip"},{"op":"remove","path":"tags","value":7},{"op":"resolve","path":"title"},{"op":"resolve","path":"body","value":null}]}`},
		{Name: "op_text_ins", JSON: `{"t":"op","doc":"forms/f1","op":21,"base":44,"hlc":"1764096000007.0.c-1","ops":[{"op":"ins","path":"notes","value":["c-1",12,11,"x"]}]}`},
		{Name: "op_text_every_form", JSON: `{"t":"op","doc":"forms/f1","op":22,"base":44,"ops":[{"op":"ins","path":"notes","value":["c-1~tab2",13,"c-4f9a2b@7","hé <b>"]},{"op":"ins","path":"title","value":["c-1",1,"",""]},{"op":"ins","path":"notes","value":[3,"abc"]},{"op":"del","path":"notes","value":["c-1",12,1,"c-4f9a2b",5,2,9,1]},{"op":"del","path":"title","value":[0,4]}]}`},
		{Name: "op_text_by_name", JSON: `{"t":"op","doc":"forms/f1","op":23,"ops":[{"op":"ins","path":"notes","value":["c-1",14,"c-4f9a2b@007","b"]},{"op":"del","path":"notes","value":{"bad":1}}]}`},
		{Name: "delta_text", JSON: `{"t":"delta","doc":"forms/f1","v":46,"pv":45,"op":22,"hlc":"1764096000008.0.c-1","ops":[{"op":"ins","path":"notes","value":["c-1",12,"c-4f9a2b@7","x"]},{"op":"del","path":"notes","value":["c-4f9a2b",8,3]}],"by":"c-1"}`},
		{Name: "op_delete", JSON: `{"t":"op","doc":"forms/f1","op":8,"base":9,"del":true}`},
		{Name: "op_traced", JSON: `{"t":"op","doc":"forms/f1","op":10,"ops":[{"op":"set","path":"title","value":"Hi"}],"trace":"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}`},
		{Name: "op_future_kind", JSON: `{"t":"op","doc":"forms/f1","op":9,"ops":[{"op":"mul","path":"n","value":2}]}`},
		{Name: "delta_set", JSON: `{"t":"delta","doc":"forms/f1","v":42,"pv":41,"op":17,"hlc":"1764096000000.3.c-4f9a2b","ops":[{"op":"set","path":"title","value":"Hello"}],"by":"c-4f9a2b"}`},
		{Name: "delta_created", JSON: `{"t":"delta","doc":"forms/f2","v":1,"op":1,"hlc":"1764096000001.0.c-2","ops":[{"op":"set","path":"a","value":1}],"by":"c-2","new":true}`},
		{Name: "delta_deleted", JSON: `{"t":"delta","doc":"forms/f2","v":5,"pv":4,"op":3,"hlc":"1764096000002.0.replica-0","by":"c-2","del":true}`},
		{Name: "delta_explicit_pv", JSON: `{"t":"delta","doc":"forms/f1","v":7,"pv":3,"ops":[{"op":"inc","path":"n","value":1}]}`},
		{Name: "ack", JSON: `{"t":"ack","doc":"forms/f1","v":43,"pv":42,"op":18,"hlc":"1764096000005.0.c-1"}`},
		{Name: "ack_dup", JSON: `{"t":"ack","doc":"forms/f1","v":5,"pv":0,"op":4,"dup":true}`},
		{Name: "ack_effective_ops", JSON: `{"t":"ack","doc":"forms/f1","v":44,"pv":43,"op":19,"hlc":"1764096000006.0.c-1","ops":[{"op":"set","path":"tags","value":["a","b"]}]}`},
		{Name: "ack_effective_ops_empty", JSON: `{"t":"ack","doc":"forms/f1","v":45,"pv":44,"op":20,"ops":[]}`},
		{Name: "snap", JSON: `{"t":"snap","doc":"profiles/u1","v":12,"data":{"address":{"city":"Oslo"},"age":41,"name":"Åse ✓ 日本","tags":["a","b"],"vip":true}}`},
		{Name: "snap_deleted", JSON: `{"t":"snap","doc":"profiles/u1","v":13,"del":true}`},
		{Name: "snap_empty_data", JSON: `{"t":"snap","doc":"profiles/u1","v":2,"data":{}}`},
		{Name: "synced", JSON: `{"t":"synced","doc":"forms/f1","v":42}`},
		{Name: "synced_new_document", JSON: `{"t":"synced","doc":"forms/f9"}`},
		{Name: "reject_conflict", JSON: `{"t":"reject","doc":"orders/o1","op":5,"code":"conflict","msg":"base version 3 is not current (5)","details":{"base":3,"current":5,"theirs":{"qty":2},"yours":[{"op":"set","path":"qty","value":3}]}}`},
		{Name: "reject_forbidden", JSON: `{"t":"reject","doc":"approvals/a1","op":6,"code":"forbidden","msg":"only approver may set status to approved"}`},
		{Name: "error", JSON: `{"t":"error","doc":"Bad$Doc","code":"invalid_name","msg":"bad collection name"}`},
		{Name: "ping", JSON: `{"t":"ping","ts":1764096000000}`},
		{Name: "pong_negative_ts", JSON: `{"t":"pong","ts":-1}`},
		{Name: "presence", JSON: `{"t":"presence","doc":"forms/f1","client":"c-2","data":{"color":"#e91e63","field":"title","name":"Ann"}}`},
		{Name: "presence_left", JSON: `{"t":"presence","doc":"forms/f1","client":"c-2","del":true}`},
		{Name: "named_type", JSON: `{"t":"cursor","doc":"forms/f1","ts":5}`},
		{Name: "two_frames_at_255", JSON: fill(255)},
		{Name: "continuation_at_256", JSON: fill(256)},
		{Name: "continuation_long", JSON: `{"t":"snap","doc":"forms/long","v":9,"data":{"body":"` + long + `"}}`},
	}
}

// invalidVectors builds inputs a decoder must refuse, from valid frames.
func invalidVectors(t testing.TB) []vector {
	frames := func(js string) []byte { return mustEncodeFrames(t, mustDecodeJSON(t, js)) }
	// frame builds one frame with a correct CRC.
	frame := func(op byte, payload ...byte) []byte {
		b := append([]byte{op, byte(len(payload))}, payload...)
		return append(b, CRC8(b))
	}
	h := hex.EncodeToString
	ping := frames(`{"t":"ping","ts":1}`)
	badCRC := append([]byte(nil), ping...)
	badCRC[len(badCRC)-1] ^= 0xff
	long := frames(`{"t":"snap","doc":"forms/long","v":9,"data":{"body":"` + strings.Repeat("x", 600) + `"}}`)
	cat := func(bs ...[]byte) []byte {
		var out []byte
		for _, b := range bs {
			out = append(out, b...)
		}
		return out
	}
	flipped := append([]byte(nil), long...)
	flipped[100] ^= 0x01
	return []vector{
		{Name: "empty", Hex: "", Error: ErrCodeTruncated},
		{Name: "bad_crc", Hex: h(badCRC), Error: ErrCodeBadCRC},
		{Name: "bad_crc_in_continuation", Hex: h(flipped), Error: ErrCodeBadCRC},
		{Name: "header_only", Hex: "0c", Error: ErrCodeTruncated},
		{Name: "payload_cut", Hex: h(ping[:len(ping)-2]), Error: ErrCodeTruncated},
		{Name: "crc_missing", Hex: h(ping[:len(ping)-1]), Error: ErrCodeTruncated},
		{Name: "last_frame_missing", Hex: h(long[:258]), Error: ErrCodeTruncated},
		{Name: "unknown_opcode", Hex: h(frame(0x20)), Error: ErrCodeOpcode},
		{Name: "continuation_first", Hex: h(frame(OpContinuation, tagTS, 2)), Error: ErrCodeOpcode},
		{Name: "new_message_inside_continuation", Hex: h(cat(long[:258], ping)), Error: ErrCodeOpcode},
		{Name: "too_large", Hex: h(long), Max: 300, Error: ErrCodeTooLarge},
		{Name: "unknown_field", Hex: h(frame(0x0c, 26, 0)), Error: ErrCodeBadPayload},
		{Name: "hlc_and_hlc_here", Hex: h(frame(0x07, tagHLC, 1, 0, 0, tagHLCHere, 1, 0)), Error: ErrCodeBadPayload},
		{Name: "string_set_needs_escaping", Hex: h(frame(0x07, tagOps, 1, kindSetString, 1, 'a', 3, 'x', '"', 'y')), Error: ErrCodeBadPayload},
		{Name: "string_set_not_utf8", Hex: h(frame(0x07, tagOps, 1, kindSetString, 1, 'a', 1, 0xff)), Error: ErrCodeBadPayload},
		{Name: "ext_not_object", Hex: h(frame(0x0c, tagExt, 3, '[', '1', ']')), Error: ErrCodeBadPayload},
		{Name: "fields_out_of_order", Hex: h(frame(0x07, tagV, 2, tagDoc, 1, 'a')), Error: ErrCodeBadPayload},
		{Name: "field_twice", Hex: h(frame(0x0c, tagTS, 2, tagTS, 2)), Error: ErrCodeBadPayload},
		{Name: "varint_overflow", Hex: h(frame(0x0c, tagTS, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01)), Error: ErrCodeBadPayload},
		{Name: "varint_cut", Hex: h(frame(0x0c, tagTS, 0x80)), Error: ErrCodeBadPayload},
		{Name: "string_past_end", Hex: h(frame(0x03, tagDoc, 9, 'a')), Error: ErrCodeBadPayload},
		{Name: "string_not_utf8", Hex: h(frame(0x03, tagDoc, 2, 0xc3, 0x28)), Error: ErrCodeBadPayload},
		{Name: "value_not_json", Hex: h(frame(0x05, tagOps, 1, 1, 1, 'a', 2, '{', '}'+1)), Error: ErrCodeBadPayload},
		{Name: "text_op_bad_form", Hex: h(frame(0x05, tagOps, 1, 7, 1, 'a', 2, 9, 0)), Error: ErrCodeBadPayload},
		{Name: "text_op_trailing_bytes", Hex: h(frame(0x05, tagOps, 1, 8, 1, 'a', 4, 1, 0, 1, 0)), Error: ErrCodeBadPayload},
		{Name: "text_op_clock_too_big", Hex: h(frame(0x05, tagOps, 1, 7, 1, 'a', 12, 1, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01, 1, 'x')), Error: ErrCodeBadPayload},
		{Name: "unknown_op_kind", Hex: h(frame(0x05, tagOps, 1, 10, 1, 'a', 0)), Error: ErrCodeBadPayload},
		{Name: "op_count_too_big", Hex: h(frame(0x05, tagOps, 50, 1, 1, 'a', 0)), Error: ErrCodeBadPayload},
		{Name: "data_not_object", Hex: h(frame(0x06, tagData, 3, '[', '1', ']')), Error: ErrCodeBadPayload},
		{Name: "unknown_flag", Hex: h(frame(0x07, tagFlags, 0x10)), Error: ErrCodeBadPayload},
		{Name: "roles_count_too_big", Hex: h(frame(0x01, tagRoles, 9, 1, 'a')), Error: ErrCodeBadPayload},
		{Name: "named_without_type", Hex: h(frame(OpNamed, tagTS, 2)), Error: ErrCodeBadPayload},
		{Name: "type_field_on_typed_opcode", Hex: h(frame(0x0c, tagType, 1, 'x')), Error: ErrCodeBadPayload},
	}
}

func mustDecodeJSON(t testing.TB, js string) Message {
	t.Helper()
	m, err := Decode([]byte(js))
	if err != nil {
		t.Fatalf("%s: %v", js, err)
	}
	return m
}

// compactMessages are deltas and acks in the compact forms of proto 2, as
// the server writes them in JSON.
func compactMessages() []vector {
	return []vector{
		{Name: "delta_set_handle_author_defined", JSON: `{"t":"delta","v":42,"by":"c-4f9a2b","h":1,"a":7,"hlc":"1764096000000.3","set":{"title":"Hello"}}`},
		{Name: "delta_set_handle_author_known", JSON: `{"t":"delta","v":43,"h":1,"a":7,"hlc":"1764096000001.0.","set":{"f42":"0000000000000000000000000001764096000001"}}`},
		{Name: "delta_set_needs_escaping", JSON: `{"t":"delta","v":44,"h":1,"a":7,"hlc":"1764096000002.0","set":{"title":"say \"hi\"\n"}}`},
		{Name: "delta_set_number", JSON: `{"t":"delta","v":45,"h":2,"a":8,"hlc":"1764096000003.0.c-other","set":{"n":3}}`},
		{Name: "delta_several_ops", JSON: `{"t":"delta","v":46,"ops":[{"op":"set","path":"a","value":"x"},{"op":"unset","path":"b"}],"h":1,"a":7,"pv":44,"hlc":"1764096000004.1."}`},
		{Name: "delta_query_keeps_doc", JSON: `{"t":"delta","doc":"requests/r1","v":3,"a":7,"qid":"open","hlc":"1764096000005.0","set":{"status":"done"}}`},
		{Name: "ack_handle_own_stamp", JSON: `{"t":"ack","v":47,"op":18,"h":1,"hlc":"1764096000006.0"}`},
		{Name: "ack_server_stamp", JSON: `{"t":"ack","v":48,"op":19,"h":1,"hlc":"1764096000007.2."}`},
	}
}

func mustDecodeCompact(t testing.TB, js string) Message {
	t.Helper()
	m := mustDecodeJSON(t, js)
	m.Compact = true
	return m
}

func TestCRC8(t *testing.T) {
	// Catalogue check value of CRC-8/SMBUS.
	if got := CRC8([]byte("123456789")); got != 0xf4 {
		t.Fatalf("crc %#x, want 0xf4", got)
	}
	if CRC8(nil) != 0 {
		t.Fatal("crc of nothing is the init value 0")
	}
}

func TestFrameLayout(t *testing.T) {
	t.Run("SplitsAt255", func(t *testing.T) {
		m := mustDecodeJSON(t, `{"t":"snap","doc":"forms/f1","v":1,"data":{"s":"`+strings.Repeat("a", 700)+`"}}`)
		b := mustEncodeFrames(t, m)
		p, _ := EncodePayload(m)
		var ops []byte
		for rest := b; len(rest) > 0; rest = rest[3+int(rest[1]):] {
			ops = append(ops, rest[0])
			if n := int(rest[1]); n != MaxFramePayload && len(rest) != 3+n {
				t.Fatalf("a frame before the last carries %d bytes", n)
			}
		}
		want := []byte{0x06 | FlagMore, OpContinuation | FlagMore, OpContinuation}
		if d := cmp.Diff(want, ops); d != "" || len(p) <= 2*MaxFramePayload {
			t.Fatalf("opcodes (-want +got):\n%s (payload %d bytes)", d, len(p))
		}
	})
	t.Run("SeveralMessagesInOneBuffer", func(t *testing.T) {
		a, _ := EncodeFrames(Message{T: TPing, TS: 1})
		b, _ := EncodeFrames(Message{T: TSub, Doc: "forms/f1", Since: 3})
		ms, err := DecodeFrames(append(a, b...), 0)
		if err != nil || len(ms) != 2 || ms[1].Since != 3 {
			t.Fatalf("%v %v", ms, err)
		}
	})
	t.Run("ExtCarriesFieldsWithoutTags", func(t *testing.T) {
		// A newer peer may send fields this build has no tag for; they ride
		// in the ext object and unknown ones are ignored like unknown JSON
		// fields.
		ext := []byte(`{"future":[1,2],"roles":["approver"]}`)
		p := append([]byte{tagDoc, 1, 'x', tagExt, byte(len(ext))}, ext...)
		f := append([]byte{0x0e, byte(len(p))}, p...)
		f = append(f, CRC8(f))
		ms, err := DecodeFrames(f, 0)
		if err != nil || ms[0].T != TPresence || ms[0].Doc != "x" || ms[0].Roles != nil {
			t.Fatalf("%+v %v (tagged fields win over ext)", ms, err)
		}
	})
	t.Run("NotEncodable", func(t *testing.T) {
		for _, m := range []Message{{}, {T: TOp, Doc: "a/b", Ops: []merge.FieldOp{{Path: "x"}}}} {
			_, err := EncodeFrames(m)
			var fe *FrameError
			if !errors.As(err, &fe) || fe.Code != ErrCodeNotEncodable {
				t.Fatalf("%+v: %v", m, err)
			}
		}
	})
}

// TestSize pins the size goal: a single-field set delta of a short string
// fits in 120 bytes of frames, against at most 300 as JSON.
func TestSize(t *testing.T) {
	for _, v := range validMessages() {
		if v.Name != "delta_set" {
			continue
		}
		m := mustDecodeJSON(t, v.JSON)
		js, _ := Encode(m)
		bin, _ := EncodeFrames(m)
		t.Logf("single-field set delta: JSON %d bytes, binary %d bytes", len(js), len(bin))
		if len(bin) > 120 || len(js) > 300 {
			t.Fatalf("JSON %d bytes (limit 300), binary %d bytes (limit 120)", len(js), len(bin))
		}
		return
	}
	t.Fatal("no delta_set vector")
}

func TestRoundTripServerMessages(t *testing.T) {
	// Messages as the session builds them (not through JSON): details of a
	// Go type, a nil-vs-empty ops list, the zero HLC.
	msgs := []Message{
		ErrorMessage(TReject, fmt.Errorf("plain failure")),
		{T: TAck, Doc: "forms/f1", Op: 3, V: 9, PV: 8, Ops: []merge.FieldOp{}},
		{T: TWelcome, Session: "s", Client: "c", Node: "n", HB: 2000, Proto: Version},
	}
	for _, m := range msgs {
		got := mustDecodeOne(t, mustEncodeFrames(t, m))
		wantJSON, gotJSON := mustEncodeJSON(t, m), mustEncodeJSON(t, got)
		if wantJSON != gotJSON || (m.Ops != nil) != (got.Ops != nil) {
			t.Fatalf("round trip:\n got %s\nwant %s", gotJSON, wantJSON)
		}
	}
}

// FuzzDecodeFrames: the decoder never panics, refuses bad input with a
// FrameError, and whatever it accepts encodes and decodes back to the same
// messages.
func FuzzDecodeFrames(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		ms, err := DecodeFrames(data, 4096)
		if err != nil {
			var fe *FrameError
			if !errors.As(err, &fe) {
				t.Fatalf("error of type %T: %v", err, err)
			}
			return
		}
		for _, m := range ms {
			if again := mustDecodeOne(t, mustEncodeFrames(t, m)); !reflect.DeepEqual(again, m) {
				t.Fatalf("round trip changed the message:\n got %+v\nwant %+v", again, m)
			}
		}
	})
}
