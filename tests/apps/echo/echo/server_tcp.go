package echo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"
)

// tcpServer greets each connection with one line naming the workload and the
// client it sees, then echoes every byte back until the client stops sending.
type tcpServer struct {
	ln  net.Listener
	id  Identity
	log *slog.Logger

	acceptDone chan struct{}
	handlers   sync.WaitGroup // only the accept loop adds to it

	mu    sync.Mutex
	conns map[net.Conn]struct{}
}

func newTCPServer(ln net.Listener, id Identity, log *slog.Logger) *tcpServer {
	return &tcpServer{
		ln:         ln,
		id:         id,
		log:        log,
		acceptDone: make(chan struct{}),
		conns:      map[net.Conn]struct{}{},
	}
}

func (t *tcpServer) serve() error {
	defer close(t.acceptDone)
	for {
		c, err := t.ln.Accept()
		if errors.Is(err, net.ErrClosed) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("accept tcp: %w", err)
		}
		t.track(c, true)
		t.handlers.Go(func() {
			defer t.track(c, false)
			t.handle(c)
		})
	}
}

func (t *tcpServer) shutdown(ctx context.Context) {
	t.ln.Close()
	// Once the accept loop is gone nothing adds handlers, so waiting is safe.
	<-t.acceptDone
	done := make(chan struct{})
	go func() {
		t.handlers.Wait()
		close(done)
	}()
	select {
	case <-done:
		return
	case <-ctx.Done():
	}
	t.mu.Lock()
	for c := range t.conns {
		c.Close()
	}
	t.mu.Unlock()
	<-done
}

func (t *tcpServer) track(c net.Conn, add bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if add {
		t.conns[c] = struct{}{}
	} else {
		delete(t.conns, c)
	}
}

func (t *tcpServer) handle(c net.Conn) {
	defer c.Close()
	start := time.Now()
	client := c.RemoteAddr().String()
	n, err := t.echo(c, client)
	attrs := []any{"client", client, "bytes", n, "durationMs", millis(time.Since(start))}
	if err != nil {
		attrs = append(attrs, "error", err.Error())
	}
	t.log.Info("tcp connection", attrs...)
}

func (t *tcpServer) echo(c net.Conn, client string) (int64, error) {
	_, err := fmt.Fprintf(c, "pod=%s namespace=%s version=%s client=%s\n",
		t.id.Pod, t.id.Namespace, t.id.Version, client)
	if err != nil {
		return 0, fmt.Errorf("write greeting: %w", err)
	}
	// Hide the conn's ReaderFrom/WriterTo so the copy is a plain read/write
	// loop: bytes go back as they arrive instead of through splice tricks.
	n, err := io.CopyBuffer(struct{ io.Writer }{c}, struct{ io.Reader }{c}, make([]byte, 32<<10))
	if err != nil {
		return n, fmt.Errorf("echo: %w", err)
	}
	return n, nil
}
