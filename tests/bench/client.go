package bench

import (
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Client measurement modes.
const (
	ModeThroughput = "throughput"
	ModeRTT        = "rtt"
	ModeRate       = "rate"
)

// ClientSpec is one measurement the client runs from the client pod.
type ClientSpec struct {
	Mode     string
	Streams  int           // throughput: parallel connections
	Warmup   time.Duration // throughput, rate: unmeasured lead-in
	Duration time.Duration // throughput, rate: measured window
	Iters    int           // rtt: measured ping-pongs
	Rate     int           // rate: requests per second, open loop
	Conns    int           // rate: persistent connections in the pool
	Size     int           // rate: request and response size in bytes
}

func (s ClientSpec) args(addr string) []string {
	return []string{
		"-addr", addr, "-mode", s.Mode,
		"-streams", fmt.Sprint(s.Streams),
		"-warmup", s.Warmup.String(), "-duration", s.Duration.String(),
		"-iters", fmt.Sprint(s.Iters),
		"-rate", fmt.Sprint(s.Rate), "-conns", fmt.Sprint(s.Conns), "-size", fmt.Sprint(s.Size),
	}
}

// ClientResult is what the client measured.
type ClientResult struct {
	Mode string `json:"mode"`

	// Throughput: bytes written in the measured window and its length.
	// Written bytes equal delivered bytes over a window in steady state,
	// because the pipe is as full at its end as at its start.
	Bytes   int64   `json:"bytes,omitempty"`
	Seconds float64 `json:"seconds,omitempty"`
	// SentTotal is every byte written, warm-up included; ServerTotal is what
	// the server says it read. They are equal or the run fails.
	SentTotal   int64 `json:"sent_total,omitempty"`
	ServerTotal int64 `json:"server_total,omitempty"`

	// RTT and rate: latencies of the measured ping-pongs or requests.
	Latency *Summary `json:"latency,omitempty"`
	// Rate: how late the open-loop schedule fired; a check on the harness
	// itself, since latencies are measured from the scheduled time.
	DispatchLag *Summary `json:"dispatch_lag,omitempty"`
}

func runClient(ctx context.Context, args []string, out *emitter) error {
	fs := flag.NewFlagSet(roleClient, flag.ContinueOnError)
	var s ClientSpec
	addr := fs.String("addr", "", "address to dial")
	fs.StringVar(&s.Mode, "mode", ModeThroughput, "throughput, rtt or rate")
	fs.IntVar(&s.Streams, "streams", 1, "parallel connections (throughput)")
	fs.DurationVar(&s.Warmup, "warmup", time.Second, "unmeasured lead-in")
	fs.DurationVar(&s.Duration, "duration", 5*time.Second, "measured window")
	fs.IntVar(&s.Iters, "iters", 10000, "ping-pongs (rtt)")
	fs.IntVar(&s.Rate, "rate", 1000, "requests per second (rate)")
	fs.IntVar(&s.Conns, "conns", 4, "connection pool size (rate)")
	fs.IntVar(&s.Size, "size", 100, "request and response bytes (rate)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := out.emit(event{Type: evReady}); err != nil {
		return err
	}
	var (
		res *ClientResult
		err error
	)
	switch s.Mode {
	case ModeThroughput:
		res, err = measureThroughput(ctx, *addr, s, out)
	case ModeRTT:
		res, err = measureRTT(ctx, *addr, s)
	case ModeRate:
		res, err = measureRate(ctx, *addr, s, out)
	default:
		err = fmt.Errorf("unknown mode %q", s.Mode)
	}
	if err != nil {
		return err
	}
	return out.emit(event{Type: evResult, Result: res})
}

// dialMode opens a connection and tells the server what to do with it.
func dialMode(ctx context.Context, addr string, mode byte) (net.Conn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	if _, err := c.Write([]byte{mode}); err != nil {
		c.Close()
		return nil, fmt.Errorf("write mode: %w", err)
	}
	return c, nil
}

// dialAll opens n connections in the given mode, or none.
func dialAll(ctx context.Context, addr string, mode byte, n int) ([]net.Conn, error) {
	conns := make([]net.Conn, 0, n)
	for range n {
		c, err := dialMode(ctx, addr, mode)
		if err != nil {
			for _, c := range conns {
				c.Close()
			}
			return nil, err
		}
		conns = append(conns, c)
	}
	return conns, nil
}

// closeOnDone closes conns when ctx ends, which unblocks any read or write
// on them. The returned stop also closes them.
func closeOnDone(ctx context.Context, conns []net.Conn) (stop func()) {
	var once sync.Once
	closeAll := func() {
		once.Do(func() {
			for _, c := range conns {
				c.Close()
			}
		})
	}
	cancel := context.AfterFunc(ctx, closeAll)
	return func() {
		cancel()
		closeAll()
	}
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// measureThroughput writes large buffers on Streams connections to a sink
// for Warmup+Duration and counts the bytes of the measured window.
func measureThroughput(ctx context.Context, addr string, s ClientSpec, out *emitter) (*ClientResult, error) {
	conns, err := dialAll(ctx, addr, modeSink, s.Streams)
	if err != nil {
		return nil, err
	}
	stopClose := closeOnDone(ctx, conns)
	defer stopClose()

	var (
		sent    = make([]atomic.Int64, len(conns))
		stop    atomic.Bool
		wg      sync.WaitGroup
		errsMu  sync.Mutex
		errList []error
	)
	total := func() int64 {
		var n int64
		for i := range sent {
			n += sent[i].Load()
		}
		return n
	}
	for i, c := range conns {
		wg.Go(func() {
			buf := make([]byte, bigBuffer)
			for !stop.Load() {
				n, err := c.Write(buf)
				sent[i].Add(int64(n))
				if err != nil {
					errsMu.Lock()
					errList = append(errList, fmt.Errorf("stream %d: write: %w", i, err))
					errsMu.Unlock()
					return
				}
			}
		})
	}

	window := func() (int64, time.Duration, error) {
		defer stop.Store(true)
		if err := sleepCtx(ctx, s.Warmup); err != nil {
			return 0, 0, err
		}
		t0, b0 := time.Now(), total()
		if err := out.emit(event{Type: evMark, Mark: markStart}); err != nil {
			return 0, 0, err
		}
		if err := sleepCtx(ctx, s.Duration); err != nil {
			return 0, 0, err
		}
		t1, b1 := time.Now(), total()
		return b1 - b0, t1.Sub(t0), out.emit(event{Type: evMark, Mark: markEnd})
	}
	bytes, elapsed, err := window()
	wg.Wait()
	if err != nil {
		return nil, err
	}
	if err := errors.Join(errList...); err != nil {
		return nil, err
	}

	res := &ClientResult{Mode: ModeThroughput, Bytes: bytes, Seconds: elapsed.Seconds(), SentTotal: total()}
	for i, c := range conns {
		got, err := sinkAck(c)
		if err != nil {
			return nil, fmt.Errorf("stream %d: %w", i, err)
		}
		if want := sent[i].Load(); got != want {
			return nil, fmt.Errorf("stream %d: server read %d bytes, client wrote %d", i, got, want)
		}
		res.ServerTotal += got
	}
	return res, nil
}

// sinkAck ends the sending side and reads the sink's byte count.
func sinkAck(c net.Conn) (int64, error) {
	cw, ok := c.(interface{ CloseWrite() error })
	if !ok {
		return 0, errors.New("connection cannot half-close")
	}
	if err := cw.CloseWrite(); err != nil {
		return 0, fmt.Errorf("close write: %w", err)
	}
	// The path drains its buffers first; that takes well under this.
	if err := c.SetReadDeadline(time.Now().Add(30 * time.Second)); err != nil {
		return 0, err
	}
	var ack [8]byte
	if _, err := io.ReadFull(c, ack[:]); err != nil {
		return 0, fmt.Errorf("read sink count: %w", err)
	}
	return int64(binary.BigEndian.Uint64(ack[:])), nil
}

// rttWarmup ping-pongs are not recorded: they fill caches and let the
// scheduler settle.
const rttWarmup = 200

// measureRTT ping-pongs one byte on one persistent connection.
func measureRTT(ctx context.Context, addr string, s ClientSpec) (*ClientResult, error) {
	c, err := dialMode(ctx, addr, modeEcho)
	if err != nil {
		return nil, err
	}
	stop := closeOnDone(ctx, []net.Conn{c})
	defer stop()

	var b [1]byte
	lat := make([]time.Duration, 0, s.Iters)
	for i := range rttWarmup + s.Iters {
		t := time.Now()
		if _, err := c.Write(b[:]); err != nil {
			return nil, fmt.Errorf("ping %d: %w", i, err)
		}
		if _, err := io.ReadFull(c, b[:]); err != nil {
			return nil, fmt.Errorf("pong %d: %w", i, err)
		}
		if i >= rttWarmup {
			lat = append(lat, time.Since(t))
		}
	}
	sum := summarize(lat)
	return &ClientResult{Mode: ModeRTT, Latency: &sum}, nil
}
