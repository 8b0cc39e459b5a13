package hbone

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/tls"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/chacha20poly1305"

	"github.com/ambient-mesh/mesh/pkg/sockio"
)

// TLSConn is an HBONE connection's TLS 1.3 after the handshake. crypto/tls
// runs the handshake; the records that follow are sealed and opened here,
// with the traffic secrets the handshake derived (RFC 8446 section 7).
//
// What this buys over crypto/tls's own record layer is copies. A DATA
// frame is sealed straight from the buffer its payload was read into, into
// the buffer that goes to the socket, and a record that falls inside a
// frame's payload is opened straight into the stream's buffer. crypto/tls
// copies each record's plaintext once more on either side, and writes each
// record with its own system call, where a TLSConn gathers the records of
// a frame, and of the frames queued behind it, into one write.
//
// On the wire nothing changes: records are TLS 1.3 records as any TLS
// 1.3 peer sends and expects them, key updates (RFC 8446 section 4.6.3)
// are answered, and session tickets from the peer are read and ignored.
type TLSConn struct {
	raw    net.Conn
	sock   *sockio.Sock  // raw's I/O on a bare TCP socket; nil for other conns
	rw     io.ReadWriter // sock if there is one, else raw
	state  tls.ConnectionState
	server bool

	// Read side; one reader at a time.
	rmu   sync.Mutex
	in    recordKeys
	rbuf  *[]byte // raw bytes from the socket: rbuf[roff:rend] unread
	roff  int
	rend  int
	plain []byte // opened application data not yet returned
	hmsg  []byte // a post-handshake message split across records
	// useless counts the records since the last application data that
	// carried none (key updates, tickets, empty records), which a peer
	// could otherwise send without end.
	useless int
	tickets int // session tickets from the peer, ignored
	rerr    error
	fatal   atomic.Uint32 // the alert Close sends instead of close_notify

	// Write side. Records written between hold and release are gathered
	// in obuf and written at once by the last writer out.
	wmu   sync.Mutex
	out   recordKeys
	holds int
	obuf  *[]byte
	werr  error
	// updateDue is set by the reader when the peer asked for a KeyUpdate:
	// ours must go out before our next application data.
	updateDue atomic.Bool
}

// TLS 1.3 record layer limits (RFC 8446 section 5).
const (
	recordHeaderLen  = 5
	maxPlaintext     = 1 << 14
	maxCiphertext    = maxPlaintext + 256
	tagLen           = 16
	fullRecordLen    = recordHeaderLen + maxPlaintext + 1 + tagLen
	recordReadBufLen = 16 * fullRecordLen
	maxUseless       = 16

	typeAlert         = 21
	alertLevelFatal   = 2
	alertUnexpected   = 10
	alertBadMAC       = 20
	alertOverflow     = 22
	alertDecode       = 50
	alertIllegalParam = 47
	typeHandshake     = 22
	typeAppData       = 23
	hsNewTicket       = 4
	hsKeyUpdate       = 24
	maxPostHSMsg      = 1 << 17
	alertCloseNotif   = 0
	alertUserCancel   = 90
)

// Write buffers: a 256 KiB DATA frame is 16 full records and a piece, so a
// whole frame leaves in one system call.
const writeBufSize = 288 << 10

var writeBufs = sync.Pool{New: func() any { b := make([]byte, 0, writeBufSize); return &b }}

// closeFlushTimeout bounds how long Close waits to write what was
// gathered, so that a peer that stopped reading cannot hold a close.
const closeFlushTimeout = time.Second

// testHookRead, if set, is called before each read from the socket, with
// whether the read follows a wait for the socket.
var testHookRead func(c *TLSConn, waited bool)

// keyUpdateAfter is how many records are sealed with one key before a
// TLSConn moves to the next (a KeyUpdate). RFC 8446 section 5.5 puts the
// limit for AES-GCM at 2^24.5 full records; this stays well under it.
// Tests lower it.
var keyUpdateAfter uint64 = 1 << 24

var recordReadBufs = sync.Pool{New: func() any { b := make([]byte, recordReadBufLen); return &b }}

// recordKeys is one direction's traffic protection.
type recordKeys struct {
	suite  uint16
	secret []byte
	aead   cipher.AEAD
	iv     [12]byte
	seq    uint64
	nonce  [12]byte
}

