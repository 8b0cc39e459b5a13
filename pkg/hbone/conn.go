package hbone

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// Settings of our side of every HBONE connection. Windows are generous
// because tunnels carry bulk data and each stream's buffer is only filled
// when its reader falls behind.
//
// The stream window is what bounds memory: a stream buffers at most that
// much for a reader that falls behind. The connection window bounds only
// the bytes in flight: its credit goes back as DATA arrives, not as
// readers take it, so streams whose readers stopped cannot use it up and
// stall the others (head-of-line blocking). A connection therefore
// buffers at most MaxConcurrentStreams stream windows.
const (
	streamWindow         = 1 << 20  // bytes a peer may send on one stream ahead of its reader
	connWindow           = 16 << 20 // bytes a peer may have in flight on the connection
	maxReadFrame         = 1 << 20  // largest frame we accept
	maxWriteFrame        = 256 << 10
	MaxConcurrentStreams = 100 // streams one connection carries
	maxHeaderListSize    = 16 << 10
	initialPeerWindow    = 65535 // HTTP/2's default until the peer's SETTINGS say otherwise
	initialPeerMaxFrame  = 16384
)

// ErrConnClosed is returned for streams of a connection that has ended.
var ErrConnClosed = errors.New("hbone: connection closed")

// ErrStreamRefused is returned for a stream the peer did not process: it
// refused it (RST_STREAM REFUSED_STREAM) or is going away without having
// seen it (GOAWAY with a lower last stream). HTTP/2 guarantees such a
// stream had no effect, so it may be opened again on another connection.
var ErrStreamRefused = errors.New("hbone: stream refused by the peer, not processed")

// conn is one HTTP/2 connection carrying CONNECT tunnels, either side. One
// goroutine reads frames and demultiplexes them into per-stream buffers; any
// goroutine writes frames under wmu. Buffering per stream, bounded by flow
// control, is what keeps one slow stream from blocking the others.
type conn struct {
	nc     net.Conn
	rec    *TLSConn // nc, if it is one: frames are gathered into fewer writes
	fr     *http2.Framer
	server bool

	// wmu serialises frame writes and owns the HPACK encoder.
	wmu  sync.Mutex
	henc *hpack.Encoder
	hbuf bytes.Buffer
	werr error

	mu       sync.Mutex
	sendCond *sync.Cond // window growth, stream or connection end
	streams  map[uint32]*Stream
	// nextID is the next stream this client opens; lastPeerID the highest
	// stream the client side opened on a server.
	nextID, lastPeerID uint32
	peerMaxStreams     uint32
	peerMaxFrame       uint32
	peerInitWindow     int32
	sendWindow         int32 // connection-level, towards the peer
	recvWindow         int32 // connection-level, what the peer may still send
	recvUnacked        int32 // received, not yet returned with WINDOW_UPDATE
	goingAway          bool
	goAwayErr          error // why the peer sent GOAWAY, if not a clean shutdown
	err                error // set once: the connection is finished
	idleSince          time.Time
	settingsSeen       chan struct{}
	done               chan struct{}

	// rd is nc for every read of the connection, counting the bytes into
	// received for the client's health check: a peer that sends anything
	// is alive, even while a large frame is still arriving.
	rd       progressReader
	received atomic.Uint64

	// newStream is called, in its own goroutine, for each stream a client
	// opens on a server.
	newStream func(*Stream)

	// Control frames the reader owes the peer (acks, resets, credit for
	// dropped data) are queued for a writer goroutine: the reader must never
	// block on a full socket, or two peers that both stop reading while
	// writing would deadlock.
	ctrlMu     sync.Mutex
	ctrl       []func() error
	ctrlSignal chan struct{}
}

// maxDirectWrite is the largest frame the reader writes to a stream's
// socket itself (see readDataFrame).
const maxDirectWrite = 32 << 10

// maxQueuedControl bounds the control frames waiting to be written; a peer
// that provokes more (a PING flood while not reading) loses the connection.
const maxQueuedControl = 1024

