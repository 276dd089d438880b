package sigbatch

import (
	"crypto/ed25519"
	"crypto/sha512"
	"encoding/hex"
	"fmt"
	mrand "math/rand/v2"
	"testing"

	"filippo.io/edwards25519"
)

func key(t testing.TB, seed byte) ed25519.PrivateKey {
	t.Helper()
	var s [32]byte
	s[0] = seed
	return ed25519.NewKeyFromSeed(s[:])
}

func mustHex(s string) []byte {
	b, err := hex.DecodeString(s)
	if err != nil {
		panic(err)
	}
	return b
}

// The eight points of order dividing 8, canonically encoded.
var smallOrder = []string{
	"0100000000000000000000000000000000000000000000000000000000000000", // identity
	"ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f", // order 2
	"0000000000000000000000000000000000000000000000000000000000000000", // order 4
	"0000000000000000000000000000000000000000000000000000000000000080", // order 4
	"26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05", // order 8
	"26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85",
	"c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",
	"c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa",
}

// ell is the group order ℓ, little-endian.
var ell = mustHex("edd3f55c1a631258d69cf7a2def9de1400000000000000000000000000000010")

type sigCase struct {
	pub      ed25519.PublicKey
	msg, sig []byte
}

// stdlib is crypto/ed25519's answer (which panics on a key of the wrong size).
func (c sigCase) stdlib() bool {
	return len(c.pub) == ed25519.PublicKeySize && ed25519.Verify(c.pub, c.msg, c.sig)
}

func batchOf(cs ...sigCase) *Batch {
	var b Batch
	for _, c := range cs {
		b.Add(c.pub, c.msg, c.sig)
	}
	return &b
}

// signWith signs msg with the secret scalar of priv and the nonce point
// R = [r]B + T (T of small order): a signature that holds with the
// cofactored equation and, for T ≠ identity, fails the cofactorless one.
func signWith(priv ed25519.PrivateKey, msg []byte, r uint64, torsion []byte) []byte {
	hs := sha512.Sum512(priv.Seed())
	a, _ := edwards25519.NewScalar().SetBytesWithClamping(hs[:32])
	var rb [64]byte
	for i := range 8 {
		rb[i] = byte(r >> (8 * i))
	}
	rs, _ := edwards25519.NewScalar().SetUniformBytes(rb[:])
	R := new(edwards25519.Point).ScalarBaseMult(rs)
	T, err := new(edwards25519.Point).SetBytes(torsion)
	if err != nil {
		panic(err)
	}
	R.Add(R, T)
	h := sha512.New()
	h.Write(R.Bytes())
	h.Write(priv.Public().(ed25519.PublicKey))
	h.Write(msg)
	k, _ := edwards25519.NewScalar().SetUniformBytes(h.Sum(nil))
	s := edwards25519.NewScalar().MultiplyAdd(k, a, rs)
	return append(R.Bytes(), s.Bytes()...)
}

