// Package rpc is a small gRPC client over HTTP/2: unary calls and
// bidirectional streams of protobuf messages, as the gRPC over HTTP/2
// protocol describes them, with no compression. It is what ztunnel speaks
// to istiod with (Delta xDS and the CA): the full gRPC library costs a
// node proxy several megabytes of memory for features it never uses.
package rpc

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/proto"
)

// Options configure a Conn.
type Options struct {
	// TLS verifies the server; nil speaks HTTP/2 over plain TCP (h2c).
	TLS *tls.Config
	// MaxRecvSize bounds one received message (default 4 MiB).
	MaxRecvSize int
	// UserAgent is sent with every call.
	UserAgent string
}

// Conn calls one server. Connections are made on first use and again
// after a connection is lost, so a Conn outlives any one of them.
type Conn struct {
	t       *http.Transport
	base    url.URL
	maxRecv int
	ua      string
}

const defaultMaxRecv = 4 << 20

// Bounds on reaching a server: a server that accepts connections but never
// answers must not hold a call for ever.
const (
	dialTimeout      = 20 * time.Second
	handshakeTimeout = 10 * time.Second
	pingTimeout      = 15 * time.Second
)

// Dial prepares calls to target: host:port, or unix:///path for a Unix
// socket. Nothing is dialled until the first call.
func Dial(target string, o Options) *Conn {
	network, address, authority := "tcp", target, target
	if p, ok := strings.CutPrefix(target, "unix://"); ok {
		network, address, authority = "unix", p, "localhost"
	} else if p, ok := strings.CutPrefix(target, "unix:"); ok {
		network, address, authority = "unix", p, "localhost"
	}
	protocols := new(http.Protocols)
	t := &http.Transport{
		TLSClientConfig:     o.TLS,
		TLSHandshakeTimeout: handshakeTimeout,
		Protocols:           protocols,
		DisableCompression:  true, // gRPC compresses messages, not bodies
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			d := net.Dialer{Timeout: dialTimeout}
			return d.DialContext(ctx, network, address)
		},
		HTTP2: &http.HTTP2Config{
			// A connection silent this long is pinged, and dropped if
			// the ping goes unanswered, so calls move to a live server.
			// grpc-go servers by default refuse pings more often than
			// every five minutes.
			SendPingTimeout: 5 * time.Minute,
			PingTimeout:     pingTimeout,
		},
	}
	base := url.URL{Scheme: "https", Host: authority}
	if o.TLS == nil {
		base.Scheme = "http"
		protocols.SetUnencryptedHTTP2(true)
	} else {
		protocols.SetHTTP2(true)
	}
	c := &Conn{t: t, base: base, maxRecv: o.MaxRecvSize, ua: o.UserAgent}
	if c.maxRecv <= 0 {
		c.maxRecv = defaultMaxRecv
	}
	return c
}

// Close closes the idle connections; calls in flight end with their
// contexts.
func (c *Conn) Close() error {
	c.t.CloseIdleConnections()
	return nil
}

// Metadata is sent as request header fields (lowercase names).
type Metadata map[string]string

// Invoke makes a unary call of method ("/package.Service/Method").
func (c *Conn) Invoke(ctx context.Context, method string, md Metadata, req, resp proto.Message) error {
	body, err := frame(req)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// A bytes.Reader lets the transport send the request again on a new
	// connection when the server turned it away unprocessed (GOAWAY).
	r, err := c.request(ctx, method, md, bytes.NewReader(body))
	if err != nil {
		return err
	}
	res, err := c.t.RoundTrip(r)
	if err != nil {
		return transportError(ctx, err)
	}
	defer res.Body.Close()
	if st := headerStatus(res); st != nil {
		if st.Code == OK {
			return &Status{Code: Internal, Message: "no response message"}
		}
		return st
	}
	in := reader{body: res.Body, max: c.maxRecv}
	if err := in.next(resp); err != nil {
		if errors.Is(err, io.EOF) {
			if st := trailerStatus(res); st.Code != OK {
				return st.err()
			}
			return &Status{Code: Internal, Message: "no response message"}
		}
		return bodyError(ctx, res, err)
	}
	if err := in.end(); err != nil {
		return bodyError(ctx, res, err)
	}
	return trailerStatus(res).err()
}

