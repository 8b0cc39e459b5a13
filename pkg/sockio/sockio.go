// Package sockio does a proxy's per-message socket I/O on bare TCP sockets
// without the Go runtime's system-call entry (see Sock).
package sockio

import (
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// Sock does the socket I/O of a relay on a bare TCP socket without the
// runtime's system-call entry (see raw_norace.go).
//
// Why: the Go runtime enters an ordinary system call through
// entersyscall, which wakes the sysmon thread whenever sysmon has parked
// itself because every P was idle. A proxy relaying requests and
// responses goes idle between messages, so nearly every message paid a
// futex wake of sysmon first, often of another CPU, before its read or
// write could start: on a virtual machine, an interprocessor interrupt
// costing tens of microseconds of the message's latency and CPU. Each call
// here is non-blocking (MSG_DONTWAIT, whatever mode the socket is in), so
// it returns at once or with EAGAIN, and the poller does the waiting, as
// it does for net.Conn: the runtime loses nothing by the call keeping its
// P. A call that blocked while keeping its P would stall the runtime.
//
// Errors are those net.Conn returns: io.EOF at the end, a *net.OpError
// otherwise, of a "read" or a "write", with deadlines and closing reported
// as net.Conn reports them. A read (Read, ReadPooled, WaitReadable) may run
// beside a write (Write, WriteBuffers, WriteNow), but not beside another
// read, nor a write beside another write.
type Sock struct {
	tc *net.TCPConn
	rc syscall.RawConn
	// The state of the read in progress and of the write in progress,
	// with the functions the poller calls, bound once: an operation
	// allocates nothing, where closures would allocate on every message.
	r, w     sockOp
	readFn   func(uintptr) bool
	pooledFn func(uintptr) bool
	peekFn   func(uintptr) bool
	inqFn    func(uintptr)
	writeFn  func(uintptr) bool
	writevFn func(uintptr) bool
	nowFn    func(uintptr) bool
}

// sockOp is one operation's arguments and outcome.
type sockOp struct {
	p     []byte
	pool  *sync.Pool // ReadPooled's buffers
	bp    *[]byte    // the one it holds, from pool
	off   int        // where in it the read goes
	bufs  [][]byte
	iov   []unix.Iovec
	n     int
	total int64
	errno syscall.Errno
	// peeked is set once a peek found nothing; short once a write took
	// nothing without saying why.
	peeked, short bool
}

// Of returns the Sock of a bare TCP connection, or nil for anything
// else, which is then used through its own methods: a wrapper may buffer
// or count bytes the socket does not show, and a file may block.
func Of(x any) *Sock {
	tc, ok := x.(*net.TCPConn)
	if !ok {
		return nil
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return nil
	}
	s := &Sock{tc: tc, rc: rc}
	s.readFn, s.pooledFn, s.peekFn, s.inqFn = s.read, s.readPooled, s.peek, s.inq
	s.writeFn, s.writevFn, s.nowFn = s.write, s.writev, s.writeSome
	return s
}

func (s *Sock) opError(op, call string, errno syscall.Errno) error {
	return &net.OpError{Op: op, Net: "tcp", Source: s.tc.LocalAddr(), Addr: s.tc.RemoteAddr(), Err: os.NewSyscallError(call, errno)}
}

// pollError is err from RawConn (a deadline, a closed socket) as net.Conn
// would give it: the operation is op, not RawConn's "raw-" op.
func pollError(op string, err error) error {
	var oe *net.OpError
	if errors.As(err, &oe) && strings.HasPrefix(oe.Op, "raw-") {
		e := *oe
		e.Op = op
		return &e
	}
	return err
}

// Read reads what the socket has, waiting for bytes if it has none.
func (s *Sock) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return s.tc.Read(p) // what net.Conn says of an empty read
	}
	o := &s.r
	*o = sockOp{p: p}
	err := s.rc.Read(s.readFn)
	n, errno := o.n, o.errno
	o.p = nil
	switch {
	case err != nil:
		return 0, pollError("read", err)
	case errno != 0:
		return 0, s.opError("read", "read", errno)
	case n == 0:
		return 0, io.EOF
	}
	return n, nil
}

func (s *Sock) read(fd uintptr) bool {
	o := &s.r
	o.n, o.errno = sysRead(fd, o.p)
	return o.errno != syscall.EAGAIN
}

// ReadPooled is Read into a buffer of pool's, at off, that it takes only
// once the socket has bytes: a connection waiting for its peer holds no
// buffer, however large the last one was. It returns the buffer, which
// the caller puts back, and how much it read after off; with nothing read
// it returns no buffer. It makes the system calls Read would.
func (s *Sock) ReadPooled(pool *sync.Pool, off int) (*[]byte, int, error) {
	o := &s.r
	*o = sockOp{pool: pool, off: off}
	err := s.rc.Read(s.pooledFn)
	bp, n, errno := o.bp, o.n, o.errno
	o.bp, o.pool = nil, nil
	if n <= 0 && bp != nil {
		putPooled(pool, bp)
		bp = nil
	}
	switch {
	case err != nil:
		return nil, 0, pollError("read", err)
	case errno != 0:
		return nil, 0, s.opError("read", "read", errno)
	case n == 0:
		return nil, 0, io.EOF
	}
	return bp, n, nil
}