func TestVectors(t *testing.T) {
	k1, k2 := key(t, 1), key(t, 2)
	msg := []byte("vellum/v1/event\nbilling\n{}")
	good := sigCase{k1.Public().(ed25519.PublicKey), msg, ed25519.Sign(k1, msg)}
	other := sigCase{k2.Public().(ed25519.PublicKey), []byte("another"), ed25519.Sign(k2, []byte("another"))}
	mod := func(c sigCase, f func(*sigCase)) sigCase {
		c.pub, c.msg, c.sig = append(ed25519.PublicKey(nil), c.pub...), append([]byte(nil), c.msg...), append([]byte(nil), c.sig...)
		f(&c)
		return c
	}
	// s + ℓ: the same signature with a non-canonical s.
	sPlusL := mod(good, func(c *sigCase) {
		var carry uint16
		for i := range 32 {
			v := uint16(c.sig[32+i]) + uint16(ell[i]) + carry
			c.sig[32+i], carry = byte(v), v>>8
		}
	})
	// A = identity: [k]A vanishes, so (R = [s]B, s) is valid for any message,
	// under both rules.
	idPub := ed25519.PublicKey(mustHex(smallOrder[0]))
	s7 := edwards25519.NewScalar()
	s7.SetCanonicalBytes(append([]byte{7}, make([]byte, 31)...))
	idSig := append(new(edwards25519.Point).ScalarBaseMult(s7).Bytes(), s7.Bytes()...)
	// Non-canonical R: y + p for a point whose y < 19, here y = 1 (the
	// identity) encoded as 2^255-18.
	nonCanonR := mod(sigCase{idPub, []byte("x"), append(mustHex(smallOrder[0]), make([]byte, 32)...)}, func(c *sigCase) {
		copy(c.sig[:32], mustHex("eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f"))
	})
	// Non-canonical A: the identity with the sign bit set (x = 0).
	nonCanonA := sigCase{ed25519.PublicKey(mustHex("0100000000000000000000000000000000000000000000000000000000000080")), []byte("m"), idSig}
	tors := sigCase{good.pub, msg, signWith(k1, msg, 12345, mustHex(smallOrder[4]))}
	torsNone := sigCase{good.pub, msg, signWith(k1, msg, 12345, mustHex(smallOrder[0]))}

	for _, tc := range []struct {
		name   string
		c      sigCase
		want   bool // this package
		stdlib bool
	}{
		{"valid", good, true, true},
		{"valid, other key", other, true, true},
		{"message changed", mod(good, func(c *sigCase) { c.msg[3] ^= 1 }), false, false},
		{"message extended", mod(good, func(c *sigCase) { c.msg = append(c.msg, ' ') }), false, false},
		{"R changed", mod(good, func(c *sigCase) { c.sig[0] ^= 1 }), false, false},
		{"s changed", mod(good, func(c *sigCase) { c.sig[40] ^= 1 }), false, false},
		{"s + ℓ (not canonical)", sPlusL, false, false},
		{"s with the top bit set", mod(good, func(c *sigCase) { c.sig[63] |= 0x80 }), false, false},
		{"key changed", mod(good, func(c *sigCase) { c.pub[5] ^= 1 }), false, false},
		{"other key", mod(good, func(c *sigCase) { c.pub = other.pub }), false, false},
		{"short signature", mod(good, func(c *sigCase) { c.sig = c.sig[:63] }), false, false},
		{"short key", mod(good, func(c *sigCase) { c.pub = c.pub[:31] }), false, false},
		{"zero signature", mod(good, func(c *sigCase) { clear(c.sig) }), false, false},
		{"key of small order (identity), any message", sigCase{idPub, []byte("anything"), idSig}, true, true},
		{"R not canonical", nonCanonR, false, false},
		{"A not canonical (sign bit on x = 0)", nonCanonA, false, true},
		{"R with a torsion component (ZIP-215 accepts, RFC 8032 cofactorless refuses)", tors, true, false},
		{"R built the same way without torsion", torsNone, true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.c.stdlib(); got != tc.stdlib {
				t.Fatalf("crypto/ed25519: %v, the test expects %v", got, tc.stdlib)
			}
			if got := Verify(tc.c.pub, tc.c.msg, tc.c.sig); got != tc.want {
				t.Fatalf("Verify: %v, want %v", got, tc.want)
			}
			// In a batch, alone and among valid signatures, at each position.
			for pos := range 3 {
				cs := []sigCase{good, other, good}
				cs = append(cs[:pos], append([]sigCase{tc.c}, cs[pos:]...)...)
				got := batchOf(cs...).Verify()
				want := -1
				if !tc.want {
					want = pos
				}
				if got != want {
					t.Fatalf("batch with the case at %d: Verify = %d, want %d", pos, got, want)
				}
			}
			if got := batchOf(tc.c).Verify(); (got == -1) != tc.want {
				t.Fatalf("batch of one: %d", got)
			}
		})
	}
	// Non-canonical encodings of every small-order point are refused.
	for _, s := range smallOrder {
		if !decodeCanonical(new(edwards25519.Point), mustHex(s)) {
			t.Errorf("canonical %s refused", s)
		}
	}
	for _, s := range []string{
		"0100000000000000000000000000000000000000000000000000000000000080", // identity, x = 0 with sign
		"ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff", // order 2, x = 0 with sign
		"eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f", // y = 1 + p
		"edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f", // y = p (0 + p)
		"edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
	} {
		if decodeCanonical(new(edwards25519.Point), mustHex(s)) {
			t.Errorf("non-canonical %s accepted", s)
		}
	}
}

