package zds

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/ambient-mesh/mesh/pkg/zdsapi"
)

// Conn is one ZDS connection, either end. Every call takes a context whose
// deadline and cancellation bound the socket operation. One goroutine may
// read while another writes; concurrent reads (or writes) are not allowed.
type Conn struct {
	uc *net.UnixConn
}

// NewConn wraps a connected unixpacket socket.
func NewConn(uc *net.UnixConn) *Conn { return &Conn{uc: uc} }

// Dial connects to the node agent's socket at path (ztunnel's side).
func Dial(ctx context.Context, path string) (*Conn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unixpacket", path)
	if err != nil {
		return nil, fmt.Errorf("dial zds %s: %w", path, err)
	}
	return NewConn(c.(*net.UnixConn)), nil
}

// Close closes the socket; blocked calls return.
func (c *Conn) Close() error { return c.uc.Close() }

// WriteHello sends ztunnel's greeting, which must open every connection.
func (c *Conn) WriteHello(ctx context.Context) error {
	return c.write(ctx, "hello", &zdsapi.ZdsHello{Version: zdsapi.Version_V1}, nil)
}

// ReadHello reads ztunnel's greeting.
func (c *Conn) ReadHello(ctx context.Context) (*zdsapi.ZdsHello, error) {
	payload, files, err := c.read(ctx)
	if err != nil {
		return nil, fmt.Errorf("read hello: %w", err)
	}
	closeFiles(files)
	h, err := decodeHello(payload, len(files))
	if err != nil {
		return nil, fmt.Errorf("read hello: %w", err)
	}
	return h, nil
}

// WriteRequest sends req; netns must be the pod's network namespace for an
// AddWorkload and nil otherwise. The caller keeps netns: the kernel passes
// the peer its own copy.
func (c *Conn) WriteRequest(ctx context.Context, req *zdsapi.WorkloadRequest, netns *os.File) error {
	if err := checkRequest(req, fdCount(netns)); err != nil {
		return fmt.Errorf("write request: %w", err)
	}
	return c.write(ctx, "request", req, netns)
}

// ReadRequest reads and validates one request. For an AddWorkload, netns is
// the pod's network namespace and the caller must close it; otherwise it is
// nil. An error wrapping ErrInvalidMessage leaves the connection usable: the
// caller should answer it with an Ack carrying the error.
func (c *Conn) ReadRequest(ctx context.Context) (req *zdsapi.WorkloadRequest, netns *os.File, err error) {
	payload, files, err := c.read(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("read request: %w", err)
	}
	req, err = decodeRequest(payload, len(files))
	if err != nil {
		closeFiles(files)
		return nil, nil, fmt.Errorf("read request: %w", err)
	}
	if len(files) == 1 {
		netns = files[0]
	}
	return req, netns, nil
}

// WriteResponse sends ztunnel's answer to the last request.
func (c *Conn) WriteResponse(ctx context.Context, resp *zdsapi.WorkloadResponse) error {
	return c.write(ctx, "response", resp, nil)
}

// ReadResponse reads one response; it always holds an Ack.
func (c *Conn) ReadResponse(ctx context.Context) (*zdsapi.WorkloadResponse, error) {
	payload, files, err := c.read(ctx)
	if err != nil {
		return nil, fmt.Errorf("read response: %w", err)
	}
	closeFiles(files)
	resp, err := decodeResponse(payload, len(files))
	if err != nil {
		return nil, fmt.Errorf("read response: %w", err)
	}
	return resp, nil
}

func (c *Conn) write(ctx context.Context, what string, m proto.Message, fd *os.File) error {
	b, err := proto.Marshal(m)
	if err != nil {
		return fmt.Errorf("encode %s: %w", what, err)
	}
	err = withDeadline(ctx, c.uc.SetWriteDeadline, func() error {
		return writePacket(c.uc, b, fd)
	})
	if err != nil {
		return fmt.Errorf("write %s: %w", what, err)
	}
	return nil
}

func (c *Conn) read(ctx context.Context) (payload []byte, files []*os.File, err error) {
	err = withDeadline(ctx, c.uc.SetReadDeadline, func() error {
		payload, files, err = readPacket(c.uc)
		return err
	})
	return payload, files, err
}

// pastDeadline wakes a blocked socket call at once.
var pastDeadline = time.Unix(1, 0)

// withDeadline runs op under a socket deadline that follows ctx: ctx's own
// deadline, and an immediate one once ctx is cancelled.
func withDeadline(ctx context.Context, set func(time.Time) error, op func() error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	deadline, _ := ctx.Deadline() // zero: none
	if err := set(deadline); err != nil {
		return err
	}
	fired := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		defer close(fired)
		_ = set(pastDeadline)
	})
	err := op()
	if !stop() {
		// Wait, so that its past deadline cannot land after the next call
		// has set its own.
		<-fired
	}
	if errors.Is(err, os.ErrDeadlineExceeded) {
		// Report the context's reason; the socket timer can fire an instant
		// before the context's own.
		if cerr := ctx.Err(); cerr != nil {
			return cerr
		}
		if !deadline.IsZero() && !time.Now().Before(deadline) {
			return context.DeadlineExceeded
		}
	}
	return err
}

func fdCount(f *os.File) int {
	if f == nil {
		return 0
	}
	return 1
}

func closeFiles(files []*os.File) {
	for _, f := range files {
		_ = f.Close()
	}
}
