package hbone

import (
	"errors"
	"io"
	"net"
	"strconv"
	"sync"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/ambient-mesh/mesh/pkg/sockio"
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
	rx         rxBuf // received, unread bytes
	recvEOF    bool
	recvWindow int32
	unacked    int32
	sendWindow int32
	sentEnd    bool
	responded  bool
	reset      error
	// consuming is set while WriteTo writes received bytes with c.mu
	// released; another Read or WriteTo meanwhile waits (consumerWaiting),
	// so that no chunk it writes from can be consumed and reused under it.
	consuming, consumerWaiting bool
	// sink is WriteTo's destination socket, when it has one; sinkWaiting
	// is set while WriteTo waits for data. The reader then writes arriving
	// data to the socket itself, without waking WriteTo (see readDataFrame).
	sink        *sockio.Sock
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

// resetLocked fails the stream for both directions.
func (s *Stream) resetLocked(err error) {
	if s.reset == nil {
		s.reset = err
		select {
		case s.resp <- response{err: err}:
		default:
		}
	}
	s.rcond.Broadcast()
	s.c.sendCond.Broadcast()
	s.c.maybeForgetLocked(s)
}

// waitDataLocked waits until there are bytes to read and no other consumer
// is writing from the buffer, and reports whether there are: false once
// the stream ended (s.reset tells how).
func (s *Stream) waitDataLocked() bool {
	for s.consuming || (s.rx.n == 0 && !s.recvEOF && s.reset == nil) {
		if s.consuming {
			s.consumerWaiting = true
		} else {
			s.sinkWaiting = s.sink != nil
		}
		s.rcond.Wait()
	}
	s.sinkWaiting = false
	return s.rx.n > 0
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
	n := s.rx.read(p)
	inc := s.creditLocked(n)
	if s.recvEOF {
		c.maybeForgetLocked(s)
	}
	c.mu.Unlock()
	s.sendCredit(inc)
	return n, nil
}

// creditLocked accounts for n bytes consumed and returns the stream
// credit due to the peer now (the connection's went back on arrival). It
// is handed back in batches: a WINDOW_UPDATE per read would cost a frame
// for every few kilobytes.
func (s *Stream) creditLocked(n int) uint32 {
	s.unacked += int32(n)
	if s.unacked < streamWindow/4 || s.recvEOF || s.reset != nil {
		return 0
	}
	inc := uint32(s.unacked)
	s.recvWindow += s.unacked
	s.unacked = 0
	return inc
}

// sendCredit sends the WINDOW_UPDATE creditLocked returned, if any.
func (s *Stream) sendCredit(inc uint32) {
	if inc > 0 {
		_ = s.c.write(s.windowUpdate(inc))
	}
}

// windowUpdate writes the stream's credit; run it with the frame writer.
func (s *Stream) windowUpdate(inc uint32) func() error {
	return func() error { return s.c.fr.WriteWindowUpdate(s.id, inc) }
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
