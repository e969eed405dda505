package protocol_test

import (
	"bytes"
	"sync"
	"testing"

	"github.com/open-autoglm/autoglm/app/protocol"
)

// A shared message encodes to the same bytes as the message itself, once
// per encoding, whatever the number of connections asking at once.
func TestShared(t *testing.T) {
	m := protocol.Message{T: protocol.TDelta, Doc: "c/d", V: 7, PV: 6, By: "w"}
	sh := protocol.NewShared(m)
	wantJSON, _ := protocol.Encode(m)
	wantFrames, _ := protocol.EncodeFrames(m)
	var wg sync.WaitGroup
	jsons := make([][]byte, 8)
	frames := make([][]byte, 8)
	for i := range 8 {
		wg.Go(func() {
			jsons[i], _ = sh.JSON()
			frames[i], _ = sh.Frames()
		})
	}
	wg.Wait()
	for i := range 8 {
		if !bytes.Equal(jsons[i], wantJSON) || !bytes.Equal(frames[i], wantFrames) {
			t.Fatalf("connection %d got %q / %x", i, jsons[i], frames[i])
		}
		if &jsons[i][0] != &jsons[0][0] || &frames[i][0] != &frames[0][0] {
			t.Fatal("the encodings were made more than once")
		}
	}
}
