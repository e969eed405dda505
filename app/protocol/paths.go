package protocol

import "strings"

// The WebSocket subprotocols of the two encodings (docs/protocol.md). In the
// binary one (EncodeFrames) each WebSocket message carries the frames of one
// protocol message; the server prefers it when a client offers both.
const (
	SubprotocolJSON   = "autoglm.json.v1"
	SubprotocolBinary = "autoglm.bin.v1"
)

// URL paths of the sync endpoints and the document API.
const (
	PathSync   = "/v1/sync"   // the WebSocket endpoint
	PathDocs   = "/v1/docs"   // REST: PathDocs + "/{coll}/{id}"
	PathEvents = "/v1/events" // Server-Sent Events; POST PathEvents + "/{session}" sends
	PathPoll   = "/v1/poll"   // long-polling: POST opens, PathPoll + "/{session}" waits and sends
)

// SyncURL turns a base URL into the WebSocket sync endpoint's URL: http(s)
// becomes ws(s); a ws(s) base is kept.
func SyncURL(base string) string {
	base = strings.TrimSuffix(base, "/")
	switch {
	case strings.HasPrefix(base, "https://"):
		base = "wss://" + strings.TrimPrefix(base, "https://")
	case strings.HasPrefix(base, "http://"):
		base = "ws://" + strings.TrimPrefix(base, "http://")
	}
	return base + PathSync
}

// DocURL is the REST URL of the document doc ("coll/id") under base.
func DocURL(base, doc string) string {
	return strings.TrimSuffix(base, "/") + PathDocs + "/" + doc
}