func newConn(nc net.Conn, server bool) *conn {
	c := &conn{
		nc:             nc,
		server:         server,
		streams:        map[uint32]*Stream{},
		nextID:         1,
		peerMaxStreams: MaxConcurrentStreams,
		peerMaxFrame:   initialPeerMaxFrame,
		peerInitWindow: initialPeerWindow,
		sendWindow:     initialPeerWindow,
		recvWindow:     connWindow,
		idleSince:      time.Now(),
		settingsSeen:   make(chan struct{}),
		done:           make(chan struct{}),
		ctrlSignal:     make(chan struct{}, 1),
	}
	c.rec, _ = nc.(*TLSConn)
	c.rd = progressReader{r: nc, n: &c.received}
	c.sendCond = sync.NewCond(&c.mu)
	c.fr = http2.NewFramer(nc, &c.rd)
	c.fr.SetMaxReadFrameSize(maxReadFrame)
	// Frames are handled before the next is read, so their structs can be
	// reused: no allocation per DATA frame.
	c.fr.SetReuseFrames()
	c.fr.MaxHeaderListSize = maxHeaderListSize
	c.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	c.henc = hpack.NewEncoder(&c.hbuf)
	return c
}

// start sends our SETTINGS and the connection window, then reads frames
// until the connection ends.
func (c *conn) start() error {
	err := c.write(func() error {
		if err := c.fr.WriteSettings(
			http2.Setting{ID: http2.SettingInitialWindowSize, Val: streamWindow},
			http2.Setting{ID: http2.SettingMaxFrameSize, Val: maxReadFrame},
			http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: MaxConcurrentStreams},
			http2.Setting{ID: http2.SettingMaxHeaderListSize, Val: maxHeaderListSize},
		); err != nil {
			return err
		}
		return c.fr.WriteWindowUpdate(0, connWindow-initialPeerWindow)
	})
	if err != nil {
		c.close(err)
		return err
	}
	go c.readLoop()
	go c.controlWriter()
	return nil
}

// queueControl hands a control frame to the writer goroutine.
func (c *conn) queueControl(f func() error) error {
	c.ctrlMu.Lock()
	if len(c.ctrl) >= maxQueuedControl {
		c.ctrlMu.Unlock()
		return http2.ConnectionError(http2.ErrCodeEnhanceYourCalm)
	}
	c.ctrl = append(c.ctrl, f)
	c.ctrlMu.Unlock()
	select {
	case c.ctrlSignal <- struct{}{}:
	default:
	}
	return nil
}

func (c *conn) controlWriter() {
	for {
		select {
		case <-c.ctrlSignal:
		case <-c.done:
			return
		}
		c.ctrlMu.Lock()
		pending := c.ctrl
		c.ctrl = nil
		c.ctrlMu.Unlock()
		for _, f := range pending {
			if c.write(f) != nil {
				return
			}
		}
	}
}

// write runs f with the frame writer to itself. A failed write ends the
// connection: a half-written frame cannot be taken back.
//
// Over a TLSConn, what f writes is gathered while other writers wait
// their turn, and the last of them writes it all at once: frames queued
// behind each other share system calls, and a lone writer's frame leaves
// as soon as it is complete.
func (c *conn) write(f func() error) error {
	t := c.rec
	if t != nil {
		t.hold()
	}
	c.wmu.Lock()
	err := c.werr
	if err == nil {
		if ferr := f(); ferr != nil {
			err = c.failWriteLocked(ferr)
		}
	}
	c.wmu.Unlock()
	if t != nil {
		if terr := t.release(); terr != nil && err == nil {
			c.wmu.Lock()
			err = c.failWriteLocked(terr)
			c.wmu.Unlock()
		}
	}
	return err
}

// failWriteLocked records the first write failure and ends the connection.
func (c *conn) failWriteLocked(err error) error {
	if c.werr == nil {
		c.werr = fmt.Errorf("hbone: write: %w", err)
		_ = c.nc.Close()
	}
	return c.werr
}

