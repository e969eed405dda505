package backend

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"
)

// Stream is a JetStream stream the postgres profile publishes into. Dapr's
// JetStream component does not create streams; they must exist before a
// sidecar subscribes.
type Stream struct {
	Name     string
	Subjects []string
	// WorkQueue: a message is deleted once a consumer acknowledges it (task
	// queues). Otherwise messages are kept up to MaxMsgs / MaxAge.
	WorkQueue bool
	MaxMsgs   int64
	MaxAge    time.Duration
}

// BroadcastStream is the broadcast stream of a deployment whose broadcast
// topic is topic: the last 100,000 changes for an hour (replicas start at new
// messages; the cap only bounds the broker's memory and disk). The default
// topic gets the name of a production deployment, autoglm-changes.
func BroadcastStream(topic string) Stream {
	return Stream{Name: "autoglm-" + sanitize(topic), Subjects: []string{topic}, MaxMsgs: 100_000, MaxAge: time.Hour}
}

// sanitize keeps the characters a stream name may hold.
func sanitize(s string) string {
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' {
			return r
		}
		return '_'
	}, s)
}

type apiError struct {
	Code        int    `json:"code"`
	ErrCode     int    `json:"err_code"`
	Description string `json:"description"`
}

// errStreamNameInUse is JetStream's "stream name already in use" (with a
// different configuration).
const errStreamNameInUse = 10058

// errStreamStoreFailed is JetStream's "error creating store for stream".
const errStreamStoreFailed = 10049

// EnsureStream creates s on the NATS server at natsURL, or leaves an existing
// stream of that name as it is.
func EnsureStream(natsURL string, s Stream) error {
	retention := "limits"
	if s.WorkQueue {
		retention = "workqueue"
	}
	cfg := map[string]any{
		"name": s.Name, "subjects": s.Subjects, "retention": retention,
		"max_consumers": -1, "max_msgs": s.MaxMsgs, "max_bytes": -1, "max_age": int64(s.MaxAge),
		"max_msgs_per_subject": -1, "max_msg_size": -1, "discard": "old", "storage": "file",
		"num_replicas": 1, "duplicate_window": int64(2 * time.Minute),
	}
	if s.MaxAge > 0 && s.MaxAge < 2*time.Minute {
		cfg["duplicate_window"] = int64(s.MaxAge) // may not exceed max_age
	}
	body, _ := json.Marshal(cfg)
	for attempt := 0; ; attempt++ {
		reply, err := natsRequest(natsURL, "$JS.API.STREAM.CREATE."+s.Name, body, 5*time.Second)
		if err != nil {
			return fmt.Errorf("create stream %s: %w", s.Name, err)
		}
		var r struct {
			Error *apiError `json:"error"`
		}
		if err := json.Unmarshal(reply, &r); err != nil {
			return fmt.Errorf("create stream %s: %s", s.Name, reply)
		}
		if r.Error == nil || r.Error.ErrCode == errStreamNameInUse {
			return nil
		}
		// The server removes an account's storage directory with its last
		// stream; a create racing that removal (test packages create and
		// delete streams at once) fails to make its directory. It succeeds
		// when tried again.
		if r.Error.ErrCode != errStreamStoreFailed || attempt >= 4 {
			return fmt.Errorf("create stream %s: %s (%d)", s.Name, r.Error.Description, r.Error.ErrCode)
		}
		time.Sleep(time.Duration(50<<attempt) * time.Millisecond)
	}
}

// DeleteStream removes a stream; a missing stream is not an error.
func DeleteStream(natsURL, name string) error {
	reply, err := natsRequest(natsURL, "$JS.API.STREAM.DELETE."+name, nil, 5*time.Second)
	if err != nil {
		return fmt.Errorf("delete stream %s: %w", name, err)
	}
	var r struct {
		Error *apiError `json:"error"`
	}
	_ = json.Unmarshal(reply, &r)
	if r.Error != nil && r.Error.Code != 404 {
		return fmt.Errorf("delete stream %s: %s", name, r.Error.Description)
	}
	return nil
}

// natsRequest sends one request over a fresh connection with the NATS
// client protocol and returns the first reply.
func natsRequest(natsURL, subject string, payload []byte, timeout time.Duration) ([]byte, error) {
	addr := strings.TrimPrefix(natsURL, "nats://")
	conn, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(timeout))
	r := bufio.NewReader(conn)
	line, err := r.ReadString('\n')
	if err != nil {
		return nil, err
	}
	if !strings.HasPrefix(line, "INFO ") {
		return nil, fmt.Errorf("nats: unexpected greeting %q", strings.TrimSpace(line))
	}
	var id [8]byte
	_, _ = rand.Read(id[:])
	inbox := "_INBOX.autoglm." + hex.EncodeToString(id[:])
	out := "CONNECT {\"verbose\":false,\"pedantic\":false,\"name\":\"autoglm-backend\",\"lang\":\"go\",\"version\":\"0\",\"protocol\":1}\r\n" +
		"SUB " + inbox + " 1\r\n" +
		"PUB " + subject + " " + inbox + " " + strconv.Itoa(len(payload)) + "\r\n" + string(payload) + "\r\n"
	if _, err := conn.Write([]byte(out)); err != nil {
		return nil, err
	}
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return nil, fmt.Errorf("nats: no reply to %s: %w", subject, err)
		}
		line = strings.TrimRight(line, "\r\n")
		switch {
		case line == "PING":
			if _, err := conn.Write([]byte("PONG\r\n")); err != nil {
				return nil, err
			}
		case strings.HasPrefix(line, "-ERR"):
			return nil, fmt.Errorf("nats: %s", line)
		case strings.HasPrefix(line, "MSG "):
			f := strings.Fields(line)
			n, err := strconv.Atoi(f[len(f)-1])
			if err != nil {
				return nil, fmt.Errorf("nats: bad MSG line %q", line)
			}
			buf := make([]byte, n+2)
			if _, err := ioReadFull(r, buf); err != nil {
				return nil, err
			}
			return buf[:n], nil
		}
	}
}
