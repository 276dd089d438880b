package jcs

import (
	"errors"
	"testing"
)

// FuzzCanonicalize checks, for arbitrary input, that Canonicalize does not
// panic, that every refusal wraps ErrInvalid, and that on success the output
// is valid JSON, a fixed point, and decodes (with encoding/json) to a value
// deeply equal to the input's. Seeds live in testdata/fuzz/FuzzCanonicalize.
func FuzzCanonicalize(f *testing.F) {
	for _, s := range corpus {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		out, err := Canonicalize(in)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error does not wrap ErrInvalid: %v", err)
			}
			if out != nil {
				t.Fatalf("output %q returned with error %v", out, err)
			}
			return
		}
		checkProperties(t, in, out)
	})
}
