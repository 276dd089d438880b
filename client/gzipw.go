package client

import (
	"bytes"
	"compress/gzip"
	"io"
	"sync"
)

// parallelGzip compresses what is written to it as a series of gzip
// members of blockSize bytes of input each, compressed concurrently on up
// to workers goroutines and written to w in order. Concatenated members
// are one valid gzip file (RFC 1952, section 2.2): gzip -d, zcat and Go's
// gzip.Reader (multistream by default) read them as one stream, each
// member with its own CRC-32 and length.
type parallelGzip struct {
	w         io.Writer
	level     int
	blockSize int
	buf       []byte
	queue     chan *gzBlock // blocks in order, for the writer goroutine
	sem       chan struct{} // bounds blocks being compressed
	done      chan struct{} // the writer goroutine has finished
	err       error         // first error of w, set by the writer goroutine
	errMu     sync.Mutex
	closed    bool
	members   int
}

type gzBlock struct {
	out   bytes.Buffer
	err   error
	ready chan struct{}
}

func newParallelGzip(w io.Writer, level, blockSize, workers int) *parallelGzip {
	workers = max(workers, 1)
	z := &parallelGzip{w: w, level: level, blockSize: blockSize, buf: make([]byte, 0, blockSize),
		queue: make(chan *gzBlock, 2*workers), sem: make(chan struct{}, workers), done: make(chan struct{})}
	go z.writeLoop()
	return z
}

func (z *parallelGzip) writeLoop() {
	defer close(z.done)
	for b := range z.queue {
		<-b.ready
		err := b.err
		if err == nil && z.failed() == nil {
			_, err = z.w.Write(b.out.Bytes())
		}
		if err != nil {
			z.errMu.Lock()
			if z.err == nil {
				z.err = err
			}
			z.errMu.Unlock()
		}
	}
}

func (z *parallelGzip) failed() error {
	z.errMu.Lock()
	defer z.errMu.Unlock()
	return z.err
}

// dispatch compresses the buffered input as one member.
func (z *parallelGzip) dispatch() {
	z.members++
	in := z.buf
	z.buf = make([]byte, 0, z.blockSize)
	b := &gzBlock{ready: make(chan struct{})}
	z.sem <- struct{}{}
	z.queue <- b
	go func() {
		defer func() { <-z.sem }()
		defer close(b.ready)
		b.out.Grow(len(in)/3 + 64)
		zw, err := gzip.NewWriterLevel(&b.out, z.level)
		if err != nil {
			b.err = err
			return
		}
		zw.Write(in)
		b.err = zw.Close()
	}()
}

func (z *parallelGzip) Write(p []byte) (int, error) {
	if err := z.failed(); err != nil {
		return 0, err
	}
	n := len(p)
	for len(p) > 0 {
		k := min(len(p), z.blockSize-len(z.buf))
		z.buf = append(z.buf, p[:k]...)
		p = p[k:]
		if len(z.buf) == z.blockSize {
			z.dispatch()
		}
	}
	return n, nil
}

// Close compresses what remains, waits for every member to be written and
// returns the first error. No input still gives one (empty) member.
func (z *parallelGzip) Close() error {
	if z.closed {
		return z.failed()
	}
	z.closed = true
	if len(z.buf) > 0 || z.members == 0 {
		z.dispatch()
	}
	close(z.queue)
	<-z.done
	return z.failed()
}