func suiteHash(suite uint16) (func() hash.Hash, int, error) {
	switch suite {
	case tls.TLS_AES_128_GCM_SHA256:
		return sha256.New, 16, nil
	case tls.TLS_AES_256_GCM_SHA384:
		return sha512.New384, 32, nil
	case tls.TLS_CHACHA20_POLY1305_SHA256:
		return sha256.New, 32, nil
	}
	return nil, 0, fmt.Errorf("hbone: TLS 1.3 cipher suite %#04x not supported", suite)
}

// expandLabel is HKDF-Expand-Label (RFC 8446 section 7.1) with an empty
// context.
func expandLabel(h func() hash.Hash, secret []byte, label string, n int) ([]byte, error) {
	full := "tls13 " + label
	info := make([]byte, 0, 4+len(full))
	info = binary.BigEndian.AppendUint16(info, uint16(n))
	info = append(info, byte(len(full)))
	info = append(info, full...)
	info = append(info, 0)
	return hkdf.Expand(h, secret, string(info), n)
}

// setSecret derives the key and IV of a traffic secret and restarts the
// sequence number.
func (k *recordKeys) setSecret(suite uint16, secret []byte) error {
	h, keyLen, err := suiteHash(suite)
	if err != nil {
		return err
	}
	key, err := expandLabel(h, secret, "key", keyLen)
	if err != nil {
		return err
	}
	iv, err := expandLabel(h, secret, "iv", 12)
	if err != nil {
		return err
	}
	var aead cipher.AEAD
	if suite == tls.TLS_CHACHA20_POLY1305_SHA256 {
		aead, err = chacha20poly1305.New(key)
	} else {
		var b cipher.Block
		if b, err = aes.NewCipher(key); err == nil {
			aead, err = cipher.NewGCM(b)
		}
	}
	if err != nil {
		return err
	}
	k.suite, k.secret, k.aead, k.seq = suite, secret, aead, 0
	copy(k.iv[:], iv)
	return nil
}

// update moves to the next traffic secret (RFC 8446 section 7.2).
func (k *recordKeys) update() error {
	h, _, err := suiteHash(k.suite)
	if err != nil {
		return err
	}
	next, err := expandLabel(h, k.secret, "traffic upd", len(k.secret))
	if err != nil {
		return err
	}
	return k.setSecret(k.suite, next)
}

// nextNonce returns the nonce of the next record and counts it. The
// sequence number never wraps: the connection fails first.
func (k *recordKeys) nextNonce() ([]byte, error) {
	if k.seq == 1<<64-1 {
		return nil, errors.New("hbone: TLS record sequence number exhausted")
	}
	k.nonce = k.iv
	for i := 0; i < 8; i++ {
		k.nonce[4+i] ^= byte(k.seq >> (56 - 8*i))
	}
	k.seq++
	return k.nonce[:], nil
}

// keyLog collects the traffic secrets crypto/tls derives for one
// handshake. They stay in memory, as the rest of the handshake's state.
// crypto/tls writes them from the goroutine running the handshake, before
// HandshakeContext returns.
type keyLog struct {
	client, server []byte
	next           io.Writer // the configuration's own key log
}

func (l *keyLog) Write(line []byte) (int, error) {
	if l.next != nil {
		if _, err := l.next.Write(line); err != nil {
			return 0, err
		}
	}
	f := bytes.Fields(line)
	if len(f) != 3 {
		return len(line), nil
	}
	var dst *[]byte
	switch string(f[0]) {
	case "CLIENT_TRAFFIC_SECRET_0":
		dst = &l.client
	case "SERVER_TRAFFIC_SECRET_0":
		dst = &l.server
	default:
		return len(line), nil
	}
	secret, err := hex.DecodeString(string(f[2]))
	if err != nil {
		return 0, err
	}
	*dst = secret
	return len(line), nil
}

// TLSClient runs a TLS 1.3 client handshake over raw and returns the
// connection HBONE runs on. cfg is not modified. On error the caller
// still owns raw.
func TLSClient(ctx context.Context, raw net.Conn, cfg *tls.Config) (*TLSConn, error) {
	return handshake(ctx, raw, cfg, false)
}