// Stream is one bidirectional streaming call. Send and Recv may be called
// from different goroutines; each from one goroutine at a time.
type Stream struct {
	ctx    context.Context
	cancel context.CancelFunc
	pw     *io.PipeWriter

	once        sync.Once
	sendClosed  atomic.Bool
	serverEnded atomic.Bool   // Recv saw the server end the call
	done        chan struct{} // closed when the response headers came, or the call failed
	res         *http.Response
	err         error
	in          reader
}

// NewStream starts a streaming call of method. It returns at once: the
// request is sent as Send writes it, and Recv waits for the response.
// Cancelling ctx ends the call.
func (c *Conn) NewStream(ctx context.Context, method string, md Metadata) (*Stream, error) {
	ctx, cancel := context.WithCancel(ctx)
	pr, pw := io.Pipe()
	r, err := c.request(ctx, method, md, pr)
	if err != nil {
		cancel()
		return nil, err
	}
	s := &Stream{ctx: ctx, cancel: cancel, pw: pw, done: make(chan struct{})}
	go func() {
		res, err := c.t.RoundTrip(r)
		if err != nil {
			s.err = transportError(ctx, err)
			// Nobody will read what Send writes.
			_ = pr.CloseWithError(s.err)
		} else {
			s.res = res
			s.in = reader{body: res.Body, max: c.maxRecv}
		}
		close(s.done)
	}()
	context.AfterFunc(ctx, func() { _ = pw.CloseWithError(context.Cause(ctx)) })
	return s, nil
}

// Send sends one message. Once the server has ended the call it returns
// io.EOF, as grpc-go does, and Recv tells how the call ended.
func (s *Stream) Send(m proto.Message) error {
	if err := s.ctx.Err(); err != nil {
		return transportError(s.ctx, err)
	}
	if s.sendClosed.Load() {
		return errSendClosed
	}
	if s.serverEnded.Load() {
		return io.EOF
	}
	b, err := frame(m)
	if err != nil {
		return err
	}
	if _, err := s.pw.Write(b); err != nil {
		return s.ended(err)
	}
	return nil
}

var errSendClosed = errors.New("rpc: Send after CloseSend")

// ended explains a failed write: the context's end or the connection's
// failure, or io.EOF for a call the server ended.
func (s *Stream) ended(werr error) error {
	if s.ctx.Err() != nil {
		return transportError(s.ctx, werr)
	}
	// The transport closes the request body before RoundTrip returns, so
	// the call's outcome may not be known yet; it follows at once.
	select {
	case <-s.done:
	case <-s.ctx.Done():
		return transportError(s.ctx, werr)
	}
	if s.err != nil {
		return s.err
	}
	return io.EOF
}

// CloseSend ends the client's direction of the call; a Send after it
// fails at once.
func (s *Stream) CloseSend() error {
	s.sendClosed.Store(true)
	return s.pw.Close()
}

// Recv receives the next message into m. It returns io.EOF when the server
// ended the call with status OK, and the status otherwise.
func (s *Stream) Recv(m proto.Message) error {
	select {
	case <-s.done:
	case <-s.ctx.Done():
		return transportError(s.ctx, s.ctx.Err())
	}
	if s.err != nil {
		return s.err
	}
	if st := headerStatus(s.res); st != nil {
		s.endedByServer()
		if st.Code == OK {
			return io.EOF
		}
		return st
	}
	if err := s.in.next(m); err != nil {
		if errors.Is(err, io.EOF) {
			s.endedByServer()
			if st := trailerStatus(s.res); st.Code != OK {
				return st
			}
			return io.EOF
		}
		err = bodyError(s.ctx, s.res, err)
		// The stream may stand inside a message it could not take: end
		// it, as grpc-go does.
		s.cancel()
		return err
	}
	return nil
}

