package protocol

import "sync"

// Shared is one message sent unchanged to many connections, such as a delta
// to every watcher with the same view of a document: each encoding is made
// once, by the first connection that needs it, and its bytes are shared, so
// callers must not modify them (nor Msg).
type Shared struct {
	Msg Message

	jsonOnce, framesOnce sync.Once
	json, frames         []byte
	jsonErr, framesErr   error

	mu       sync.Mutex
	keys     []variantKey
	variants []*Shared
}

// NewShared wraps m for sharing.
func NewShared(m Message) *Shared { return &Shared{Msg: m} }

// JSON returns Encode(Msg), encoded once.
func (s *Shared) JSON() ([]byte, error) {
	s.jsonOnce.Do(func() { s.json, s.jsonErr = Encode(s.Msg) })
	return s.json, s.jsonErr
}

// Frames returns EncodeFrames(Msg), encoded once.
func (s *Shared) Frames() ([]byte, error) {
	s.framesOnce.Do(func() { s.frames, s.framesErr = encodeFrames(&s.Msg) })
	return s.frames, s.framesErr
}

// maxVariants bounds the compact variants one shared message keeps.
const maxVariants = 16

type variantKey struct {
	h, a   uint64
	define bool
	node   string
}

// CompactFor is the shared message in the compact forms for a connection
// that gave the document handle h and numbers its author a (see the
// function CompactFor; a delta carries no client-specific part, so client
// is not needed). Connections asking for the same forms (the connections
// of one replica share node) share one variant, and so its encodings.
func (s *Shared) CompactFor(h, a uint64, define bool, node string) *Shared {
	k := variantKey{h, a, define, node}
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, vk := range s.keys {
		if vk == k {
			return s.variants[i]
		}
	}
	v := NewShared(CompactFor(s.Msg, h, a, define, node, ""))
	if len(s.keys) < maxVariants {
		s.keys = append(s.keys, k)
		s.variants = append(s.variants, v)
	}
	return v
}
