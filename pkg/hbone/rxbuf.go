package hbone

import (
	"net"
	"sync"
)

// rxChunkSize is the size of the pieces a stream's receive buffer is made
// of.
const rxChunkSize = 64 << 10

// maxStreamBuf bounds the memory a stream's buffer holds: flow control
// keeps committed and pending bytes within the stream window, and the
// first chunk may be partly read.
const maxStreamBuf = streamWindow + rxChunkSize

var rxChunks = sync.Pool{New: func() any { b := make([]byte, rxChunkSize); return &b }}

// rxBuf holds a stream's received bytes until they are read: a queue of
// fixed-size chunks shared by all streams through a pool. A chunk goes back
// to the pool as soon as all of it is read, and the next one comes from
// there, so a stream whose reader keeps up cycles through a few chunks that
// are still in the CPU's caches, however much passes through, and an idle
// stream holds none. Bytes never move once received.
//
// The bytes are, in order from chunks[0][head]: n committed bytes, which
// the stream's consumer may read, then pending bytes reserved by the
// connection's reader, which it is filling with the lock released.
//
// Chunks go back to the pool only when all of their bytes were consumed
// (consume), or when no byte of them was committed or is pending
// (abandon): the views WriteTo writes from with the lock released, and the
// room the reader fills, stay valid. The stream lets one consumer at a
// time take views or read (Stream.consuming).
type rxBuf struct {
	chunks  []*[]byte
	head    int // read offset in chunks[0]
	n       int // committed, unread bytes
	pending int // reserved bytes being filled after them
}

// held is how much memory the buffer holds.
func (b *rxBuf) held() int { return len(b.chunks) * rxChunkSize }

// reserve makes room for k more bytes after the committed and pending ones
// and appends it to dst, as one slice per chunk it spans. The caller fills
// all of it, then commits or abandons it.
func (b *rxBuf) reserve(k int, dst [][]byte) [][]byte {
	at := b.head + b.n + b.pending
	for len(b.chunks)*rxChunkSize < at+k {
		b.chunks = append(b.chunks, rxChunks.Get().(*[]byte))
	}
	b.pending += k
	for k > 0 {
		c, off := at/rxChunkSize, at%rxChunkSize
		m := min(k, rxChunkSize-off)
		dst = append(dst, (*b.chunks[c])[off:off+m])
		at += m
		k -= m
	}
	return dst
}

// commit makes k filled bytes of the reserved ones readable.
func (b *rxBuf) commit(k int) {
	b.pending -= k
	b.n += k
}

// abandon gives up k reserved bytes that will never be read (their stream
// was reset while they were filled) and gives back the chunks past the
// bytes still in use.
func (b *rxBuf) abandon(k int) {
	b.pending -= k
	if b.n == 0 && b.pending == 0 {
		b.consume(0) // nothing left: every chunk goes back
		return
	}
	used := (b.head + b.n + b.pending + rxChunkSize - 1) / rxChunkSize
	for _, c := range b.chunks[used:] {
		rxChunks.Put(c)
	}
	clear(b.chunks[used:])
	b.chunks = b.chunks[:used]
}

// push appends p, committed.
func (b *rxBuf) push(p []byte) {
	var segs [4][]byte
	off := 0
	for _, d := range b.reserve(len(p), segs[:0]) {
		off += copy(d, p[off:])
	}
	b.commit(len(p))
}

// views appends the committed bytes to dst, one slice per chunk.
func (b *rxBuf) views(dst net.Buffers) net.Buffers {
	at, k := b.head, b.n
	for c := 0; k > 0; c++ {
		m := min(k, rxChunkSize-at)
		dst = append(dst, (*b.chunks[c])[at:at+m])
		at = 0
		k -= m
	}
	return dst
}

// read copies committed bytes into p and consumes them.
func (b *rxBuf) read(p []byte) int {
	at, k, done := b.head, min(b.n, len(p)), 0
	for c := 0; done < k; c++ {
		done += copy(p[done:k], (*b.chunks[c])[at:])
		at = 0
	}
	b.consume(k)
	return k
}

// consume drops k read bytes and gives back every chunk now wholly read.
// A buffer with nothing committed or pending gives back all of its chunks.
func (b *rxBuf) consume(k int) {
	if k > b.n {
		// Two consumers at once; Stream.consuming prevents it.
		panic("hbone: consumed more than was received")
	}
	b.head += k
	b.n -= k
	if b.n == 0 && b.pending == 0 {
		for _, c := range b.chunks {
			rxChunks.Put(c)
		}
		clear(b.chunks)
		b.chunks = b.chunks[:0]
		b.head = 0
		return
	}
	drop := b.head / rxChunkSize
	if drop == 0 {
		return
	}
	for _, c := range b.chunks[:drop] {
		rxChunks.Put(c)
	}
	rest := copy(b.chunks, b.chunks[drop:])
	clear(b.chunks[rest:])
	b.chunks = b.chunks[:rest]
	b.head -= drop * rxChunkSize
}