// TLSServer is TLSClient's counterpart for the server side. It sends no
// session tickets: HBONE connections are long-lived and pooled.
func TLSServer(ctx context.Context, raw net.Conn, cfg *tls.Config) (*TLSConn, error) {
	return handshake(ctx, raw, cfg, true)
}

func handshake(ctx context.Context, raw net.Conn, base *tls.Config, server bool) (*TLSConn, error) {
	kl := &keyLog{}
	cfg := recordConfig(base, kl)
	if gcc := base.GetConfigForClient; gcc != nil {
		cfg.GetConfigForClient = func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
			alt, err := gcc(hello)
			if alt == nil || err != nil {
				return alt, err
			}
			return recordConfig(alt, kl), nil
		}
	}
	hc := &handshakeConn{Conn: raw}
	var tc *tls.Conn
	if server {
		tc = tls.Server(hc, cfg)
	} else {
		tc = tls.Client(hc, cfg)
	}
	if err := tc.HandshakeContext(ctx); err != nil {
		return nil, err
	}
	st := tc.ConnectionState()
	if st.Version != tls.VersionTLS13 {
		return nil, errors.New("hbone: TLS 1.3 required")
	}
	if hc.hdrN != 0 || hc.pos != 0 {
		return nil, errors.New("hbone: TLS handshake ended inside a record")
	}
	readSecret, writeSecret := kl.server, kl.client
	if server {
		readSecret, writeSecret = kl.client, kl.server
	}
	if readSecret == nil || writeSecret == nil {
		return nil, errors.New("hbone: TLS handshake did not yield its traffic secrets")
	}
	c := newTLSConn(raw, st, server)
	if err := c.in.setSecret(st.CipherSuite, readSecret); err != nil {
		return nil, err
	}
	if err := c.out.setSecret(st.CipherSuite, writeSecret); err != nil {
		return nil, err
	}
	// Records the peer sent after its last handshake message may already
	// have been read from the socket.
	if len(hc.buf) > 0 {
		c.rbuf = recordReadBufs.Get().(*[]byte)
		c.rend = copy(*c.rbuf, hc.buf)
	}
	return c, nil
}

// newTLSConn is a TLSConn over raw, with no keys yet.
func newTLSConn(raw net.Conn, st tls.ConnectionState, server bool) *TLSConn {
	c := &TLSConn{raw: raw, rw: raw, state: st, server: server}
	if c.sock = sockio.Of(raw); c.sock != nil {
		c.rw = c.sock
	}
	return c
}

// recordConfig is base as a TLSConn's handshake needs it: TLS 1.3 only,
// the traffic secrets logged to kl (and to base's own key log, if any, for
// debugging), no session tickets sent: a ticket would be written under
// the application keys before the handshake returns, in a record this
// side would not count.
func recordConfig(base *tls.Config, kl *keyLog) *tls.Config {
	cfg := base.Clone()
	cfg.MinVersion = tls.VersionTLS13
	cfg.MaxVersion = tls.VersionTLS13
	kl.next = base.KeyLogWriter
	cfg.KeyLogWriter = kl
	cfg.SessionTicketsDisabled = true
	cfg.GetConfigForClient = nil
	return cfg
}

// handshakeConn is raw as crypto/tls sees it during the handshake: a read
// never returns bytes past the end of the record being read, so that
// everything after the handshake's last record is left here for the
// TLSConn, not buffered inside crypto/tls.
type handshakeConn struct {
	net.Conn
	store []byte // what buf reads into
	buf   []byte // read from the socket, not yet returned
	hdr   [recordHeaderLen]byte
	hdrN  int // header bytes of the current record returned
	pos   int // body bytes of the current record returned
}

func (h *handshakeConn) Read(p []byte) (int, error) {
	if len(h.buf) == 0 {
		if h.store == nil {
			h.store = make([]byte, fullRecordLen)
		}
		n, err := h.Conn.Read(h.store)
		if n == 0 {
			return 0, err
		}
		h.buf = h.store[:n]
	}
	var limit int
	if h.hdrN < recordHeaderLen {
		limit = recordHeaderLen - h.hdrN
	} else {
		limit = int(binary.BigEndian.Uint16(h.hdr[3:])) - h.pos
	}
	n := copy(p[:min(len(p), limit)], h.buf)
	if h.hdrN < recordHeaderLen {
		copy(h.hdr[h.hdrN:], p[:n])
		h.hdrN += n
	} else {
		h.pos += n
	}
	h.buf = h.buf[n:]
	if h.hdrN == recordHeaderLen && h.pos == int(binary.BigEndian.Uint16(h.hdr[3:])) {
		h.hdrN, h.pos = 0, 0
	}
	return n, nil
}