func (s *Sock) readPooled(fd uintptr) bool {
	o := &s.r
	if o.bp == nil {
		o.bp = o.pool.Get().(*[]byte)
		if testHookPooled != nil {
			testHookPooled(1)
		}
	}
	o.n, o.errno = sysRead(fd, (*o.bp)[o.off:])
	if o.errno == syscall.EAGAIN {
		// Nothing yet: wait for the peer holding no buffer.
		putPooled(o.pool, o.bp)
		o.bp = nil
		return false
	}
	return true
}

// putPooled puts back a buffer ReadPooled took.
func putPooled(pool *sync.Pool, bp *[]byte) {
	pool.Put(bp)
	if testHookPooled != nil {
		testHookPooled(-1)
	}
}

// testHookPooled, when set, is told of each buffer ReadPooled takes (+1)
// and of each put back by ReadPooled or Copy (-1).
var testHookPooled func(delta int)

// queued returns how many bytes the socket has received that are not read
// yet (0 if it cannot tell). Like a read, it may not run beside another.
func (s *Sock) queued() int {
	o := &s.r
	*o = sockOp{}
	if s.rc.Control(s.inqFn) != nil || o.errno != 0 {
		return 0
	}
	return o.n
}

func (s *Sock) inq(fd uintptr) {
	o := &s.r
	o.n, o.errno = sysInq(fd)
}

// WaitReadable waits until the socket has bytes to read, an end or an
// error, taking nothing from it. An error the peek took from the socket (a
// reset, say) is returned: the read after it would see only the end.
func (s *Sock) WaitReadable() error {
	o := &s.r
	*o = sockOp{}
	err := s.rc.Read(s.peekFn)
	if err != nil {
		return pollError("read", err)
	}
	if o.errno != 0 {
		return s.opError("read", "recvfrom", o.errno)
	}
	return nil
}

func (s *Sock) peek(fd uintptr) bool {
	o := &s.r
	if o.peeked {
		o.errno = 0
		return true // woken by the poller: the read follows
	}
	o.peeked = true
	o.errno = sysPeek(fd)
	return o.errno != syscall.EAGAIN
}

// Write writes all of p, waiting for room in the socket as needed.
func (s *Sock) Write(p []byte) (int, error) {
	o := &s.w
	*o = sockOp{p: p, iov: o.iov}
	err := s.rc.Write(s.writeFn)
	o.p = nil
	return o.n, s.writeErr("write", err)
}

// writeErr is a write's error: the poller's (a deadline, a closed
// socket), else the system call's, else a write that took nothing.
func (s *Sock) writeErr(call string, err error) error {
	o := &s.w
	switch {
	case err != nil:
		return pollError("write", err)
	case o.errno != 0:
		return s.opError("write", call, o.errno)
	case o.short:
		return io.ErrShortWrite
	}
	return nil
}

func (s *Sock) write(fd uintptr) bool {
	o := &s.w
	for o.n < len(o.p) {
		k, errno := sysWrite(fd, o.p[o.n:])
		o.errno = errno
		if errno != 0 {
			return errno != syscall.EAGAIN
		}
		if k == 0 {
			o.short = true
			return true
		}
		o.n += k
	}
	return true
}

// maxIovecs bounds one writev (the kernel's IOV_MAX).
const maxIovecs = 1024

// WriteBuffers writes all of bufs, consuming them, with as few system
// calls as the socket allows, waiting for room as needed.
func (s *Sock) WriteBuffers(bufs [][]byte) (int64, error) {
	o := &s.w
	*o = sockOp{bufs: bufs, iov: o.iov}
	err := s.rc.Write(s.writevFn)
	o.bufs = nil
	clear(o.iov[:cap(o.iov)])
	return o.total, s.writeErr("writev", err)
}

func (s *Sock) writev(fd uintptr) bool {
	o := &s.w
	for {
		for len(o.bufs) > 0 && len(o.bufs[0]) == 0 {
			o.bufs = o.bufs[1:]
		}
		if len(o.bufs) == 0 {
			return true
		}
		o.iov = o.iov[:0]
		for _, b := range o.bufs {
			if len(o.iov) == maxIovecs {
				break
			}
			if len(b) > 0 {
				v := unix.Iovec{Base: &b[0]}
				v.SetLen(len(b))
				o.iov = append(o.iov, v)
			}
		}
		n, errno := sysWritev(fd, o.iov)
		o.errno = errno
		if errno != 0 {
			return errno != syscall.EAGAIN
		}
		if n == 0 {
			o.short = true
			return true
		}
		o.total += int64(n)
		for n > 0 {
			k := min(n, len(o.bufs[0]))
			o.bufs[0] = o.bufs[0][k:]
			n -= k
			if len(o.bufs[0]) == 0 {
				o.bufs = o.bufs[1:]
			}
		}
	}
}

// WriteNow writes as much of p as the socket takes without waiting, and
// returns how much that was. It is a write like the others: not beside
// one.
func (s *Sock) WriteNow(p []byte) int {
	o := &s.w
	*o = sockOp{p: p, iov: o.iov}
	_ = s.rc.Write(s.nowFn)
	o.p = nil
	return o.n
}

func (s *Sock) writeSome(fd uintptr) bool {
	o := &s.w
	for o.n < len(o.p) {
		k, errno := sysWrite(fd, o.p[o.n:])
		if errno != 0 || k <= 0 {
			break
		}
		o.n += k
	}
	return true // never wait
}
