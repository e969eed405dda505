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
	s.framesOnce.Do(func() { s.frames, s.framesErr = EncodeFrames(s.Msg) })
	return s.frames, s.framesErr
}