// endedByServer marks the call ended by the server, as Recv saw it.
// Send then says io.EOF at once, even while the transport has not yet
// stopped taking the request, and a Send blocked meanwhile is released.
func (s *Stream) endedByServer() {
	s.serverEnded.Store(true)
	_ = s.pw.CloseWithError(io.EOF)
}

// Close ends the call, if it has not ended, and frees it.
func (s *Stream) Close() error {
	s.once.Do(func() {
		s.cancel()
		_ = s.pw.CloseWithError(net.ErrClosed)
		<-s.done
		if s.res != nil {
			_ = s.res.Body.Close()
		}
	})
	return nil
}

func (c *Conn) request(ctx context.Context, method string, md Metadata, body io.Reader) (*http.Request, error) {
	u := c.base
	u.Path = method
	r, err := http.NewRequestWithContext(ctx, http.MethodPost, u.String(), body)
	if err != nil {
		return nil, err
	}
	r.Header.Set("content-type", "application/grpc")
	r.Header.Set("te", "trailers")
	if c.ua != "" {
		r.Header.Set("user-agent", c.ua)
	}
	if d, ok := ctx.Deadline(); ok {
		r.Header.Set("grpc-timeout", encodeTimeout(time.Until(d)))
	}
	for k, v := range md {
		r.Header.Set(k, v)
	}
	return r, nil
}

// frame encodes m as a length-prefixed, uncompressed gRPC message.
func frame(m proto.Message) ([]byte, error) {
	b, err := proto.MarshalOptions{}.MarshalAppend(make([]byte, 5, 5+proto.Size(m)), m)
	if err != nil {
		return nil, &Status{Code: Internal, Message: "marshal request: " + err.Error()}
	}
	binary.BigEndian.PutUint32(b[1:5], uint32(len(b)-5))
	return b, nil
}

// reader reads length-prefixed messages from a response body.
type reader struct {
	body io.Reader
	max  int
	buf  []byte
}

// next reads one message into m; io.EOF at the clean end of the body.
func (r *reader) next(m proto.Message) error {
	var hdr [5]byte
	if _, err := io.ReadFull(r.body, hdr[:]); err != nil {
		return err
	}
	if hdr[0] != 0 {
		// We never offer compression, so a compressed message is the
		// server's mistake.
		return &Status{Code: Internal, Message: "compressed message, none was offered"}
	}
	n := binary.BigEndian.Uint32(hdr[1:])
	if int64(n) > int64(r.max) {
		return &Status{Code: ResourceExhausted, Message: fmt.Sprintf("message of %d bytes exceeds the limit of %d", n, r.max)}
	}
	if cap(r.buf) < int(n) {
		r.buf = make([]byte, n)
	}
	b := r.buf[:n]
	if _, err := io.ReadFull(r.body, b); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return err
	}
	if err := proto.Unmarshal(b, m); err != nil {
		return &Status{Code: Internal, Message: "unmarshal response: " + err.Error()}
	}
	if cap(r.buf) > 64<<10 {
		// Keep no large buffer between messages of a long-lived stream.
		r.buf = nil
	}
	return nil
}

// end checks that a unary response carried nothing after its message.
func (r *reader) end() error {
	var b [1]byte
	n, err := r.body.Read(b[:])
	for n == 0 && err == nil {
		n, err = r.body.Read(b[:])
	}
	if n > 0 {
		return &Status{Code: Internal, Message: "more than one response message"}
	}
	if errors.Is(err, io.EOF) {
		return nil
	}
	return err
}

// encodeTimeout writes d as a grpc-timeout value: at most 8 digits and a
// unit.
func encodeTimeout(d time.Duration) string {
	if d <= 0 {
		return "1n"
	}
	for _, u := range []struct {
		unit string
		size time.Duration
	}{{"n", time.Nanosecond}, {"u", time.Microsecond}, {"m", time.Millisecond}, {"S", time.Second}, {"M", time.Minute}} {
		if v := (d + u.size - 1) / u.size; v <= 99999999 {
			return strconv.FormatInt(int64(v), 10) + u.unit
		}
	}
	return strconv.FormatInt(int64(min((d+time.Hour-1)/time.Hour, 99999999)), 10) + "H"
}
