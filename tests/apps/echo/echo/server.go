package echo

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"
)

// DefaultDrainTimeout bounds how long [Server.Serve] waits for in-flight
// requests and connections after it is told to stop.
const DefaultDrainTimeout = 5 * time.Second

// Config configures a [Server]. Addresses are host:port as for net.Listen;
// port 0 picks a free port, reported by the Server's address methods.
type Config struct {
	Identity Identity
	HTTPAddr string
	GRPCAddr string
	TCPAddr  string
	// Logger receives one line per request or connection; nil discards.
	Logger *slog.Logger
	// DrainTimeout defaults to DefaultDrainTimeout.
	DrainTimeout time.Duration
}

// Server serves the echo protocols on three listeners.
type Server struct {
	drain time.Duration
	http  *httpServer
	grpc  *grpcServer
	tcp   *tcpServer
}

// component is one protocol's server. serve blocks until shutdown stops it and
// returns nil in that case; shutdown drains gracefully until ctx ends, then
// forces whatever is left closed.
type component interface {
	serve() error
	shutdown(ctx context.Context)
}

// Listen binds all three listeners, so that a port conflict is reported
// before anything is served. Call Serve to serve on them.
func Listen(cfg Config) (*Server, error) {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	drain := cfg.DrainTimeout
	if drain <= 0 {
		drain = DefaultDrainTimeout
	}
	var opened []net.Listener
	listen := func(proto, addr string) (net.Listener, error) {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			for _, l := range opened {
				l.Close()
			}
			return nil, fmt.Errorf("listen %s on %q: %w", proto, addr, err)
		}
		opened = append(opened, ln)
		return ln, nil
	}
	httpLn, err := listen("http", cfg.HTTPAddr)
	if err != nil {
		return nil, err
	}
	grpcLn, err := listen("grpc", cfg.GRPCAddr)
	if err != nil {
		return nil, err
	}
	tcpLn, err := listen("tcp", cfg.TCPAddr)
	if err != nil {
		return nil, err
	}
	return &Server{
		drain: drain,
		http:  newHTTPServer(httpLn, cfg.Identity, log),
		grpc:  newGRPCServer(grpcLn, cfg.Identity, log),
		tcp:   newTCPServer(tcpLn, cfg.Identity, log),
	}, nil
}

// HTTPAddr is the bound HTTP and h2c address.
func (s *Server) HTTPAddr() string { return s.http.ln.Addr().String() }

// GRPCAddr is the bound gRPC address.
func (s *Server) GRPCAddr() string { return s.grpc.ln.Addr().String() }

// TCPAddr is the bound raw TCP address.
func (s *Server) TCPAddr() string { return s.tcp.ln.Addr().String() }

// Serve serves until ctx is done or one protocol fails, then stops accepting,
// drains for up to the drain timeout and closes what is left. It returns the
// protocols' errors, nil after a clean stop. Call it once.
func (s *Server) Serve(ctx context.Context) error {
	parts := []component{s.http, s.grpc, s.tcp}
	errc := make(chan error, len(parts))
	var serving sync.WaitGroup
	for _, p := range parts {
		serving.Go(func() { errc <- p.serve() })
	}

	var errs []error
	select {
	case <-ctx.Done():
	case err := <-errc:
		// One protocol died: stop the others rather than serve half an app.
		errs = append(errs, err)
	}

	drainCtx, cancel := context.WithTimeout(context.Background(), s.drain)
	defer cancel()
	var stopping sync.WaitGroup
	for _, p := range parts {
		stopping.Go(func() { p.shutdown(drainCtx) })
	}
	stopping.Wait()
	serving.Wait()
	close(errc)
	for err := range errc {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