func (c *conn) readLoop() {
	var err error
	for err == nil {
		var fh http2.FrameHeader
		fh, err = c.fr.ReadFrameHeader()
		if err != nil {
			break
		}
		if fh.Type == http2.FrameData {
			// DATA is read here, straight into the stream's buffer,
			// rather than by the Framer into its own and copied.
			err = c.readData(fh)
			continue
		}
		var f http2.Frame
		f, err = c.fr.ReadFrameForHeader(fh)
		if err != nil {
			var se http2.StreamError
			if errors.As(err, &se) {
				// Malformed headers on one stream: reset it, keep the rest.
				err = c.resetStream(se.StreamID, se.Code, fmt.Errorf("hbone: stream %d: %w", se.StreamID, err))
				continue
			}
			break
		}
		err = c.handleFrame(f)
	}
	var ce http2.ConnectionError
	if errors.As(err, &ce) {
		// Best effort, and bounded: a peer that does not read gets no goodbye.
		_ = c.nc.SetWriteDeadline(time.Now().Add(time.Second))
		_ = c.write(func() error { return c.fr.WriteGoAway(c.lastPeerStream(), http2.ErrCode(ce), nil) })
	}
	if errors.Is(err, io.EOF) {
		c.mu.Lock()
		err = c.goAwayErr
		c.mu.Unlock()
		if err == nil {
			err = ErrConnClosed
		}
	}
	c.close(err)
}

func (c *conn) lastPeerStream() uint32 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lastPeerID
}

func (c *conn) handleFrame(f http2.Frame) error {
	switch f := f.(type) {
	case *http2.MetaHeadersFrame:
		return c.onHeaders(f)
	case *http2.SettingsFrame:
		return c.onSettings(f)
	case *http2.WindowUpdateFrame:
		return c.onWindowUpdate(f)
	case *http2.RSTStreamFrame:
		c.mu.Lock()
		if s := c.streams[f.StreamID]; s != nil {
			if f.ErrCode == http2.ErrCodeRefusedStream && !c.server {
				// A peer that refuses streams (draining, or past a limit
				// it did not announce) gets no new ones on this
				// connection; those it carries go on.
				c.goingAway = true
				s.resetLocked(ErrStreamRefused)
			} else {
				s.resetLocked(fmt.Errorf("hbone: stream reset by peer: %v", f.ErrCode))
			}
		}
		c.mu.Unlock()
	case *http2.PingFrame:
		if !f.IsAck() {
			return c.queueControl(func() error { return c.fr.WritePing(true, f.Data) })
		}
	case *http2.GoAwayFrame:
		c.mu.Lock()
		c.goingAway = true
		if f.ErrCode != http2.ErrCodeNo {
			c.goAwayErr = fmt.Errorf("hbone: peer sent GOAWAY %v %q", f.ErrCode, f.DebugData())
		}
		for id, s := range c.streams {
			if id > f.LastStreamID && !c.server {
				s.resetLocked(fmt.Errorf("%w: connection going away (%v)", ErrStreamRefused, f.ErrCode))
			}
		}
		c.mu.Unlock()
	case *http2.PriorityFrame, *http2.UnknownFrame:
		// Priorities are advisory and unknown frame types are ignored, as
		// HTTP/2 requires.
	default:
		return http2.ConnectionError(http2.ErrCodeProtocol)
	}
	return nil
}

// readData reads the payload of a DATA frame whose header was just read and
// hands it to its stream: written straight to the stream's socket when its
// WriteTo waits idle and the frame is small, otherwise read into the
// stream's buffer with no copy in between. Bytes for a stream that is gone
// are read and dropped, their credit returned.
func (c *conn) readData(fh http2.FrameHeader) error {
	err := c.readDataFrame(fh)
	if errors.Is(err, io.EOF) {
		// The peer went away in the middle of a frame: not a clean end.
		err = io.ErrUnexpectedEOF
	}
	return err
}

// scratchBufs hold small DATA payloads on their way to a socket.
var scratchBufs = sync.Pool{New: func() any { b := make([]byte, maxDirectWrite); return &b }}

