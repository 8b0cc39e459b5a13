package hbone

import (
	"crypto/tls"
	"net"
	"sync"
	"time"
)

// transportBufSize bounds the TLS records a transport gathers before it
// writes them: a 256 KiB DATA frame is 16 full records, so a whole frame
// leaves in one system call.
const transportBufSize = 288 << 10

var transportBufs = sync.Pool{New: func() any { b := make([]byte, 0, transportBufSize); return &b }}

// Transport wraps the TCP connection an HBONE connection's TLS runs over.
// TLS hands the socket one record (at most 16 KiB) per write; a transport
// gathers the records of each frame, and of frames other writers have
// queued behind it, and writes them with one system call. On this path a
// system call costs as much as it carries packets through the network
// stack, so fewer and larger writes are most of what a tunnel can save
// over plain TLS.
//
// Records are gathered only while an HBONE connection's writer holds the
// transport (see conn.write); every other write, such as the TLS
// handshake or an alert, goes out at once, after whatever was gathered.
//
// Use it under TLS: tls.Client(hbone.Transport(raw), cfg). Connections
// whose TLS does not run over one still work, one write per record.
func Transport(nc net.Conn) net.Conn { return &transport{Conn: nc} }

type transport struct {
	net.Conn

	mu    sync.Mutex
	holds int     // writers between hold and release
	buf   *[]byte // gathered records; nil when empty
	err   error   // the first failed write: the connection is broken
}

// hold announces a writer: records written until the matching release
// may be gathered.
func (t *transport) hold() {
	t.mu.Lock()
	t.holds++
	t.mu.Unlock()
}

// release ends a hold. The last writer out writes what was gathered.
func (t *transport) release() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.holds--
	if t.holds > 0 {
		return t.err
	}
	return t.flushLocked()
}

func (t *transport) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.err != nil {
		return 0, t.err
	}
	if t.holds == 0 || len(p) > transportBufSize {
		if err := t.flushLocked(); err != nil {
			return 0, err
		}
		n, err := t.Conn.Write(p)
		t.err = err
		return n, err
	}
	if t.buf != nil && len(*t.buf)+len(p) > transportBufSize {
		if err := t.flushLocked(); err != nil {
			return 0, err
		}
	}
	if t.buf == nil {
		t.buf = transportBufs.Get().(*[]byte)
	}
	*t.buf = append(*t.buf, p...)
	return len(p), nil
}

func (t *transport) flushLocked() error {
	if t.err != nil || t.buf == nil {
		return t.err
	}
	_, t.err = t.Conn.Write(*t.buf)
	*t.buf = (*t.buf)[:0]
	transportBufs.Put(t.buf)
	t.buf = nil
	return t.err
}

// closeFlushTimeout bounds how long Close waits to write what was
// gathered, so that a peer that stopped reading cannot hold a close.
const closeFlushTimeout = time.Second

// Close writes what is gathered, such as the last frames of a draining
// connection or TLS's close_notify, then closes the connection.
func (t *transport) Close() error {
	_ = t.Conn.SetWriteDeadline(time.Now().Add(closeFlushTimeout))
	t.mu.Lock()
	_ = t.flushLocked()
	if t.err == nil {
		t.err = net.ErrClosed
	}
	t.mu.Unlock()
	return t.Conn.Close()
}

// transportOf returns the transport under a TLS connection, if it has one.
func transportOf(nc net.Conn) *transport {
	if tc, ok := nc.(*tls.Conn); ok {
		t, _ := tc.NetConn().(*transport)
		return t
	}
	t, _ := nc.(*transport)
	return t
}
