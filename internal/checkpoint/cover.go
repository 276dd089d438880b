package checkpoint

// CoverNodes splits [lo, hi) into maximal aligned perfect subtrees, in
// order: from lo, each step takes the largest 2^k with lo divisible by 2^k
// and lo+2^k ≤ hi. For lo = 0 that is the binary decomposition of hi.
// Every such subtree lies inside a tree of size ≥ hi, so its hash is one of
// tlog's stored hashes. The server's range proofs and the bundle verifier
// both use it, so they agree on which nodes a proof holds.
func CoverNodes(lo, hi int64) (levels []int, indexes []int64) {
	for lo < hi {
		k := 0
		for k < 62 {
			next := int64(1) << (k + 1)
			if lo%next != 0 || hi-lo < next {
				break
			}
			k++
		}
		levels = append(levels, k)
		indexes = append(indexes, lo>>k)
		lo += int64(1) << k
	}
	return levels, indexes
}
