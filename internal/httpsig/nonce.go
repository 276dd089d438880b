package httpsig

import (
	"errors"
	"fmt"
	"sync"
	"time"
)

var (
	// ErrReplay is returned by NonceCache.Check for a nonce already used.
	ErrReplay = errors.New("httpsig: nonce already used")
	// ErrNonceCacheFull is returned by NonceCache.Check when it holds its
	// maximum number of unexpired nonces.
	ErrNonceCacheFull = errors.New("httpsig: too many recent nonces")
)

// NonceCache remembers (keyID, nonce) pairs so that a replayed signature is
// detected. A pair is remembered until its signature's created time plus
// window has passed; after that the signature is too old for a Policy with
// the same Window, so forgetting the pair is safe. Use the same window here
// as in the Policy (or a larger one).
//
// Memory is bounded by max entries: when full, Check refuses new nonces
// (ErrNonceCacheFull) rather than forgetting unexpired ones. Check is O(1)
// amortised: entries sit in a map and, in insertion order, in a ring that is
// trimmed from the front as entries expire. A NonceCache is safe for
// concurrent use.
type NonceCache struct {
	window time.Duration
	max    int

	mu   sync.Mutex
	seen map[nonceKey]time.Time // pair -> the last instant it is remembered
	// ring holds exactly one entry per key of seen, in insertion order.
	ring       []nonceEntry
	head, size int
}

type nonceKey struct{ keyID, nonce string }

type nonceEntry struct {
	k   nonceKey
	exp time.Time
}

// NewNonceCache returns a cache that remembers nonces for window and holds
// at most max of them. It panics if window or max is not positive.
func NewNonceCache(window time.Duration, max int) *NonceCache {
	if window <= 0 || max <= 0 {
		panic("httpsig: NewNonceCache: window and max must be positive")
	}
	return &NonceCache{window: window, max: max, seen: make(map[nonceKey]time.Time)}
}

// Check records nonce for keyID, whose signature was created at created. It
// returns ErrReplay if the pair is already remembered, ErrNonceCacheFull if
// the cache is full, and an error wrapping ErrPolicy if nonce is empty or
// created is not within window of now (such a signature can be neither
// accepted nor safely remembered).
func (c *NonceCache) Check(keyID, nonce string, created, now time.Time) error {
	switch {
	case nonce == "":
		return fmt.Errorf("%w: empty nonce", ErrPolicy)
	case created.IsZero():
		return fmt.Errorf("%w: no created time for nonce", ErrPolicy)
	case now.Sub(created) > c.window || created.Sub(now) > c.window:
		return fmt.Errorf("%w: created is not within %v of now, nonce cannot be checked", ErrPolicy, c.window)
	}
	exp := created.Add(c.window)
	k := nonceKey{keyID, nonce}

	c.mu.Lock()
	defer c.mu.Unlock()
	c.expire(now)
	if old, ok := c.seen[k]; ok {
		if !now.After(old) {
			return ErrReplay
		}
		// Expired but still queued behind a longer-lived entry: renew in
		// place; expire re-queues it when its old ring entry comes up.
		c.seen[k] = exp
		return nil
	}
	if len(c.seen) >= c.max {
		return ErrNonceCacheFull
	}
	c.seen[k] = exp
	c.push(nonceEntry{k, exp})
	return nil
}

// Len returns the number of nonces currently remembered (some may have
// expired but not yet been dropped).
func (c *NonceCache) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.seen)
}

// expire drops entries from the front of the ring while they have expired.
func (c *NonceCache) expire(now time.Time) {
	for c.size > 0 {
		e := c.ring[c.head]
		if !now.After(e.exp) {
			return
		}
		c.ring[c.head] = nonceEntry{}
		c.head = (c.head + 1) % len(c.ring)
		c.size--
		if cur := c.seen[e.k]; now.After(cur) {
			delete(c.seen, e.k)
		} else {
			c.push(nonceEntry{e.k, cur}) // renewed since queued
		}
	}
}

func (c *NonceCache) push(e nonceEntry) {
	if c.size == len(c.ring) {
		n := 2 * len(c.ring)
		if n < 16 {
			n = 16
		}
		if n > c.max {
			n = c.max
		}
		ring := make([]nonceEntry, n)
		for i := 0; i < c.size; i++ {
			ring[i] = c.ring[(c.head+i)%len(c.ring)]
		}
		c.ring, c.head = ring, 0
	}
	c.ring[(c.head+c.size)%len(c.ring)] = e
	c.size++
}
