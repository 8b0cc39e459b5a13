package sockio

import (
	"io"
	"sync"
)

// Copy copies src to dst until src's end, as io.Copy does (nil at the
// end). Between two bare TCP sockets it reads and writes through Sock, so
// that a request or a response costs no wake-up of the runtime's sysmon;
// once a read fills its buffer, which a bulk transfer does, the next
// spliceBurst bytes go through io.Copy, which splices them from socket to
// socket in the kernel, and then it reads small again. Anything else is
// io.Copy.
func Copy(dst io.Writer, src io.Reader) (int64, error) {
	ds, ss := Of(dst), Of(src)
	if ds == nil || ss == nil {
		return io.Copy(dst, src)
	}
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	buf := *bp
	var total int64
	for {
		n, err := ss.Read(buf)
		if n > 0 {
			w, werr := ds.Write(buf[:n])
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
		if n == len(buf) {
			k, err := io.CopyN(ds.tc, ss.tc, spliceBurst)
			total += k
			if err == io.EOF {
				return total, nil
			}
			if err != nil {
				return total, err
			}
		}
	}
}

const (
	// copyBufLen is what Copy reads at a time before it splices: more
	// than a request or response usually is, less than what bulk
	// transfers read.
	copyBufLen = 16 << 10
	// spliceBurst is what Copy splices before it reads small again.
	spliceBurst = 4 << 20
)

var copyBufs = sync.Pool{New: func() any { b := make([]byte, copyBufLen); return &b }}
