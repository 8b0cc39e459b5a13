package hbone

import (
	"bytes"
	"context"
	"io"
	"net"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// frames builds a byte sequence of client frames for seeds.
func frames(build func(fr *http2.Framer, enc *hpack.Encoder, hb *bytes.Buffer)) []byte {
	var out, hb bytes.Buffer
	fr := http2.NewFramer(&out, nil)
	enc := hpack.NewEncoder(&hb)
	build(fr, enc, &hb)
	return out.Bytes()
}

// FuzzServe feeds arbitrary bytes after the client preface to the server
// side, which faces untrusted peers: it must never panic or hang, and must
// end when the peer goes away.
func FuzzServe(f *testing.F) {
	connect := func(fr *http2.Framer, enc *hpack.Encoder, hb *bytes.Buffer) {
		_ = fr.WriteSettings()
		hb.Reset()
		_ = enc.WriteField(hpack.HeaderField{Name: ":method", Value: "CONNECT"})
		_ = enc.WriteField(hpack.HeaderField{Name: ":authority", Value: "10.0.0.1:80"})
		_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hb.Bytes(), EndHeaders: true})
		_ = fr.WriteData(1, false, []byte("hello"))
		_ = fr.WriteData(1, true, nil)
	}
	f.Add(frames(connect))
	f.Add(frames(func(fr *http2.Framer, enc *hpack.Encoder, hb *bytes.Buffer) {
		_ = fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1 << 30})
		_ = fr.WriteWindowUpdate(0, 1<<31-1)
		_ = fr.WriteData(3, false, []byte("no such stream"))
		_ = fr.WriteRSTStream(1, http2.ErrCodeCancel)
		_ = fr.WritePing(false, [8]byte{1})
		_ = fr.WriteGoAway(0, http2.ErrCodeNo, nil)
	}))
	f.Add([]byte{0, 0, 0, 4, 0, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		client, server := net.Pipe()
		go func() { _, _ = io.Copy(io.Discard, client) }()
		go func() {
			_, _ = client.Write([]byte(http2.ClientPreface))
			_, _ = client.Write(data)
			client.Close()
		}()
		done := make(chan struct{})
		go func() {
			_ = Serve(context.Background(), server, func(s *Stream) {
				defer s.Close()
				_ = s.Respond(200)
				_, _ = io.Copy(io.Discard, s)
			})
			close(done)
		}()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatalf("Serve did not end after the peer left; input %x", data)
		}
	})
}
