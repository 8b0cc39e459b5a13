package hbone

import (
	"bytes"
	"crypto/tls"
	"encoding/binary"
	"net"
	"testing"
)

// byteConn is a net.Conn that reads from a fixed input and discards
// writes.
type byteConn struct {
	net.Conn
	r *bytes.Reader
}

func (b byteConn) Read(p []byte) (int, error)  { return b.r.Read(p) }
func (b byteConn) Write(p []byte) (int, error) { return len(p), nil }
func (b byteConn) Close() error                { return nil }

var fuzzSecret = bytes.Repeat([]byte{7}, 32)

// sealedRecords turns data into records sealed with fuzzSecret: each is a
// 2-byte length and that many bytes of inner plaintext (content, type and
// padding, as the peer chose them). A record that is exactly a KeyUpdate
// moves the generator to the next key, as a peer would. It also returns
// the application data the records carry, in order.
func sealedRecords(data []byte) (stream, appData []byte) {
	var k recordKeys
	if err := k.setSecret(tls.TLS_AES_128_GCM_SHA256, fuzzSecret); err != nil {
		panic(err)
	}
	for len(data) >= 2 {
		n := min(int(binary.BigEndian.Uint16(data)), len(data)-2, maxPlaintext+1)
		inner := data[2 : 2+n]
		data = data[2+n:]
		hdr := []byte{typeAppData, 3, 3, 0, 0}
		binary.BigEndian.PutUint16(hdr[3:], uint16(n+tagLen))
		nonce, _ := k.nextNonce()
		stream = append(stream, hdr...)
		stream = k.aead.Seal(stream, nonce, inner, hdr)
		content := bytes.TrimRight(inner, "\x00")
		if len(content) == 0 {
			continue
		}
		typ, content := content[len(content)-1], content[:len(content)-1]
		switch {
		case typ == typeAppData:
			appData = append(appData, content...)
		case typ == typeHandshake && len(content) == 5 && content[0] == hsKeyUpdate && content[3] == 1:
			if err := k.update(); err != nil {
				panic(err)
			}
		}
	}
	return stream, appData
}

// FuzzTLSConnRead feeds a TLSConn records from an untrusted peer: sealed
// with the right key but with any content, types and post-handshake
// messages (first byte 0), or any bytes at all (first byte 1). Reads must
// never panic, never return more than asked, and end with an error.
func FuzzTLSConnRead(f *testing.F) {
	rec := func(inner ...byte) []byte {
		return append(binary.BigEndian.AppendUint16(nil, uint16(len(inner))), inner...)
	}
	var seed []byte
	seed = append(seed, 0)
	seed = append(seed, rec('h', 'i', typeAppData)...)
	seed = append(seed, rec(hsNewTicket, 0, 0, 2, 1, 2, typeHandshake)...)
	seed = append(seed, rec(hsKeyUpdate, 0, 0, 1, 1, typeHandshake)...)
	seed = append(seed, rec('x', typeAppData, 0, 0)...)
	seed = append(seed, rec(1, alertCloseNotif, typeAlert)...)
	f.Add(seed)
	f.Add(append([]byte{0}, rec(hsKeyUpdate, 0, typeHandshake)...))
	f.Add(append([]byte{0}, rec(0, 0, 0)...))
	f.Add([]byte{1, typeAppData, 3, 3, 0, 17, 1, 2, 3})
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) == 0 {
			return
		}
		stream, appData := data[1:], []byte(nil)
		if data[0] == 0 {
			stream, appData = sealedRecords(data[1:])
		}
		c := newTLSConn(byteConn{r: bytes.NewReader(stream)}, tls.ConnectionState{}, false)
		if err := c.in.setSecret(tls.TLS_AES_128_GCM_SHA256, fuzzSecret); err != nil {
			t.Fatal(err)
		}
		if err := c.out.setSecret(tls.TLS_AES_128_GCM_SHA256, fuzzSecret); err != nil {
			t.Fatal(err)
		}
		sizes := []int{1, 9, 100, 16 << 10, 17 << 10, 64 << 10}
		var got []byte
		for i := 0; ; i++ {
			p := make([]byte, sizes[i%len(sizes)])
			n, err := c.Read(p)
			if n > len(p) || n < 0 {
				t.Fatalf("read %d into %d bytes", n, len(p))
			}
			got = append(got, p[:n]...)
			if err != nil {
				break
			}
			if i > len(stream)+10 {
				t.Fatal("reads go on past the input")
			}
		}
		if c.rbuf != nil || c.plain != nil {
			t.Fatal("a connection whose reading ended still holds its read buffer")
		}
		// Whatever was read is what the peer sealed as application data,
		// in order (the reader may stop early, at a record it refuses).
		if data[0] == 0 && !bytes.HasPrefix(appData, got) {
			t.Fatalf("read %q, the peer sent %q", got, appData)
		}
		if data[0] == 1 && len(got) > 0 {
			t.Fatalf("read %q from records not sealed with the key", got)
		}
	})
}