// ConnectionState returns the handshake's outcome: peer certificates,
// ALPN, cipher suite.
func (c *TLSConn) ConnectionState() tls.ConnectionState { return c.state }

// NetConn returns the connection the records travel over.
func (c *TLSConn) NetConn() net.Conn { return c.raw }

func (c *TLSConn) LocalAddr() net.Addr                { return c.raw.LocalAddr() }
func (c *TLSConn) RemoteAddr() net.Addr               { return c.raw.RemoteAddr() }
func (c *TLSConn) SetDeadline(t time.Time) error      { return c.raw.SetDeadline(t) }
func (c *TLSConn) SetReadDeadline(t time.Time) error  { return c.raw.SetReadDeadline(t) }
func (c *TLSConn) SetWriteDeadline(t time.Time) error { return c.raw.SetWriteDeadline(t) }

// errPeerClosed is the end of the peer's records: close_notify.
var errPeerClosed = io.EOF

// alertError is a fatal alert from the peer.
type alertError uint8

func (a alertError) Error() string { return fmt.Sprintf("hbone: peer sent TLS alert %d", uint8(a)) }

// protocolError is a peer's record this side refuses; Close tells the
// peer with the fatal alert given.
type protocolError struct {
	alert uint8
	msg   string
}

func (e *protocolError) Error() string { return "hbone: " + e.msg }

func refuse(alert uint8, format string, args ...any) error {
	return &protocolError{alert: alert, msg: fmt.Sprintf(format, args...)}
}

// isTimeout reports a deadline's expiry, after which reading may go on
// (not a connection that timed out, which has ended).
func isTimeout(err error) bool {
	return errors.Is(err, os.ErrDeadlineExceeded)
}

// Read returns application data. Records wholly inside p are opened
// straight into it.
func (c *TLSConn) Read(p []byte) (int, error) {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	if len(p) == 0 {
		return 0, nil
	}
	n := 0
	for n < len(p) {
		if len(c.plain) > 0 {
			k := copy(p[n:], c.plain)
			c.plain = c.plain[k:]
			n += k
			continue
		}
		if c.rerr != nil {
			break
		}
		rec, err := c.nextRecord(n == 0)
		if isTimeout(err) {
			// Only a Read that has nothing yet waits. Not the
			// connection's end: a later Read goes on (a partial record
			// stays buffered).
			c.releaseReadBufLocked()
			return 0, err
		}
		if err != nil {
			c.failRead(err)
			break
		}
		if rec == nil {
			break // nothing more without blocking, and n > 0
		}
		k, err := c.open(rec, p[n:])
		if err != nil {
			c.failRead(err)
			break
		}
		n += k
	}
	c.releaseReadBufLocked()
	if n > 0 {
		return n, nil
	}
	return 0, c.rerr
}

// failRead ends reading; a record refused is answered by Close with its
// alert.
func (c *TLSConn) failRead(err error) {
	c.rerr = err
	var pe *protocolError
	if errors.As(err, &pe) {
		c.fatal.CompareAndSwap(0, uint32(pe.alert))
	}
}

// nextRecord returns the next whole record in the read buffer, reading
// from the socket if block is set; nil when none is there and block is
// not.
func (c *TLSConn) nextRecord(block bool) ([]byte, error) {
	for {
		if c.rbuf != nil {
			avail := (*c.rbuf)[c.roff:c.rend]
			if len(avail) >= recordHeaderLen {
				if avail[0] != typeAppData {
					return nil, refuse(alertUnexpected, "unexpected TLS record type %d after the handshake", avail[0])
				}
				l := int(binary.BigEndian.Uint16(avail[3:5]))
				if l > maxCiphertext {
					return nil, refuse(alertOverflow, "TLS record too long")
				}
				if l < 1+tagLen {
					return nil, refuse(alertDecode, "TLS record too short")
				}
				if len(avail) >= recordHeaderLen+l {
					c.roff += recordHeaderLen + l
					return avail[:recordHeaderLen+l], nil
				}
			}
		}
		if !block {
			return nil, nil
		}
		if err := c.fill(); err != nil {
			return nil, err
		}
	}
}

