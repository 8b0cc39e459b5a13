package hbone

import (
	"context"
	"fmt"
	"io"
	"net"
	"time"

	"golang.org/x/net/http2"
)

// prefaceTimeout bounds how long a connection may take to start HTTP/2.
const prefaceTimeout = 10 * time.Second

// Serve runs the server side of HBONE on an established connection (TLS,
// handshake done) until the connection ends, calling handle in a new
// goroutine for every CONNECT stream. handle must Respond, then carry the
// tunnel, and Close the stream when done. When ctx is cancelled the peer is
// told to open no more streams (GOAWAY); streams in flight carry on until
// they end or the caller closes nc.
func Serve(ctx context.Context, nc net.Conn, handle func(*Stream)) error {
	_ = nc.SetReadDeadline(time.Now().Add(prefaceTimeout))
	preface := make([]byte, len(http2.ClientPreface))
	if _, err := io.ReadFull(nc, preface); err != nil {
		_ = nc.Close()
		return fmt.Errorf("hbone: read client preface: %w", err)
	}
	if string(preface) != http2.ClientPreface {
		_ = nc.Close()
		return fmt.Errorf("hbone: bad client preface %q", preface)
	}
	_ = nc.SetReadDeadline(time.Time{})
	c := newConn(nc, true)
	c.newStream = handle
	if err := c.start(); err != nil {
		return err
	}
	select {
	case <-c.done:
	case <-ctx.Done():
		c.drain()
		<-c.done
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err == ErrConnClosed {
		return nil
	}
	return c.err
}

// drain refuses new streams and closes the connection once the last stream
// has ended.
func (c *conn) drain() {
	c.mu.Lock()
	c.goingAway = true
	last := c.lastPeerID
	c.mu.Unlock()
	_ = c.write(func() error { return c.fr.WriteGoAway(last, http2.ErrCodeNo, nil) })
	go func() {
		c.mu.Lock()
		for len(c.streams) > 0 && c.err == nil {
			c.sendCond.Wait()
		}
		c.mu.Unlock()
		c.close(ErrConnClosed)
	}()
}