func (c *conn) readDataFrame(fh http2.FrameHeader) error {
	if fh.StreamID == 0 {
		return http2.ConnectionError(http2.ErrCodeProtocol)
	}
	n := int32(fh.Length) // padding counts against the windows too
	size := int(fh.Length)
	pad := 0
	if fh.Flags.Has(http2.FlagDataPadded) {
		if size < 1 {
			return http2.ConnectionError(http2.ErrCodeProtocol)
		}
		var b [1]byte
		if _, err := io.ReadFull(&c.rd, b[:]); err != nil {
			return err
		}
		pad = int(b[0])
		size--
		if pad > size {
			return http2.ConnectionError(http2.ErrCodeProtocol)
		}
		size -= pad
	}
	ended := fh.Flags.Has(http2.FlagDataEndStream)

	c.mu.Lock()
	if n > c.recvWindow {
		c.mu.Unlock()
		return http2.ConnectionError(http2.ErrCodeFlowControl)
	}
	c.recvWindow -= n
	// The connection's credit goes back on arrival, whatever becomes of
	// the bytes (see connWindow).
	c.recvUnacked += n
	if inc := c.takeConnCreditLocked(); inc > 0 {
		if err := c.queueControl(func() error { return c.fr.WriteWindowUpdate(0, inc) }); err != nil {
			c.mu.Unlock()
			return err
		}
	}
	s := c.streams[fh.StreamID]
	if s == nil || s.recvEOF || n > s.recvWindow {
		// A stream that already ended, or a peer past the stream's
		// window: the bytes are dropped.
		overrun := s != nil && !s.recvEOF
		c.mu.Unlock()
		if _, err := io.CopyN(io.Discard, &c.rd, int64(size+pad)); err != nil {
			return err
		}
		if overrun {
			return c.resetStream(fh.StreamID, http2.ErrCodeFlowControl, errors.New("hbone: peer overran the stream window"))
		}
		if s == nil && !c.knownStream(fh.StreamID) {
			return http2.ConnectionError(http2.ErrCodeProtocol)
		}
		return nil
	}
	s.recvWindow -= n
	// Padding is never read, so its stream credit goes back with the
	// next batch.
	s.unacked += n - int32(size)

	// Whether the payload reached the stream's buffer, for Read or WriteTo
	// to wake up to.
	buffered := false
	if s.sinkWaiting && s.rx.n == 0 && size > 0 && size <= maxDirectWrite {
		// WriteTo is idle on an empty buffer: write to its socket from
		// here, sparing a wake-up and a copy per frame. Only this goroutine
		// adds data, and WriteTo sleeps until it does, so order holds.
		// Large frames (bulk transfer) still go through WriteTo, so that
		// the streams of one connection write to their sockets in
		// parallel rather than all on this goroutine.
		c.mu.Unlock()
		bp := scratchBufs.Get().(*[]byte)
		defer scratchBufs.Put(bp)
		data := (*bp)[:size]
		if _, err := io.ReadFull(&c.rd, data); err != nil {
			return err
		}
		c.mu.Lock()
		if s.sinkWaiting && s.reset == nil {
			s.sinkWaiting = false
			sink := s.sink
			c.mu.Unlock()
			w := sink.WriteNow(data)
			c.mu.Lock()
			s.direct += int64(w)
			data = data[w:]
			if inc := s.creditLocked(w); inc > 0 {
				if err := c.queueControl(s.windowUpdate(inc)); err != nil {
					c.mu.Unlock()
					return err
				}
			}
			if len(data) == 0 && !ended && s.reset == nil {
				// All taken: WriteTo sleeps on.
				s.sinkWaiting = s.sink != nil
			}
		}
		if len(data) > 0 {
			c.keepLocked(s, data, len(data))
			buffered = s.reset == nil
		}
	} else if size > 0 {
		// Read into room reserved after the buffered bytes, with c.mu
		// released: the stream's consumer reads only what is committed.
		var segs [maxReadFrame/rxChunkSize + 2][]byte
		room := s.rx.reserve(size, segs[:0])
		c.mu.Unlock()
		var err error
		for _, d := range room {
			if _, err = io.ReadFull(&c.rd, d); err != nil {
				break
			}
		}
		c.mu.Lock()
		if err != nil {
			s.rx.abandon(size)
			c.mu.Unlock()
			return err
		}
		c.keepLocked(s, nil, size)
		buffered = s.reset == nil
	}
	if pad > 0 {
		c.mu.Unlock()
		if _, err := io.CopyN(io.Discard, &c.rd, int64(pad)); err != nil {
			return err
		}
		c.mu.Lock()
	}
	if ended {
		s.recvEOF = true
		c.maybeForgetLocked(s)
	}
	if buffered || ended {
		s.rcond.Broadcast()
	}
	c.mu.Unlock()
	return nil
}

