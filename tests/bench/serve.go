package bench

import (
	"context"
	"fmt"
	"net"
	"sync"
)

// serve accepts connections on ln until ctx is done and runs handle for each
// in its own goroutine. When it returns, ln and every accepted connection are
// closed and every handler has returned.
func serve(ctx context.Context, ln net.Listener, handle func(net.Conn)) error {
	var (
		wg     sync.WaitGroup
		mu     sync.Mutex
		conns  = map[net.Conn]struct{}{}
		closed bool
	)
	shutdown := func() {
		mu.Lock()
		defer mu.Unlock()
		if closed {
			return
		}
		closed = true
		ln.Close()
		// Closing makes blocked reads and writes in the handlers return.
		for c := range conns {
			c.Close()
		}
	}
	stop := context.AfterFunc(ctx, shutdown)
	defer func() {
		stop()
		shutdown()
		wg.Wait()
	}()

	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("accept on %s: %w", ln.Addr(), err)
		}
		mu.Lock()
		if closed {
			// Accepted just as shutdown ran: it would never be closed.
			mu.Unlock()
			c.Close()
			continue
		}
		conns[c] = struct{}{}
		mu.Unlock()
		wg.Go(func() {
			defer func() {
				mu.Lock()
				delete(conns, c)
				mu.Unlock()
				c.Close()
			}()
			handle(c)
		})
	}
}
