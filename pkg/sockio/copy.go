package sockio

import (
	"io"
	"sync"
)

// Copy copies src to dst until src's end, as io.Copy does (nil at the
// end). Between two bare TCP sockets it reads and writes through Sock, so
// that a request or a response costs no wake-up of the runtime's sysmon,
// and a connection waiting for its peer holds no buffer (ReadPooled). When
// a read fills its buffer and the socket holds at least as much again, a
// bulk transfer is under way: what it holds is spliced from socket to
// socket in the kernel (io.CopyN), and Copy reads again. Anything else is
// io.Copy.
func Copy(dst io.Writer, src io.Reader) (int64, error) {
	ds, ss := Of(dst), Of(src)
	if ds == nil || ss == nil {
		return io.Copy(dst, src)
	}
	var total int64
	for {
		bp, n, err := ss.ReadPooled(&copyBufs, 0)
		if n > 0 {
			w, werr := ds.Write((*bp)[:n])
			putPooled(&copyBufs, bp)
			total += int64(w)
			if werr != nil {
				return total, werr
			}
		}
		if err == io.EOF {
			return total, nil
		}
		if err != nil {
			return total, err
		}
		if n < copyBufLen {
			continue
		}
		// Splice only what is there: never wait in the kernel's copy
		// for more, which would keep the small messages after a burst
		// on the splice path too.
		if q := ss.queued(); q >= copyBufLen {
			k, err := io.CopyN(ds.tc, ss.tc, int64(q))
			total += k
			if testHookSplice != nil {
				testHookSplice(k)
			}
			if err == io.EOF {
				return total, nil
			}
			if err != nil {
				return total, err
			}
		}
	}
}

// copyBufLen is what Copy reads at a time: more than a request or a
// response usually is, little enough that bulk goes to the splice soon.
const copyBufLen = 16 << 10

var copyBufs = sync.Pool{New: func() any { b := make([]byte, copyBufLen); return &b }}

// testHookSplice, when set, is told how many bytes each splice moved.
var testHookSplice func(n int64)