// keepLocked adds k payload bytes, read while c.mu was released, to the
// stream's buffer: data if given, else the k bytes already read into room
// the buffer reserved. A stream reset meanwhile will never consume them,
// so they are dropped.
func (c *conn) keepLocked(s *Stream, data []byte, k int) {
	if s.reset != nil {
		if data == nil {
			s.rx.abandon(k)
		}
		return
	}
	if data != nil {
		s.rx.push(data)
		return
	}
	s.rx.commit(k)
}

// knownStream reports whether id could have been a stream of this
// connection; data for a stream that never existed is a protocol error.
func (c *conn) knownStream(id uint32) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if id%2 == 1 {
		if c.server {
			return id <= c.lastPeerID
		}
		return id < c.nextID
	}
	return false
}

func (c *conn) onHeaders(f *http2.MetaHeadersFrame) error {
	if c.server {
		return c.onRequest(f)
	}
	c.mu.Lock()
	s := c.streams[f.StreamID]
	c.mu.Unlock()
	if s == nil {
		return nil
	}
	status := f.PseudoValue("status")
	select {
	case s.resp <- response{status: status, header: headerOf(f), ended: f.StreamEnded()}:
	default:
		// Trailers or a second response: nothing waits for them.
	}
	if f.StreamEnded() {
		c.mu.Lock()
		s.recvEOF = true
		s.rcond.Broadcast()
		c.maybeForgetLocked(s)
		c.mu.Unlock()
	}
	return nil
}

// onRequest accepts a stream a client opens: an HTTP/2 CONNECT request
// (RFC 9113 section 8.5), which carries :method and :authority only.
func (c *conn) onRequest(f *http2.MetaHeadersFrame) error {
	id := f.StreamID
	c.mu.Lock()
	if id%2 == 0 || id <= c.lastPeerID {
		c.mu.Unlock()
		return http2.ConnectionError(http2.ErrCodeProtocol)
	}
	c.lastPeerID = id
	refuse := c.goingAway || len(c.streams) >= MaxConcurrentStreams
	c.mu.Unlock()
	if refuse {
		return c.queueControl(func() error { return c.fr.WriteRSTStream(id, http2.ErrCodeRefusedStream) })
	}
	authority := f.PseudoValue("authority")
	if f.PseudoValue("method") != "CONNECT" || authority == "" || f.PseudoValue("scheme") != "" || f.PseudoValue("path") != "" || f.StreamEnded() {
		return c.queueControl(func() error { return c.fr.WriteRSTStream(id, http2.ErrCodeProtocol) })
	}
	s := c.makeStream(id)
	s.Authority = authority
	s.Header = headerOf(f)
	c.mu.Lock()
	c.streams[id] = s
	c.mu.Unlock()
	go c.newStream(s)
	return nil
}

func (c *conn) onSettings(f *http2.SettingsFrame) error {
	if f.IsAck() {
		return nil
	}
	var tableSize *uint32
	err := f.ForeachSetting(func(s http2.Setting) error {
		if err := s.Valid(); err != nil {
			return err
		}
		c.mu.Lock()
		defer c.mu.Unlock()
		switch s.ID {
		case http2.SettingInitialWindowSize:
			delta := int32(s.Val) - c.peerInitWindow
			for _, st := range c.streams {
				if int64(st.sendWindow)+int64(delta) > 1<<31-1 {
					return http2.ConnectionError(http2.ErrCodeFlowControl)
				}
				st.sendWindow += delta
			}
			c.peerInitWindow = int32(s.Val)
		case http2.SettingMaxFrameSize:
			c.peerMaxFrame = s.Val
		case http2.SettingMaxConcurrentStreams:
			c.peerMaxStreams = s.Val
		case http2.SettingHeaderTableSize:
			v := s.Val
			tableSize = &v
		}
		return nil
	})
	if err != nil {
		return err
	}
	c.mu.Lock()
	c.sendCond.Broadcast()
	select {
	case <-c.settingsSeen:
	default:
		close(c.settingsSeen)
	}
	c.mu.Unlock()
	return c.queueControl(func() error {
		if tableSize != nil {
			c.henc.SetMaxDynamicTableSizeLimit(*tableSize)
		}
		return c.fr.WriteSettingsAck()
	})
}

