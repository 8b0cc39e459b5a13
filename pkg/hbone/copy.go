package hbone

import (
	"encoding/binary"
	"errors"
	"io"
	"net"
	"sync"

	"golang.org/x/net/http2"

	"github.com/ambient-mesh/mesh/pkg/sockio"
)

// frameHeaderLen is the size of an HTTP/2 frame header.
const frameHeaderLen = 9

// Buffers of ReadFrom: a stream starts small, so that mostly idle
// request/response tunnels stay cheap, and moves to a large buffer once a
// read fills the small one (bulk transfer), so that each system call and
// each DATA frame carries as much as possible. Each has room for a frame
// header in front of the payload.
const (
	smallReadFrom = 16 << 10
	largeReadFrom = maxWriteFrame
)

var (
	smallFromBufs = sync.Pool{New: func() any { b := make([]byte, frameHeaderLen+smallReadFrom, frameHeaderLen+smallReadFrom+1); return &b }}
	largeFromBufs = sync.Pool{New: func() any { b := make([]byte, frameHeaderLen+largeReadFrom, frameHeaderLen+largeReadFrom+1); return &b }}
)

// ReadFrom sends everything r yields through the tunnel until r's EOF (not
// ending the stream: CloseWrite does that). It reads straight into a buffer
// with room for the frame header in front, so the payload is never copied
// on its way into TLS. It reads into small buffers until one fills, then
// into large ones until a read brings less than a small one holds. From a
// bare TCP socket it takes a buffer only once the socket has bytes
// (sockio.ReadPooled): a tunnel waiting for its app holds none, however
// large its last buffer was.
func (s *Stream) ReadFrom(r io.Reader) (int64, error) {
	sk := sockio.Of(r)
	pool := &smallFromBufs
	var total int64
	for {
		var bp *[]byte
		var n int
		var rerr error
		if sk != nil {
			bp, n, rerr = sk.ReadPooled(pool, frameHeaderLen)
		} else {
			bp = pool.Get().(*[]byte)
			n, rerr = r.Read((*bp)[frameHeaderLen:])
		}
		if n > 0 {
			sent, err := s.sendFrames(*bp, n)
			total += int64(sent)
			if err != nil {
				pool.Put(bp)
				return total, err
			}
		}
		if bp != nil {
			full := n == len(*bp)-frameHeaderLen
			pool.Put(bp)
			switch {
			case full:
				pool = &largeFromBufs
			case n < smallReadFrom:
				pool = &smallFromBufs
			}
		}
		if errors.Is(rerr, io.EOF) {
			return total, nil
		}
		if rerr != nil {
			return total, rerr
		}
	}
}

// sendFrames sends buf[frameHeaderLen:frameHeaderLen+n] as DATA frames,
// each as large as the windows and the peer's frame size allow, and
// returns how many payload bytes went out. Each frame's header is written
// into the 9 bytes before its payload: the headroom for the first, already
// sent bytes for the others.
func (s *Stream) sendFrames(buf []byte, n int) (int, error) {
	c := s.c
	off := frameHeaderLen
	end := frameHeaderLen + n
	for off < end {
		k, err := s.takeCredit(end - off)
		if err != nil {
			return off - frameHeaderLen, err
		}
		// The frame's slice keeps the byte after it, the buffer's own, for
		// TLSConn.writeTail.
		frame := buf[off-frameHeaderLen : off+k : min(off+k+1, cap(buf))]
		putDataHeader(frame, s.id, k)
		if err := c.write(func() error {
			if c.rec != nil {
				_, err := c.rec.writeTail(frame)
				return err
			}
			_, err := c.nc.Write(frame)
			return err
		}); err != nil {
			return off - frameHeaderLen, err
		}
		off += k
	}
	return n, nil
}

// takeCredit waits for flow-control credit and takes up to want bytes of
// it, as much as one frame may carry.
func (s *Stream) takeCredit(want int) (int, error) {
	c := s.c
	c.mu.Lock()
	defer c.mu.Unlock()
	for s.reset == nil && !s.sentEnd && (c.sendWindow <= 0 || s.sendWindow <= 0) {
		c.sendCond.Wait()
	}
	if s.reset != nil {
		return 0, s.reset
	}
	if s.sentEnd {
		return 0, errWriteAfterClose
	}
	n := min(want, int(c.sendWindow), int(s.sendWindow), int(c.peerMaxFrame), maxWriteFrame)
	c.sendWindow -= int32(n)
	s.sendWindow -= int32(n)
	return n, nil
}

func putDataHeader(frame []byte, id uint32, n int) {
	frame[0], frame[1], frame[2] = byte(n>>16), byte(n>>8), byte(n)
	frame[3] = byte(http2.FrameData)
	frame[4] = 0 // no END_STREAM, no padding
	binary.BigEndian.PutUint32(frame[5:9], id&(1<<31-1))
}

// WriteTo writes the tunnel's incoming bytes to w until the peer ends its
// direction (then it returns nil) or the stream fails. It writes straight
// from the stream's receive buffer, with no copy in between.
func (s *Stream) WriteTo(w io.Writer) (int64, error) {
	c := s.c
	var total int64
	sink := sockio.Of(w)
	c.mu.Lock()
	s.sink = sink
	c.mu.Unlock()
	// The received bytes span chunks: written with one writev to a
	// socket, one write each to anything else. Writing consumes view,
	// so bufs keeps the slice's capacity for the next round.
	var bufs, view net.Buffers
	// Each way out forgets the sink under the lock it already holds (no
	// deferred locking, which would hang a panic under the lock instead of
	// letting it crash).
	for {
		c.mu.Lock()
		more := s.waitDataLocked()
		total += s.direct
		s.direct = 0
		if !more {
			err := s.reset
			s.sink, s.sinkWaiting = nil, false
			c.mu.Unlock()
			return total, err
		}
		// Received bytes stay where they are until consumed, the reader
		// only adds after them, and no other consumer runs meanwhile:
		// the view holds while w writes.
		bufs = s.rx.views(bufs[:0])
		view = bufs
		s.consuming = true
		c.mu.Unlock()

		var wn int64
		var werr error
		if sink != nil {
			wn, werr = sink.WriteBuffers(view)
		} else {
			wn, werr = view.WriteTo(w)
		}
		n := int(wn)

		c.mu.Lock()
		s.rx.consume(n)
		s.consuming = false
		if s.consumerWaiting {
			s.consumerWaiting = false
			s.rcond.Broadcast()
		}
		inc := s.creditLocked(n)
		if s.recvEOF {
			c.maybeForgetLocked(s)
		}
		if werr != nil {
			s.sink, s.sinkWaiting = nil, false
		}
		c.mu.Unlock()
		s.sendCredit(inc)
		total += wn
		if werr != nil {
			return total, werr
		}
	}
}