// fill reads more from the socket, keeping any partial record. With
// nothing pending, such as when the connection is idle, it first waits for
// the socket to have bytes holding no buffer, then takes one from the pool;
// the buffer goes back once drained.
func (c *TLSConn) fill() error {
	// A buffer drained by records without data (a ticket, a key update)
	// goes back before the wait too.
	c.releaseReadBufLocked()
	waited := false
	if c.rbuf == nil {
		if err := c.waitReadable(); err != nil {
			return err
		}
		waited = true
		c.rbuf = recordReadBufs.Get().(*[]byte)
		c.roff, c.rend = 0, 0
	}
	b := *c.rbuf
	if c.roff > 0 {
		c.rend = copy(b, b[c.roff:c.rend])
		c.roff = 0
	}
	if testHookRead != nil {
		testHookRead(c, waited)
	}
	n, err := c.rw.Read(b[c.rend:])
	c.rend += n
	if n > 0 {
		return nil
	}
	if err == nil {
		err = io.ErrNoProgress
	}
	if errors.Is(err, io.EOF) {
		// A peer must end with close_notify; a cut is not a clean end.
		err = io.ErrUnexpectedEOF
	}
	return err
}

// waitReadable returns once the socket has bytes to read (or an error or
// end to report). Waiting is safe only after a read found nothing, so it
// peeks first, as a read would try; any other connection is read straight
// away.
func (c *TLSConn) waitReadable() error {
	// Only a bare TCP socket: a wrapper that buffers bytes itself would
	// hold some the socket no longer shows.
	if c.sock == nil {
		return nil
	}
	return c.sock.WaitReadable()
}

// releaseReadBufLocked gives the read buffer back when it holds nothing
// unread, or nothing that will be read, so that an idle connection keeps
// none.
func (c *TLSConn) releaseReadBufLocked() {
	if c.rbuf != nil && (c.roff == c.rend || c.rerr != nil) && len(c.plain) == 0 {
		recordReadBufs.Put(c.rbuf)
		c.rbuf = nil
		c.roff, c.rend = 0, 0
		c.plain = nil // an empty slice would still hold the buffer
	}
}

// open decrypts one record. Application data goes to p, directly when the
// whole inner plaintext fits, else through c.plain; it returns how many
// bytes it put in p. Other content is handled here.
func (c *TLSConn) open(rec, p []byte) (int, error) {
	nonce, err := c.in.nextNonce()
	if err != nil {
		return 0, err
	}
	hdr, body := rec[:recordHeaderLen], rec[recordHeaderLen:]
	direct := len(p) >= len(body)-tagLen
	var inner []byte
	if direct {
		inner, err = c.in.aead.Open(p[:0], nonce, body, hdr)
	} else {
		inner, err = c.in.aead.Open(body[:0], nonce, body, hdr)
	}
	if err != nil {
		return 0, refuse(alertBadMAC, "TLS record failed authentication")
	}
	if len(inner) > maxPlaintext+1 {
		return 0, refuse(alertOverflow, "TLS record plaintext too long")
	}
	i := len(inner) - 1
	for i >= 0 && inner[i] == 0 {
		i--
	}
	if i < 0 {
		return 0, refuse(alertUnexpected, "TLS record without a content type")
	}
	typ, content := inner[i], inner[:i]
	if typ != typeHandshake && len(c.hmsg) > 0 {
		return 0, refuse(alertUnexpected, "TLS record of type %d inside a handshake message", typ)
	}
	if typ != typeAppData || len(content) == 0 {
		if c.useless++; c.useless > maxUseless {
			return 0, refuse(alertUnexpected, "too many TLS records without application data")
		}
	}
	switch typ {
	case typeAppData:
		if len(content) > 0 {
			c.useless = 0
		}
		if direct {
			return len(content), nil
		}
		if len(content) > 0 {
			c.plain = content
		}
		return 0, nil
	case typeAlert:
		if len(content) != 2 {
			return 0, refuse(alertDecode, "malformed TLS alert")
		}
		switch content[1] {
		case alertCloseNotif:
			return 0, errPeerClosed
		case alertUserCancel:
			return 0, nil
		}
		return 0, alertError(content[1])
	case typeHandshake:
		return 0, c.handshakeMessages(content)
	}
	return 0, refuse(alertUnexpected, "unexpected TLS content type %d after the handshake", typ)
}