func (c *conn) onWindowUpdate(f *http2.WindowUpdateFrame) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	inc := int64(f.Increment)
	if f.StreamID == 0 {
		if int64(c.sendWindow)+inc > 1<<31-1 {
			return http2.ConnectionError(http2.ErrCodeFlowControl)
		}
		c.sendWindow += int32(inc)
	} else if s := c.streams[f.StreamID]; s != nil {
		if int64(s.sendWindow)+inc > 1<<31-1 {
			s.resetLocked(errors.New("hbone: peer overflowed the stream window"))
			return nil
		}
		s.sendWindow += int32(inc)
	}
	c.sendCond.Broadcast()
	return nil
}

// takeConnCreditLocked returns connection-level credit to hand back to the
// peer, once enough has built up to be worth a frame.
func (c *conn) takeConnCreditLocked() uint32 {
	if c.recvUnacked < connWindow/4 {
		return 0
	}
	inc := c.recvUnacked
	c.recvUnacked = 0
	c.recvWindow += inc
	return uint32(inc)
}

// resetStream fails the stream locally and queues RST_STREAM; it is
// called from the reader.
func (c *conn) resetStream(id uint32, code http2.ErrCode, err error) error {
	c.mu.Lock()
	if s := c.streams[id]; s != nil {
		s.resetLocked(err)
	}
	c.mu.Unlock()
	return c.queueControl(func() error { return c.fr.WriteRSTStream(id, code) })
}

// maybeForgetLocked drops a stream from the connection once it was reset,
// or both directions have ended and its reader took every byte. Until
// then it counts against the stream limit: an ended stream whose buffer
// nobody reads still holds memory, and the connection's credit no longer
// bounds that (see connWindow).
func (c *conn) maybeForgetLocked(s *Stream) {
	if s.reset != nil || (s.recvEOF && s.sentEnd && s.rx.n == 0) {
		if _, ok := c.streams[s.id]; ok {
			delete(c.streams, s.id)
			if len(c.streams) == 0 {
				c.idleSince = time.Now()
			}
			c.sendCond.Broadcast()
		}
	}
}

// close ends the connection and every stream on it.
func (c *conn) close(err error) {
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return
	}
	if err == nil {
		err = ErrConnClosed
	}
	c.err = err
	// Done first: whoever learns of the end from a stream finds the
	// connection ended too.
	close(c.done)
	for _, s := range c.streams {
		s.resetLocked(err)
	}
	c.sendCond.Broadcast()
	c.mu.Unlock()
	_ = c.nc.Close()
}

func headerOf(f *http2.MetaHeadersFrame) map[string][]string {
	h := map[string][]string{}
	for _, hf := range f.RegularFields() {
		h[hf.Name] = append(h[hf.Name], hf.Value)
	}
	return h
}

// writeHeaders HPACK-encodes fields and writes them as one HEADERS frame
// and as many CONTINUATION frames as the peer's frame size needs. The
// caller holds wmu.
func (c *conn) writeHeadersLocked(id uint32, endStream bool, fields []hpack.HeaderField) error {
	c.hbuf.Reset()
	for _, f := range fields {
		if err := c.henc.WriteField(f); err != nil {
			return err
		}
	}
	block := c.hbuf.Bytes()
	c.mu.Lock()
	max := int(c.peerMaxFrame)
	c.mu.Unlock()
	first := true
	for first || len(block) > 0 {
		chunk := block
		if len(chunk) > max {
			chunk = chunk[:max]
		}
		block = block[len(chunk):]
		var err error
		if first {
			err = c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: chunk, EndStream: endStream, EndHeaders: len(block) == 0})
			first = false
		} else {
			err = c.fr.WriteContinuation(id, len(block) == 0, chunk)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// progressReader counts the bytes read through it.
type progressReader struct {
	r io.Reader
	n *atomic.Uint64
}

func (p *progressReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	p.n.Add(uint64(n))
	return n, err
}
