package bench

import (
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
)

// The client picks what the server does with a connection by its first byte.
const (
	// modeSink: read until EOF, then answer with the number of bytes read
	// (8 bytes, big endian), so the client can check that every byte it
	// wrote crossed the path.
	modeSink byte = 'S'
	// modeEcho: write back whatever arrives, for ping-pong and requests.
	modeEcho byte = 'E'
)

// bigBuffer is the size of the large reads and writes of the throughput
// runs: big enough that per-call overhead does not limit the rate.
const bigBuffer = 256 << 10

func runServer(ctx context.Context, args []string, out *emitter) error {
	fs := flag.NewFlagSet(roleServer, flag.ContinueOnError)
	listen := fs.String("listen", "", "address to listen on")
	if err := fs.Parse(args); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	if err := out.emit(event{Type: evReady, Addr: ln.Addr().String()}); err != nil {
		ln.Close()
		return err
	}
	return serve(ctx, ln, func(c net.Conn) {
		serveConn(c, func(r ConnReport) { _ = out.emit(event{Type: evConn, Conn: &r}) })
	})
}

// serveConn handles one connection in the mode its first byte names and
// hands report what it saw. A sink connection is reported before its answer
// is written, so the report is out by the time the client has its figures.
func serveConn(c net.Conn, report func(ConnReport)) {
	r := ConnReport{Remote: c.RemoteAddr().String()}
	var mode [1]byte
	if _, err := io.ReadFull(c, mode[:]); err != nil {
		return
	}
	switch mode[0] {
	case modeSink:
		r.Mode = "sink"
		buf := make([]byte, bigBuffer)
		for {
			n, err := c.Read(buf)
			r.BytesIn += int64(n)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return
			}
		}
		report(r)
		var ack [8]byte
		binary.BigEndian.PutUint64(ack[:], uint64(r.BytesIn))
		_, _ = c.Write(ack[:])
	case modeEcho:
		r.Mode = "echo"
		buf := make([]byte, 64<<10)
		for {
			n, err := c.Read(buf)
			r.BytesIn += int64(n)
			if n > 0 {
				w, werr := c.Write(buf[:n])
				r.BytesOut += int64(w)
				if werr != nil {
					break
				}
			}
			if err != nil {
				break
			}
		}
		report(r)
	}
}
