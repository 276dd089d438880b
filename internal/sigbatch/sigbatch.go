// Package sigbatch verifies many Ed25519 signatures at once.
//
// A batch of n signatures (R_i, s_i) by keys A_i on messages M_i is
// accepted when, for 128-bit scalars z_i drawn at random for that one
// check,
//
//	[8]( [-Σ z_i·s_i]B + Σ [z_i]R_i + Σ [z_i·k_i]A_i ) = identity,
//	k_i = SHA-512(R_i ‖ A_i ‖ M_i) mod ℓ,
//
// computed with one variable-time multiscalar multiplication, in which the
// terms of one key are merged (Σ over the signatures of A of z_i·k_i), so a
// batch of signatures by few keys costs little more than one point
// decompression and about 30 point additions a signature.
//
// # Semantics
//
// The equation is the cofactored one of ZIP-215, and a signature that
// fails in a batch is checked on its own with the same cofactored equation
// ([Verify]), so whether a signature is accepted does not depend on the
// batch it is in (except with probability about 2^-128). On top of ZIP-215,
// encodings must be canonical: s < ℓ, and R and A each the one canonical
// encoding of a point (y < p, and no sign bit on x = 0). The accepted set
// therefore differs from crypto/ed25519's (RFC 8032, cofactorless) only by
//
//   - signatures whose R or A has a small-order component chosen so that
//     the cofactorless equation fails but the cofactored one holds: they
//     are accepted here and refused by crypto/ed25519; no honest signer
//     makes them;
//   - keys A encoded non-canonically (crypto/ed25519 decodes them, this
//     package refuses them).
//
// Callers that need crypto/ed25519's exact rule use it instead.
package sigbatch

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha512"

	"filippo.io/edwards25519"
)

// Batch collects signatures to verify together. The zero value is empty
// and ready; a Batch is not safe for concurrent use (use one per
// goroutine).
type Batch struct {
	sigs []pending
	// scratch of verifyBatch: the distinct keys and their scalars
	keys   map[[32]byte]int
	keyPts []*edwards25519.Point
	keySc  []*edwards25519.Scalar
}

type pending struct {
	pub []byte
	msg []byte
	sig []byte
}

// Len is the number of signatures added since the last Reset.
func (b *Batch) Len() int { return len(b.sigs) }

// Add queues the signature sig of msg by pub. The slices are kept, not
// copied, until Reset: they must not change before then.
func (b *Batch) Add(pub ed25519.PublicKey, msg, sig []byte) {
	b.sigs = append(b.sigs, pending{pub: pub, msg: msg, sig: sig})
}

// Reset empties the batch, keeping its memory.
func (b *Batch) Reset() {
	clear(b.sigs)
	b.sigs = b.sigs[:0]
}

// Verify checks every queued signature. It returns -1 when all are valid,
// else the position (in the order of Add) of the first invalid one.
func (b *Batch) Verify() int {
	if len(b.sigs) == 0 {
		return -1
	}
	if len(b.sigs) == 1 {
		if !Verify(b.sigs[0].pub, b.sigs[0].msg, b.sigs[0].sig) {
			return 0
		}
		return -1
	}
	if b.verifyBatch() {
		return -1
	}
	for i, s := range b.sigs {
		if !Verify(s.pub, s.msg, s.sig) {
			return i
		}
	}
	// Every signature is valid on its own, so the batch equation holds
	// too (the cofactor clears any small-order part); reaching here means
	// a bug, and refusing is the safe answer.
	return 0
}