func TestEmptyAndReset(t *testing.T) {
	var b Batch
	if b.Verify() != -1 {
		t.Fatal("empty batch refused")
	}
	k := key(t, 3)
	b.Add(k.Public().(ed25519.PublicKey), []byte("a"), ed25519.Sign(k, []byte("b")))
	if b.Verify() != 0 {
		t.Fatal("bad signature accepted")
	}
	b.Reset()
	b.Add(k.Public().(ed25519.PublicKey), []byte("a"), ed25519.Sign(k, []byte("a")))
	if b.Len() != 1 || b.Verify() != -1 {
		t.Fatal("after Reset")
	}
}

// TestRandomAgainstStdlib compares batches of random signatures, some
// corrupted, with crypto/ed25519 one by one: the first refused position
// must match.
func TestRandomAgainstStdlib(t *testing.T) {
	rng := mrand.New(mrand.NewPCG(1, 2))
	keys := make([]ed25519.PrivateKey, 5)
	for i := range keys {
		keys[i] = key(t, byte(10+i))
	}
	rounds := 200
	if testing.Short() {
		rounds = 40
	}
	for round := range rounds {
		n := 1 + rng.IntN(80)
		var b Batch
		first := -1
		for i := range n {
			k := keys[rng.IntN(len(keys))]
			msg := make([]byte, rng.IntN(200))
			for j := range msg {
				msg[j] = byte(rng.Uint32())
			}
			sig := ed25519.Sign(k, msg)
			pub := k.Public().(ed25519.PublicKey)
			if rng.IntN(60) == 0 {
				switch rng.IntN(4) {
				case 0:
					sig[rng.IntN(64)] ^= byte(1 << rng.IntN(8))
				case 1:
					if len(msg) > 0 {
						msg[rng.IntN(len(msg))] ^= 1
					} else {
						msg = []byte{0}
					}
				case 2:
					pub = keys[(rng.IntN(len(keys)))].Public().(ed25519.PublicKey)
				case 3:
					for j := range sig {
						sig[j] = byte(rng.Uint32())
					}
				}
			}
			if first == -1 && !ed25519.Verify(pub, msg, sig) {
				first = i
			}
			if got, want := Verify(pub, msg, sig), ed25519.Verify(pub, msg, sig); got != want {
				t.Fatalf("round %d, signature %d: Verify = %v, crypto/ed25519 = %v", round, i, got, want)
			}
			b.Add(pub, msg, sig)
		}
		if got := b.Verify(); got != first {
			t.Fatalf("round %d (%d signatures): batch says %d, crypto/ed25519 first refuses %d", round, n, got, first)
		}
	}
}

func benchSigs(n, nkeys int) []sigCase {
	cs := make([]sigCase, n)
	for i := range cs {
		var s [32]byte
		s[0] = byte(i % nkeys)
		k := ed25519.NewKeyFromSeed(s[:])
		msg := fmt.Appendf(nil, "vellum/v1/event\nseed\n{\"action\":\"user.login\",\"actor\":{\"id\":\"u%d\"},\"metadata\":{\"n\":%d}}", i, i)
		cs[i] = sigCase{k.Public().(ed25519.PublicKey), msg, ed25519.Sign(k, msg)}
	}
	return cs
}

func BenchmarkStdlib(b *testing.B) {
	cs := benchSigs(256, 4)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		c := cs[i%len(cs)]
		if !ed25519.Verify(c.pub, c.msg, c.sig) {
			b.Fatal("refused")
		}
	}
}

func BenchmarkVerifySingle(b *testing.B) {
	cs := benchSigs(256, 4)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		c := cs[i%len(cs)]
		if !Verify(c.pub, c.msg, c.sig) {
			b.Fatal("refused")
		}
	}
}

// BenchmarkBatch reports the time per signature (ns/op is per signature).
func BenchmarkBatch(b *testing.B) {
	for _, n := range []int{16, 64, 256, 1024} {
		for _, nkeys := range []int{1, 4, 64} {
			b.Run(fmt.Sprintf("n=%d/keys=%d", n, nkeys), func(b *testing.B) {
				cs := benchSigs(n, nkeys)
				var bt Batch
				b.ResetTimer()
				for done := 0; done < b.N; done += n {
					bt.Reset()
					for _, c := range cs {
						bt.Add(c.pub, c.msg, c.sig)
					}
					if bt.Verify() != -1 {
						b.Fatal("refused")
					}
				}
			})
		}
	}
}