// handshakeMessages handles post-handshake messages (RFC 8446 section
// 4.6), which may span records.
func (c *TLSConn) handshakeMessages(b []byte) error {
	if len(b) == 0 {
		return refuse(alertUnexpected, "empty TLS handshake record")
	}
	c.hmsg = append(c.hmsg, b...)
	for len(c.hmsg) >= 4 {
		l := int(c.hmsg[1])<<16 | int(c.hmsg[2])<<8 | int(c.hmsg[3])
		if l > maxPostHSMsg {
			return refuse(alertDecode, "TLS handshake message too long")
		}
		if len(c.hmsg) < 4+l {
			return nil
		}
		typ, body := c.hmsg[0], c.hmsg[4:4+l]
		rest := c.hmsg[4+l:]
		switch {
		case typ == hsNewTicket && !c.server:
			// Resumption is not used: ignore.
			c.tickets++
		case typ == hsKeyUpdate:
			if l != 1 {
				return refuse(alertDecode, "malformed TLS KeyUpdate")
			}
			if body[0] > 1 {
				return refuse(alertIllegalParam, "TLS KeyUpdate with request %d", body[0])
			}
			if len(rest) > 0 {
				// The message must end its record: what follows would be
				// under the old key.
				return refuse(alertUnexpected, "TLS KeyUpdate not at the end of its record")
			}
			if err := c.in.update(); err != nil {
				return err
			}
			if body[0] == 1 {
				// Our KeyUpdate goes out before our next application
				// data, from a writer or, if none comes, from another
				// goroutine: the reader never blocks on the socket's
				// write side.
				if !c.updateDue.Swap(true) {
					go func() { _ = c.sendDueKeyUpdate() }()
				}
			}
		default:
			return refuse(alertUnexpected, "unexpected TLS handshake message %d after the handshake", typ)
		}
		c.hmsg = append(c.hmsg[:0], rest...)
	}
	if len(c.hmsg) == 0 {
		c.hmsg = nil
	}
	return nil
}

// Write seals p into records and writes them (or gathers them, between
// hold and release).
func (c *TLSConn) Write(p []byte) (int, error) {
	return c.write(p, false)
}

// writeTail is Write for a p with one byte of capacity past its end, which
// it uses while sealing and restores before it returns: each record is
// then sealed straight from p. The caller owns that byte, as a pooled
// buffer's spare byte (see sendFrames): nothing may read it meanwhile.
func (c *TLSConn) writeTail(p []byte) (int, error) {
	return c.write(p, cap(p) > len(p))
}

