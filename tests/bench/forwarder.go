package bench

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"
)

// handshakeTimeout bounds a TLS handshake so a stuck peer cannot hold a
// forwarder goroutine forever.
const handshakeTimeout = 5 * time.Second

// forwarderConfig describes one proxy hop: accept on Listen, dial Target,
// copy both ways. Either side may be TLS.
type forwarderConfig struct {
	Listen, Target string
	InTLS, OutTLS  *tls.Config // nil means plain TCP on that side
	Buffer         int         // copy buffer when a side is TLS
}

type forwarder struct {
	cfg forwarderConfig
	log *slog.Logger
}

func runForwarder(ctx context.Context, args []string, out *emitter, log *slog.Logger) error {
	fs := flag.NewFlagSet(roleForwarder, flag.ContinueOnError)
	var (
		cfg     forwarderConfig
		files   tlsFiles // one identity and one peer per hop
		inMode  = fs.String("in", "tcp", "what the forwarder accepts: tcp or tls")
		outMode = fs.String("out", "tcp", "what the forwarder dials: tcp or tls")
	)
	fs.StringVar(&cfg.Listen, "listen", "", "address to accept on")
	fs.StringVar(&cfg.Target, "target", "", "address to forward to")
	fs.IntVar(&cfg.Buffer, "buffer", bigBuffer, "copy buffer size in bytes for TLS sides")
	fs.StringVar(&files.CA, "ca", "", "CA certificate file (PEM)")
	fs.StringVar(&files.Cert, "cert", "", "this hop's certificate file (PEM)")
	fs.StringVar(&files.Key, "key", "", "this hop's private key file (PEM)")
	fs.StringVar(&files.PeerID, "peer-id", "", "SPIFFE identity the TLS peer must present")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var err error
	switch *inMode {
	case "tcp":
	case "tls":
		if cfg.InTLS, err = serverTLSConfig(files); err != nil {
			return err
		}
	default:
		return fmt.Errorf("-in %q: want tcp or tls", *inMode)
	}
	switch *outMode {
	case "tcp":
	case "tls":
		if cfg.OutTLS, err = clientTLSConfig(files); err != nil {
			return err
		}
	default:
		return fmt.Errorf("-out %q: want tcp or tls", *outMode)
	}

	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	if err := out.emit(event{Type: evReady, Addr: ln.Addr().String()}); err != nil {
		ln.Close()
		return err
	}
	f := &forwarder{cfg: cfg, log: log}
	return f.serve(ctx, ln)
}

func (f *forwarder) serve(ctx context.Context, ln net.Listener) error {
	return serve(ctx, ln, func(c net.Conn) {
		if err := f.forward(ctx, c); err != nil && ctx.Err() == nil {
			f.log.Warn("forward", "from", c.RemoteAddr(), "err", err)
		}
	})
}

// forward serves one downstream connection: one upstream connection per
// downstream one, as a per-stream TLS hop would without HTTP/2 pooling.
func (f *forwarder) forward(ctx context.Context, down net.Conn) error {
	if f.cfg.InTLS != nil {
		tc := tls.Server(down, f.cfg.InTLS)
		if err := handshake(ctx, tc); err != nil {
			return fmt.Errorf("accept tls: %w", err)
		}
		down = tc
	}
	up, err := f.dial(ctx)
	if err != nil {
		return err
	}
	defer up.Close()
	return pipe(down, up, f.cfg.Buffer)
}

func (f *forwarder) dial(ctx context.Context) (net.Conn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", f.cfg.Target)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", f.cfg.Target, err)
	}
	if f.cfg.OutTLS == nil {
		return c, nil
	}
	tc := tls.Client(c, f.cfg.OutTLS)
	if err := handshake(ctx, tc); err != nil {
		c.Close()
		return nil, fmt.Errorf("tls to %s: %w", f.cfg.Target, err)
	}
	return tc, nil
}

func handshake(ctx context.Context, tc *tls.Conn) error {
	ctx, cancel := context.WithTimeout(ctx, handshakeTimeout)
	defer cancel()
	if err := tc.HandshakeContext(ctx); err != nil {
		return err
	}
	return checkTLSState(tc.ConnectionState())
}

// pipe copies both ways until both directions have ended. A clean EOF on
// one side is passed on as a half-close, so a client that stops sending
// still gets its answer (the sink's byte count relies on it); an error on
// either direction closes both connections, which ends the other.
func pipe(a, b net.Conn, buffer int) error {
	var (
		wg    sync.WaitGroup
		errBA error
	)
	wg.Go(func() { errBA = copyHalf(a, b, buffer) })
	errAB := copyHalf(b, a, buffer)
	wg.Wait()
	return errors.Join(errAB, errBA)
}

func copyHalf(dst, src net.Conn, buffer int) error {
	var err error
	_, dstTCP := dst.(*net.TCPConn)
	_, srcTCP := src.(*net.TCPConn)
	if dstTCP && srcTCP {
		// Both plain TCP: io.Copy ends in TCPConn.ReadFrom, which splices
		// in the kernel without copying through user space.
		_, err = io.Copy(dst, src)
	} else {
		// Hide ReaderFrom/WriterTo so the copy uses this buffer: a large one
		// lets each TLS write fill whole records.
		_, err = io.CopyBuffer(writerOnly{dst}, readerOnly{src}, make([]byte, buffer))
	}
	if err != nil {
		dst.Close()
		src.Close()
		return err
	}
	if cw, ok := dst.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

type readerOnly struct{ io.Reader }
type writerOnly struct{ io.Writer }