// verifyBatch evaluates the batch equation; false if it fails or if any
// encoding is invalid.
func (b *Batch) verifyBatch() bool {
	n := len(b.sigs)
	if b.keys == nil {
		b.keys = make(map[[32]byte]int)
	}
	clear(b.keys)
	b.keyPts = b.keyPts[:0]
	b.keySc = b.keySc[:0]

	zs := make([]byte, 16*n)
	rand.Read(zs)
	rs := make([]edwards25519.Point, n)
	zsc := make([]edwards25519.Scalar, n)
	var bScalar, s, k, zk edwards25519.Scalar
	var wide, digest [64]byte
	h := sha512.New()
	for i, sg := range b.sigs {
		if len(sg.pub) != ed25519.PublicKeySize || len(sg.sig) != ed25519.SignatureSize {
			return false
		}
		if _, err := s.SetCanonicalBytes(sg.sig[32:]); err != nil {
			return false
		}
		if !decodeCanonical(&rs[i], sg.sig[:32]) {
			return false
		}
		key := [32]byte(sg.pub)
		ki, ok := b.keys[key]
		if !ok {
			p := new(edwards25519.Point)
			if !decodeCanonical(p, sg.pub) {
				return false
			}
			ki = len(b.keyPts)
			b.keys[key] = ki
			b.keyPts = append(b.keyPts, p)
			b.keySc = append(b.keySc, edwards25519.NewScalar())
		}
		h.Reset()
		h.Write(sg.sig[:32])
		h.Write(sg.pub)
		h.Write(sg.msg)
		k.SetUniformBytes(h.Sum(digest[:0]))

		copy(wide[:16], zs[16*i:16*i+16]) // wide[16:] stays zero: z < 2^128 < ℓ
		z := &zsc[i]
		z.SetUniformBytes(wide[:])
		bScalar.MultiplyAdd(z, &s, &bScalar)
		zk.Multiply(z, &k)
		b.keySc[ki].Add(b.keySc[ki], &zk)
	}
	bScalar.Negate(&bScalar)

	// B, the keys, then the R_i.
	m := 1 + len(b.keyPts) + n
	scalars := make([]*edwards25519.Scalar, 0, m)
	points := make([]*edwards25519.Point, 0, m)
	scalars = append(scalars, &bScalar)
	points = append(points, edwards25519.NewGeneratorPoint())
	scalars = append(scalars, b.keySc...)
	points = append(points, b.keyPts...)
	for i := range rs {
		scalars = append(scalars, &zsc[i])
		points = append(points, &rs[i])
	}
	var sum edwards25519.Point
	sum.VarTimeMultiScalarMult(scalars, points)
	sum.MultByCofactor(&sum)
	return sum.Equal(edwards25519.NewIdentityPoint()) == 1
}

// Verify checks one signature with the cofactored equation
// [8][s]B = [8]R + [8][k]A and the canonical encodings the package
// requires. It accepts exactly the signatures a Batch accepts.
func Verify(pub ed25519.PublicKey, msg, sig []byte) bool {
	if len(pub) != ed25519.PublicKeySize || len(sig) != ed25519.SignatureSize {
		return false
	}
	var s edwards25519.Scalar
	if _, err := s.SetCanonicalBytes(sig[32:]); err != nil {
		return false
	}
	var r, a edwards25519.Point
	if !decodeCanonical(&r, sig[:32]) || !decodeCanonical(&a, pub) {
		return false
	}
	h := sha512.New()
	h.Write(sig[:32])
	h.Write(pub)
	h.Write(msg)
	var digest [64]byte
	var k edwards25519.Scalar
	k.SetUniformBytes(h.Sum(digest[:0]))
	// R' = [s]B - [k]A; accept when [8](R' - R) is the identity.
	a.Negate(&a)
	var rr edwards25519.Point
	rr.VarTimeDoubleScalarBaseMult(&k, &a, &s)
	rr.Subtract(&rr, &r)
	rr.MultByCofactor(&rr)
	return rr.Equal(edwards25519.NewIdentityPoint()) == 1
}

// decodeCanonical decodes the canonical encoding of a point into p: the
// little-endian y below p = 2^255-19, and no sign bit when x = 0 (y = ±1).
func decodeCanonical(p *edwards25519.Point, enc []byte) bool {
	if len(enc) != 32 || !canonicalY(enc) {
		return false
	}
	if _, err := p.SetBytes(enc); err != nil {
		return false
	}
	if enc[31]&0x80 != 0 && (isOne(enc) || isMinusOne(enc)) {
		return false // x = 0 with the sign bit set
	}
	return true
}

// canonicalY reports whether the 255-bit y of enc is below 2^255-19.
func canonicalY(enc []byte) bool {
	if enc[31]&0x7f != 0x7f {
		return true
	}
	for i := 30; i >= 1; i-- {
		if enc[i] != 0xff {
			return true
		}
	}
	return enc[0] < 0xed
}

// isOne: y = 1, ignoring the sign bit.
func isOne(enc []byte) bool {
	if enc[0] != 1 || enc[31]&0x7f != 0 {
		return false
	}
	for _, c := range enc[1:31] {
		if c != 0 {
			return false
		}
	}
	return true
}

// isMinusOne: y = p-1 = 2^255-20, ignoring the sign bit.
func isMinusOne(enc []byte) bool {
	if enc[0] != 0xec || enc[31]&0x7f != 0x7f {
		return false
	}
	for _, c := range enc[1:31] {
		if c != 0xff {
			return false
		}
	}
	return true
}
