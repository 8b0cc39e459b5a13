package hbone

import (
	"errors"
	"io"
	"net"
	"strconv"
	"sync"
	"syscall"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// Stream is one CONNECT tunnel: a byte stream in each direction. Read and
// Write may be called from different goroutines, as io.Copy in each
// direction does.
type Stream struct {
	c  *conn
	id uint32

	// Authority is the target the client asked for (:authority).
	Authority string
	// Header holds the request's regular header fields (lowercase names),
	// on the server side.
	Header map[string][]string

	resp chan response // client: the server's answer

	// Guarded by c.mu.
	rcond      *sync.Cond
	rbuf       []byte
	roff       int
	recvEOF    bool
	recvWindow int32
	unacked    int32
	sendWindow int32
	sentEnd    bool
	responded  bool
	reset      error
	// writing is set while WriteTo writes from rbuf, which must then not
	// be compacted; filling while the reader reads into the room after
	// rbuf's end, which must then not be reset.
	writing, filling bool
	// base counts the bytes dropped from rbuf's front, so that base+roff
	// is an absolute position that survives compaction.
	base int
	// sink is WriteTo's destination socket, when it has one; sinkWaiting
	// is set while WriteTo waits for data. The reader then writes arriving
	// data to the socket itself, without waking WriteTo (see onData).
	sink        syscall.RawConn
	sinkWaiting bool
	direct      int64 // bytes the reader wrote to sink, for WriteTo's count
}

// response is the server's answer to a CONNECT, or the error that ended
// the stream before one came.
type response struct {
	err    error
	status string
	header map[string][]string
	ended  bool
}

func (c *conn) makeStream(id uint32) *Stream {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := &Stream{
		c:          c,
		id:         id,
		resp:       make(chan response, 1),
		recvWindow: streamWindow,
		sendWindow: c.peerInitWindow,
	}
	s.rcond = sync.NewCond(&c.mu)
	return s
}

// pushLocked appends received bytes, compacting what was already read so
// the buffer stays bounded by the stream window.
func (s *Stream) pushLocked(p []byte) {
	copy(s.growLocked(len(p)), p)
	s.rbuf = s.rbuf[:len(s.rbuf)+len(p)]
}

// growLocked makes room for n more bytes after the buffer's end and
// returns that room; the caller fills it, then extends rbuf over it.
// What was already read is compacted away in place when half the buffer
// or more is read and WriteTo is not writing from it. When the room is
// still short, the unread bytes move to a larger array (WriteTo's view of
// the old one stays valid, and base keeps its offsets right), leaving the
// read ones behind; the array doubles up to twice the stream window, which
// flow control keeps unread bytes within.
func (s *Stream) growLocked(n int) []byte {
	if s.roff > 0 && s.roff >= len(s.rbuf)/2 && !s.writing {
		k := copy(s.rbuf, s.rbuf[s.roff:])
		s.rbuf = s.rbuf[:k]
		s.base += s.roff
		s.roff = 0
	}
	if cap(s.rbuf)-len(s.rbuf) < n {
		unread := len(s.rbuf) - s.roff
		size := max(min(2*cap(s.rbuf), maxStreamBuf), unread+n)
		grown := make([]byte, unread, size)
		copy(grown, s.rbuf[s.roff:])
		s.rbuf = grown
		s.base += s.roff
		s.roff = 0
	}
	return s.rbuf[len(s.rbuf) : len(s.rbuf)+n]
}

// maxStreamBuf bounds the array behind a stream's buffer.
const maxStreamBuf = 2 * streamWindow

// consumedLocked moves the read offset n bytes past the absolute position
// start (base+roff when the read began), and empties the buffer once all
// of it is read, unless the reader is filling its end.
func (s *Stream) consumedLocked(start, n int) {
	s.roff = start + n - s.base
	if s.roff == len(s.rbuf) && !s.filling {
		s.base += s.roff
		s.rbuf, s.roff = s.rbuf[:0], 0
	}
}

// resetLocked fails the stream for both directions.
func (s *Stream) resetLocked(err error) {
	if s.reset == nil {
		s.reset = err
		// Bytes buffered and never to be consumed as the stream's would
		// hold the connection's window for good: credit them now
		// (creditLocked adds no connection credit after a reset).
		s.c.recvUnacked += int32(len(s.rbuf) - s.roff)
		select {
		case s.resp <- response{err: err}:
		default:
		}
	}
	s.rcond.Broadcast()
	s.c.sendCond.Broadcast()
	s.c.maybeForgetLocked(s)
}

// waitDataLocked waits until there are bytes to read, and reports whether
// there are: false once the stream ended (s.reset tells how).
func (s *Stream) waitDataLocked() bool {
	for len(s.rbuf) == s.roff && !s.recvEOF && s.reset == nil {
		s.sinkWaiting = s.sink != nil
		s.rcond.Wait()
	}
	s.sinkWaiting = false
	return len(s.rbuf) > s.roff
}

// Read reads tunnelled bytes; io.EOF once the peer closed its direction.
func (s *Stream) Read(p []byte) (int, error) {
	c := s.c
	c.mu.Lock()
	if !s.waitDataLocked() {
		err := s.reset
		if err == nil {
			err = io.EOF
		}
		c.mu.Unlock()
		return 0, err
	}
	n := copy(p, s.rbuf[s.roff:])
	s.consumedLocked(s.base+s.roff, n)
	streamInc, connInc := s.creditLocked(n)
	c.mu.Unlock()
	s.sendCredit(streamInc, connInc)
	return n, nil
}

// creditLocked accounts for n bytes consumed and returns the credit due to
// the peer now. It is handed back in batches: a WINDOW_UPDATE per read
// would cost a frame for every few kilobytes.
func (s *Stream) creditLocked(n int) (streamInc, connInc uint32) {
	c := s.c
	s.unacked += int32(n)
	if s.reset == nil {
		c.recvUnacked += int32(n)
	}
	if s.unacked >= streamWindow/4 && !s.recvEOF && s.reset == nil {
		streamInc = uint32(s.unacked)
		s.recvWindow += s.unacked
		s.unacked = 0
	}
	return streamInc, c.takeConnCreditLocked()
}

// sendCredit sends the WINDOW_UPDATEs creditLocked returned.
func (s *Stream) sendCredit(streamInc, connInc uint32) {
	if streamInc > 0 || connInc > 0 {
		_ = s.c.write(s.windowUpdates(streamInc, connInc))
	}
}

// windowUpdates writes the stream's and the connection's credit; run it
// with the frame writer.
func (s *Stream) windowUpdates(streamInc, connInc uint32) func() error {
	c := s.c
	return func() error {
		if streamInc > 0 {
			if err := c.fr.WriteWindowUpdate(s.id, streamInc); err != nil {
				return err
			}
		}
		if connInc > 0 {
			return c.fr.WriteWindowUpdate(0, connInc)
		}
		return nil
	}
}

// Write sends bytes through the tunnel, waiting for flow-control credit.
// The bytes are copied into a pooled buffer with room for the frame
// header, as ReadFrom reads into one, so no frame-sized buffer stays with
// the connection afterwards.
func (s *Stream) Write(p []byte) (int, error) {
	pool := &smallFromBufs
	if len(p) > smallReadFrom {
		pool = &largeFromBufs
	}
	bp := pool.Get().(*[]byte)
	defer pool.Put(bp)
	buf := *bp
	written := 0
	for len(p) > 0 {
		n := copy(buf[frameHeaderLen:], p)
		sent, err := s.sendFrames(buf, n)
		written += sent
		if err != nil {
			return written, err
		}
		p = p[n:]
	}
	return written, nil
}

var errWriteAfterClose = errors.New("hbone: write after CloseWrite")

// CloseWrite ends our direction of the tunnel (END_STREAM), like a TCP FIN;
// the peer's direction stays open.
func (s *Stream) CloseWrite() error {
	c := s.c
	c.mu.Lock()
	if s.sentEnd || s.reset != nil {
		c.mu.Unlock()
		return nil
	}
	s.sentEnd = true
	c.mu.Unlock()
	err := c.write(func() error { return c.fr.WriteData(s.id, true, nil) })
	c.mu.Lock()
	c.maybeForgetLocked(s)
	c.mu.Unlock()
	return err
}

// Close ends the tunnel. A tunnel that did not end cleanly in both
// directions is reset (RST_STREAM CANCEL), like a TCP RST.
func (s *Stream) Close() error {
	c := s.c
	c.mu.Lock()
	clean := s.sentEnd && s.recvEOF
	already := s.reset != nil
	s.resetLocked(net.ErrClosed)
	c.mu.Unlock()
	if clean || already {
		return nil
	}
	return c.write(func() error { return c.fr.WriteRSTStream(s.id, http2.ErrCodeCancel) })
}

// Respond answers a CONNECT request on the server side: 200 once the
// upstream connection is up, any other status to refuse (which also ends
// the stream).
func (s *Stream) Respond(status int) error {
	c := s.c
	c.mu.Lock()
	if s.responded || s.reset != nil {
		err := s.reset
		c.mu.Unlock()
		if err == nil {
			err = errors.New("hbone: already responded")
		}
		return err
	}
	s.responded = true
	end := status != 200
	if end {
		s.sentEnd = true
	}
	c.mu.Unlock()
	err := c.write(func() error {
		return c.writeHeadersLocked(s.id, end, []hpack.HeaderField{{Name: ":status", Value: strconv.Itoa(status)}})
	})
	if end {
		c.mu.Lock()
		// The client's direction is of no interest once refused.
		s.resetLocked(errRefused)
		c.mu.Unlock()
	}
	return err
}

var errRefused = errors.New("hbone: request refused")

// Conn returns the connection the stream rides on, e.g. to read the peer's
// TLS state.
func (s *Stream) Conn() net.Conn { return s.c.nc }
