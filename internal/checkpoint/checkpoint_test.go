package checkpoint

import (
	"bytes"
	"crypto/rand"
	"errors"
	"testing"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

func testKey(t testing.TB) (note.Signer, note.Verifier) {
	skey, vkey, err := note.GenerateKey(rand.Reader, "test.example/vellum")
	if err != nil {
		t.Fatal(err)
	}
	s, _ := note.NewSigner(skey)
	v, _ := note.NewVerifier(vkey)
	return s, v
}

// tree builds stored hashes for n leaves "leaf i".
func tree(t testing.TB, n int64) (tlog.HashReaderFunc, []tlog.Hash) {
	var stored []tlog.Hash
	r := tlog.HashReaderFunc(func(ids []int64) ([]tlog.Hash, error) {
		out := make([]tlog.Hash, len(ids))
		for i, id := range ids {
			out[i] = stored[id]
		}
		return out, nil
	})
	var leaves []tlog.Hash
	for i := int64(0); i < n; i++ {
		data := []byte{byte(i), byte(i >> 8)}
		hs, err := tlog.StoredHashes(i, data, r)
		if err != nil {
			t.Fatal(err)
		}
		stored = append(stored, hs...)
		leaves = append(leaves, tlog.RecordHash(data))
	}
	return r, leaves
}

func TestProofRoundTripAndVerify(t *testing.T) {
	s, v := testKey(t)
	r, leaves := tree(t, 37)
	root, _ := tlog.TreeHash(37, r)
	cp, err := Sign(Checkpoint{Origin: "test.example/vellum/billing", Size: 37, Hash: root}, s)
	if err != nil {
		t.Fatal(err)
	}
	for _, idx := range []int64{0, 1, 17, 36} {
		rp, _ := tlog.ProveRecord(37, idx, r)
		p := &Proof{Index: idx, Hashes: rp, Checkpoint: cp}
		text := p.Format()
		got, err := ParseProof(text)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got.Format(), text) {
			t.Fatal("proof does not round-trip byte for byte")
		}
		if _, err := got.Verify(v, "test.example/vellum/billing", leaves[idx]); err != nil {
			t.Fatalf("index %d: %v", idx, err)
		}
		if _, err := got.Verify(v, "test.example/vellum/billing", leaves[(idx+1)%37]); !errors.Is(err, ErrVerify) {
			t.Fatalf("wrong leaf accepted: %v", err)
		}
		if _, err := got.Verify(v, "test.example/vellum/other", leaves[idx]); !errors.Is(err, ErrVerify) {
			t.Fatalf("wrong origin accepted: %v", err)
		}
	}
	_, other := testKey(t)
	rp, _ := tlog.ProveRecord(37, 3, r)
	if _, err := (&Proof{Index: 3, Hashes: rp, Checkpoint: cp}).Verify(other, "", leaves[3]); !errors.Is(err, ErrVerify) {
		t.Fatalf("checkpoint of another key accepted: %v", err)
	}
}

func TestConsistency(t *testing.T) {
	r, _ := tree(t, 100)
	old, _ := tlog.TreeHash(40, r)
	cur, _ := tlog.TreeHash(100, r)
	p, _ := tlog.ProveTree(100, 40, r)
	o := Checkpoint{Origin: "o", Size: 40, Hash: old}
	n := Checkpoint{Origin: "o", Size: 100, Hash: cur}
	if err := CheckConsistency(o, n, p); err != nil {
		t.Fatal(err)
	}
	fork := n
	fork.Hash[0] ^= 1
	var ce *ConsistencyError
	if err := CheckConsistency(o, fork, p); !errors.As(err, &ce) || ce.New.Hash != fork.Hash {
		t.Fatalf("fork not detected with evidence: %v", err)
	}
	if err := CheckConsistency(n, o, nil); err == nil {
		t.Fatal("shrinking tree accepted")
	}
	same := n
	same.Hash[1] ^= 1
	if err := CheckConsistency(n, same, nil); err == nil {
		t.Fatal("same size, different root accepted")
	}
}

func TestParseBodyRefusals(t *testing.T) {
	for name, body := range map[string]string{
		"no newline":   "o\n1\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=",
		"leading zero": "o\n01\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n",
		"short hash":   "o\n1\nAAAA\n",
		"two lines":    "o\n1\n",
		"empty ext":    "o\n1\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n\n",
	} {
		if _, err := ParseBody([]byte(body)); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func FuzzParseProof(f *testing.F) {
	s, _ := testKey(f)
	r, _ := tree(f, 5)
	root, _ := tlog.TreeHash(5, r)
	cp, _ := Sign(Checkpoint{Origin: "o", Size: 5, Hash: root}, s)
	rp, _ := tlog.ProveRecord(5, 2, r)
	f.Add((&Proof{Index: 2, Hashes: rp, Checkpoint: cp}).Format())
	f.Add((&Proof{Index: 0, Extra: []byte("x"), Checkpoint: cp}).Format())
	f.Add([]byte("c2sp.org/tlog-proof@v1\nindex 0\n\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := ParseProof(data)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error does not wrap ErrMalformed: %v", err)
			}
			return
		}
		if !bytes.Equal(p.Format(), data) {
			t.Fatalf("parsed proof does not re-format to the same bytes")
		}
	})
}

func FuzzParseBody(f *testing.F) {
	f.Add([]byte("example.com/log\n5\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n"))
	f.Add([]byte("example.com/log\n5\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\next\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := ParseBody(data)
		if err != nil {
			return
		}
		if !bytes.Equal(c.Body(), data) {
			t.Fatalf("body does not round-trip: %q", data)
		}
	})
}
