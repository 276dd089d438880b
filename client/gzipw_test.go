package client

import (
	"bytes"
	"compress/gzip"
	"errors"
	"io"
	"math/rand/v2"
	"testing"
)

// TestParallelGzip: the members, concatenated, decompress to the input
// (as one multistream gzip file), for inputs around the block size and
// none at all; a failing writer's error is returned.
func TestParallelGzip(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	for _, n := range []int{0, 1, 999, 1000, 1001, 5000, 64 << 10} {
		in := make([]byte, n)
		for i := range in {
			in[i] = "abcdefgh{}\":,\n"[rng.IntN(14)]
		}
		var out bytes.Buffer
		z := newParallelGzip(&out, gzip.BestSpeed, 1000, 3)
		// Writes of odd sizes.
		for p := in; len(p) > 0; {
			k := min(len(p), 1+rng.IntN(2500))
			if _, err := z.Write(p[:k]); err != nil {
				t.Fatal(err)
			}
			p = p[k:]
		}
		if err := z.Close(); err != nil {
			t.Fatal(err)
		}
		zr, err := gzip.NewReader(&out)
		if err != nil {
			t.Fatalf("%d bytes: %v", n, err)
		}
		got, err := io.ReadAll(zr)
		if err != nil || !bytes.Equal(got, in) {
			t.Fatalf("%d bytes: got %d bytes, %v", n, len(got), err)
		}
	}
	boom := errors.New("disk full")
	z := newParallelGzip(failWriter{boom}, gzip.BestSpeed, 100, 2)
	z.Write(make([]byte, 1000))
	if err := z.Close(); !errors.Is(err, boom) {
		t.Fatalf("Close: %v, want %v", err, boom)
	}
}

type failWriter struct{ err error }

func (w failWriter) Write([]byte) (int, error) { return 0, w.err }