func (c *TLSConn) write(p []byte, tail bool) (int, error) {
	if len(p) == 0 {
		// No empty record: a peer counts those against a limit.
		return 0, nil
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.werr != nil {
		return 0, c.werr
	}
	n := 0
	for {
		k := min(len(p)-n, maxPlaintext)
		if err := c.sealLocked(typeAppData, p[n:n+k], tail); err != nil {
			c.werr = err
			return n, err
		}
		n += k
		if n == len(p) {
			break
		}
	}
	if c.holds == 0 {
		if err := c.flushLocked(); err != nil {
			return 0, err
		}
	}
	return n, nil
}

// sealLocked appends one record holding content to obuf, flushing first if
// it would not fit. With tail, content[len(content)] may be used.
func (c *TLSConn) sealLocked(typ byte, content []byte, tail bool) error {
	if typ == typeAppData && (c.out.seq >= keyUpdateAfter || c.updateDue.Load()) {
		c.updateDue.Store(false)
		if err := c.keyUpdateLocked(false); err != nil {
			return err
		}
	}
	need := recordHeaderLen + len(content) + 1 + tagLen
	if c.obuf != nil && len(*c.obuf)+need > cap(*c.obuf) {
		if err := c.flushLocked(); err != nil {
			return err
		}
	}
	if c.obuf == nil {
		c.obuf = writeBufs.Get().(*[]byte)
	}
	nonce, err := c.out.nextNonce()
	if err != nil {
		return err
	}
	b := *c.obuf
	start := len(b)
	b = append(b, typeAppData, 3, 3, 0, 0)
	binary.BigEndian.PutUint16(b[start+3:], uint16(len(content)+1+tagLen))
	hdr := b[start : start+recordHeaderLen]
	if tail {
		// Seal from content with its type byte borrowed from the byte
		// after it.
		full := content[:len(content)+1]
		saved := full[len(content)]
		full[len(content)] = typ
		b = c.out.aead.Seal(b, nonce, full, hdr)
		full[len(content)] = saved
	} else {
		b = append(b, content...)
		b = append(b, typ)
		inner := b[start+recordHeaderLen:]
		sealed := c.out.aead.Seal(inner[:0], nonce, inner, hdr) // in place
		b = b[:start+recordHeaderLen+len(sealed)]
	}
	*c.obuf = b
	return nil
}

// keyUpdateLocked sends a KeyUpdate and moves to the next write key.
func (c *TLSConn) keyUpdateLocked(requestPeer bool) error {
	msg := []byte{hsKeyUpdate, 0, 0, 1, 0}
	if requestPeer {
		msg[4] = 1
	}
	if err := c.sealLocked(typeHandshake, msg, false); err != nil {
		return err
	}
	return c.out.update()
}

// sendDueKeyUpdate sends the KeyUpdate the peer asked for, unless a
// writer already did.
func (c *TLSConn) sendDueKeyUpdate() error {
	return c.keyUpdate(false, true)
}

// writeKeyUpdate sends a KeyUpdate now; requestPeer asks the peer to
// update its keys too.
func (c *TLSConn) writeKeyUpdate(requestPeer bool) error {
	return c.keyUpdate(requestPeer, false)
}

func (c *TLSConn) keyUpdate(requestPeer, onlyIfDue bool) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.werr != nil {
		return c.werr
	}
	if due := c.updateDue.Swap(false); onlyIfDue && !due {
		return nil
	}
	if err := c.keyUpdateLocked(requestPeer); err != nil {
		c.werr = err
		return err
	}
	if c.holds == 0 {
		return c.flushLocked()
	}
	return nil
}

func (c *TLSConn) flushLocked() error {
	if c.werr != nil || c.obuf == nil {
		return c.werr
	}
	_, err := c.rw.Write(*c.obuf)
	*c.obuf = (*c.obuf)[:0]
	writeBufs.Put(c.obuf)
	c.obuf = nil
	if err != nil {
		c.werr = err
	}
	return err
}

// hold and release bracket a writer: records written in between may be
// gathered, and the last writer out writes them.
func (c *TLSConn) hold() {
	c.wmu.Lock()
	c.holds++
	c.wmu.Unlock()
}

func (c *TLSConn) release() error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.holds--
	if c.holds > 0 {
		return c.werr
	}
	return c.flushLocked()
}

// Close sends close_notify after whatever is gathered, then closes the
// socket. A peer that stopped reading cannot hold it.
func (c *TLSConn) Close() error {
	_ = c.raw.SetWriteDeadline(time.Now().Add(closeFlushTimeout))
	alert := []byte{1, alertCloseNotif}
	if a := c.fatal.Load(); a != 0 {
		// Not a clean end: say why.
		alert = []byte{alertLevelFatal, uint8(a)}
	}
	c.wmu.Lock()
	if c.werr == nil {
		if err := c.sealLocked(typeAlert, alert, false); err == nil {
			_ = c.flushLocked()
		}
		if c.werr == nil {
			c.werr = net.ErrClosed
		}
	}
	if c.obuf != nil {
		*c.obuf = (*c.obuf)[:0]
		writeBufs.Put(c.obuf)
		c.obuf = nil
	}
	c.wmu.Unlock()
	err := c.raw.Close()
	// A reader in Read returns now that the socket is closed; what it
	// left buffered will never be read.
	c.rmu.Lock()
	if c.rerr == nil {
		c.rerr = net.ErrClosed
	}
	c.releaseReadBufLocked()
	c.rmu.Unlock()
	return err
}
