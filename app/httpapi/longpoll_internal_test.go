package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/open-autoglm/autoglm/app/internal/testutil"
	"github.com/open-autoglm/autoglm/app/protocol"
	"github.com/open-autoglm/autoglm/app/session"
)

func mustPoll(t *testing.T, pb *pollBuffer, after uint64, wait time.Duration) pollResponse {
	t.Helper()
	res, err := pb.poll(context.Background(), after, wait)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// waitPolling waits until n polls wait on pb.
func waitPolling(t *testing.T, pb *pollBuffer, n int) {
	t.Helper()
	testutil.Eventually(t, 5*time.Second, fmt.Sprintf("%d polls waiting", n), func() bool {
		pb.mu.Lock()
		defer pb.mu.Unlock()
		return pb.polling == n
	})
}

func pings(t *testing.T, res pollResponse) []int64 {
	t.Helper()
	var out []int64
	for _, raw := range res.Messages {
		var m protocol.Message
		if err := json.Unmarshal(raw, &m); err != nil {
			t.Fatal(err)
		}
		out = append(out, m.TS)
	}
	return out
}

func TestPollBuffer(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	t.Run("RepeatedPollAfterLostResponse", func(t *testing.T) {
		pb := newPollBuffer(time.Second)
		for i := int64(1); i <= 3; i++ {
			if err := pb.Send(ctx, protocol.Message{T: protocol.TPing, TS: i}); err != nil {
				t.Fatal(err)
			}
		}
		first := mustPoll(t, pb, 0, time.Second)
		again := mustPoll(t, pb, 0, time.Second)
		if first.Seq != 3 || again.Seq != 3 || len(pings(t, again)) != 3 {
			t.Fatalf("first %+v, again %+v", first, again)
		}
		if res := mustPoll(t, pb, 3, 20*time.Millisecond); res.Seq != 3 || len(res.Messages) != 0 {
			t.Fatalf("nothing new: %+v", res)
		}
		if _, err := pb.poll(ctx, 2, time.Millisecond); !errors.Is(err, errBadAfter) {
			t.Fatalf("after behind what was acknowledged: %v", err)
		}
		if _, err := pb.poll(ctx, 9, time.Millisecond); !errors.Is(err, errBadAfter) {
			t.Fatalf("after ahead of what was sent: %v", err)
		}
	})
	t.Run("WaitsForMessages", func(t *testing.T) {
		pb := newPollBuffer(time.Second)
		polled := make(chan pollResponse, 1)
		go func() { polled <- mustPoll(t, pb, 0, 5*time.Second) }()
		waitPolling(t, pb, 1)
		_ = pb.Send(ctx, protocol.Message{T: protocol.TPing, TS: 7})
		if got := pings(t, <-polled); len(got) != 1 || got[0] != 7 {
			t.Fatalf("got %v", got)
		}
	})
	t.Run("NewerPollEndsOlder", func(t *testing.T) {
		pb := newPollBuffer(time.Second)
		done := make(chan pollResponse)
		go func() { done <- mustPoll(t, pb, 0, 10*time.Second) }()
		waitPolling(t, pb, 1)
		go func() { _, _ = pb.poll(ctx, 0, 50*time.Millisecond) }()
		select {
		case res := <-done:
			if len(res.Messages) != 0 {
				t.Fatalf("%+v", res)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("the older poll kept waiting")
		}
	})
	t.Run("FullBufferBlocksTheSenderUntilPolled", func(t *testing.T) {
		pb := newPollBuffer(200 * time.Millisecond)
		for i := range pollMaxMessages {
			if err := pb.Send(ctx, protocol.Message{T: protocol.TPing, TS: int64(i + 1)}); err != nil {
				t.Fatal(err)
			}
		}
		start := time.Now()
		if err := pb.Send(ctx, protocol.Message{T: protocol.TPing}); err == nil || time.Since(start) < 150*time.Millisecond {
			t.Fatalf("send into a full buffer: %v after %v", err, time.Since(start))
		}
		sent := make(chan error, 1)
		go func() { sent <- pb.Send(ctx, protocol.Message{T: protocol.TPing, TS: -1}) }()
		res := mustPoll(t, pb, 0, time.Second)
		if len(res.Messages) != pollBatch {
			t.Fatalf("a response carries at most %d messages, got %d", pollBatch, len(res.Messages))
		}
		mustPoll(t, pb, res.Seq, time.Second) // acknowledges the first batch
		if err := <-sent; err != nil {
			t.Fatalf("a poll makes room: %v", err)
		}
	})
	t.Run("CloseAfterTheMessages", func(t *testing.T) {
		pb := newPollBuffer(time.Second)
		_ = pb.Send(ctx, protocol.Message{T: protocol.TPing, TS: 1})
		pb.close(session.Close{Code: protocol.CloseHeartbeatTimeout, Reason: "no heartbeat"})
		if err := pb.Send(ctx, protocol.Message{T: protocol.TPing}); err == nil {
			t.Fatal("send after close")
		}
		res := mustPoll(t, pb, 0, time.Second)
		if res.Close != nil || len(res.Messages) != 1 {
			t.Fatalf("messages first: %+v", res)
		}
		if pb.drained() {
			t.Fatal("drained before the close was read")
		}
		res = mustPoll(t, pb, 1, time.Second)
		if res.Close == nil || res.Close.Code != protocol.CloseHeartbeatTimeout {
			t.Fatalf("then the close: %+v", res)
		}
		if !pb.drained() {
			t.Fatal("drained once the close was read")
		}
	})
	t.Run("IdleTime", func(t *testing.T) {
		pb := newPollBuffer(time.Second)
		go func() { _, _ = pb.poll(ctx, 0, 200*time.Millisecond) }()
		waitPolling(t, pb, 1)
		if d := pb.idleFor(time.Now().Add(time.Hour)); d != 0 {
			t.Fatalf("idle %v while a poll waits", d)
		}
		waitPolling(t, pb, 0)
		if d := pb.idleFor(time.Now().Add(time.Millisecond)); d <= 0 {
			t.Fatalf("idle %v after the poll ended", d)
		}
	})
}
