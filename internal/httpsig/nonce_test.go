package httpsig

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"
)

func TestNonceCache(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	w := 5 * time.Minute
	type step struct {
		keyID, nonce string
		created, now time.Duration // offsets from t0
		want         error
	}
	tests := []struct {
		name  string
		max   int
		steps []step
	}{
		{"first use accepted", 10, []step{{"k", "n1", 0, 0, nil}}},
		{"replay rejected", 10, []step{
			{"k", "n1", 0, 0, nil},
			{"k", "n1", 0, time.Second, ErrReplay},
		}},
		{"replay at window end rejected", 10, []step{
			{"k", "n1", 0, 0, nil},
			{"k", "n1", 0, w, ErrReplay},
		}},
		{"same nonce other key accepted", 10, []step{
			{"k1", "n1", 0, 0, nil},
			{"k2", "n1", 0, 0, nil},
			{"k1", "n1", 0, 0, ErrReplay},
		}},
		{"forgotten after expiry", 10, []step{
			{"k", "n1", 0, 0, nil},
			{"k", "n1", w + time.Second, w + time.Second, nil},
			{"k", "n1", w + time.Second, w + 2*time.Second, ErrReplay},
		}},
		{"future created kept longer", 10, []step{
			{"k", "n1", w, 0, nil},
			{"k", "n1", w, 2 * w, ErrReplay},
		}},
		{"expired entry behind a long-lived one renewed", 10, []step{
			{"k", "long", w, 0, nil},            // remembered until 2w
			{"k", "short", -w, 0, nil},          // remembered until 0
			{"k", "short", w, w, nil},           // expired: accepted, renewed until 2w
			{"k", "short", w, 2 * w, ErrReplay}, // the renewal holds...
			{"k", "long", w, 2 * w, ErrReplay},  // ...and so does the first
			{"k", "short", 3 * w, 3 * w, nil},   // both expired now
			{"k", "long", 3 * w, 3 * w, nil},
		}},
		{"created outside window refused", 10, []step{
			{"k", "n1", -w - time.Second, 0, ErrPolicy},
			{"k", "n1", w + time.Second, 0, ErrPolicy},
			{"k", "n1", 0, 0, nil},
		}},
		{"empty nonce refused", 10, []step{{"k", "", 0, 0, ErrPolicy}}},
		{"full refuses new nonces", 2, []step{
			{"k", "n1", 0, 0, nil},
			{"k", "n2", 0, 0, nil},
			{"k", "n3", 0, time.Second, ErrNonceCacheFull},
			{"k", "n1", 0, time.Second, ErrReplay}, // still remembered
			{"k", "n3", w, w + time.Second, nil},   // room again once n1, n2 expire
			{"k", "n4", w, w + time.Second, nil},
			{"k", "n5", w, w + time.Second, ErrNonceCacheFull},
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := NewNonceCache(w, tc.max)
			for i, s := range tc.steps {
				err := c.Check(s.keyID, s.nonce, t0.Add(s.created), t0.Add(s.now))
				if tc.steps[i].want == nil && err != nil || !errors.Is(err, s.want) {
					t.Fatalf("step %d (%s/%s): got %v, want %v", i, s.keyID, s.nonce, err, s.want)
				}
			}
			if c.Len() > tc.max {
				t.Errorf("Len %d > max %d", c.Len(), tc.max)
			}
		})
	}
}

// TestNonceCacheChurn runs a long stream of nonces through a small cache and
// checks that memory stays bounded and that every replay within the window
// is caught.
func TestNonceCacheChurn(t *testing.T) {
	w := 10 * time.Second
	c := NewNonceCache(w, 64)
	t0 := time.Unix(1_700_000_000, 0)
	var created []time.Time
	for i := 0; i < 10000; i++ {
		now := t0.Add(time.Duration(i) * 250 * time.Millisecond) // a new nonce every 250ms
		// Skewed client clocks: each entry lives 7s to 13s, so at most 52
		// are live at once.
		created = append(created, now.Add(time.Duration(i%7-3)*time.Second))
		n := fmt.Sprint(i)
		if err := c.Check("k", n, created[i], now); err != nil {
			t.Fatalf("nonce %d: %v", i, err)
		}
		if err := c.Check("k", n, created[i], now); !errors.Is(err, ErrReplay) {
			t.Fatalf("replay %d: %v", i, err)
		}
		for j := max(0, i-60); j < i; j++ {
			err := c.Check("k", fmt.Sprint(j), created[j], now)
			if now.After(created[j].Add(w)) {
				// Too old for the window: a Policy rejects it anyway.
				if !errors.Is(err, ErrPolicy) {
					t.Fatalf("stale replay of %d at %d: %v", j, i, err)
				}
			} else if !errors.Is(err, ErrReplay) {
				t.Fatalf("replay of %d at %d: %v", j, i, err)
			}
		}
		if c.Len() > 64 || len(c.ring) > 64 {
			t.Fatalf("Len %d, ring %d", c.Len(), len(c.ring))
		}
	}
}

func TestNonceCacheConcurrent(t *testing.T) {
	c := NewNonceCache(time.Minute, 1<<20)
	now := time.Unix(1_700_000_000, 0)
	var wg sync.WaitGroup
	var mu sync.Mutex
	accepted := map[string]int{}
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 2000; i++ {
				n := fmt.Sprint(i % 1000) // every nonce offered by 8 goroutines, twice
				if err := c.Check("k", n, now, now); err == nil {
					mu.Lock()
					accepted[n]++
					mu.Unlock()
				} else if !errors.Is(err, ErrReplay) {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if len(accepted) != 1000 {
		t.Errorf("%d nonces accepted, want 1000", len(accepted))
	}
	for n, k := range accepted {
		if k != 1 {
			t.Errorf("nonce %s accepted %d times", n, k)
		}
	}
}

func TestNewNonceCachePanics(t *testing.T) {
	for _, args := range [][2]int{{0, 1}, {1, 0}, {-1, 1}} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("NewNonceCache(%v) did not panic", args)
				}
			}()
			NewNonceCache(time.Duration(args[0]), args[1])
		}()
	}
}

func BenchmarkNonceCacheCheck(b *testing.B) {
	c := NewNonceCache(time.Second, 1<<16)
	t0 := time.Unix(1_700_000_000, 0)
	i := 0
	for b.Loop() {
		now := t0.Add(time.Duration(i) * 100 * time.Microsecond)
		if err := c.Check("k", fmt.Sprint(i), now, now); err != nil {
			b.Fatal(err)
		}
		i++
	}
}
