package server

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"net/http/httptest"
	"testing"

	"github.com/vellum-audit/vellum/api"
)

// writeReceipts must write exactly what writeJSON writes.
func TestWriteReceiptsMatchesWriteJSON(t *testing.T) {
	proof := "c2sp.org/tlog-proof@v1\nindex 5\nAAAA+/==\n\nexample.com/log\n6\nq83vEjRWeJA=\n\n\u2014 example.com Ab+/cd==\n"
	cases := [][]api.Receipt{
		{},
		{{Log: "app", Index: 0, LeafHash: "ab+/==", Entry: json.RawMessage(`{"a":"x y","b":[1,2],"c":{"d":"\"q\\\" }"}}`), Proof: proof}},
		{
			{Log: "app", Index: 7, LeafHash: "h1", Duplicate: true, Entry: json.RawMessage(`{"e":"<&>\u2028"}`), Proof: "a\tb\rc\bd\fe\x01\x1f\x7f\"\\ <&> \u2028\u2029 \xff\xfe é 日本"},
			{Log: "a.b_c-d", Index: 1 << 60, LeafHash: "", Entry: json.RawMessage(`{}`), Proof: ""},
		},
		// Not compact: the writeJSON path, same bytes.
		{{Log: "app", Entry: json.RawMessage(`{"a": 1}`), Proof: "p"}},
		{{Log: "app", Entry: json.RawMessage(`{"a":1}` + "\n"), Proof: "p"}},
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for range 200 {
		s := make([]byte, rng.IntN(40))
		for i := range s {
			s[i] = byte(rng.IntN(256))
		}
		cases = append(cases, []api.Receipt{{Log: string(s[:len(s)/2]), Index: rng.Int64(), LeafHash: string(s), Entry: json.RawMessage(`{"k":"v"}`), Proof: string(s) + "\u2014"}})
	}
	for i, rs := range cases {
		want := httptest.NewRecorder()
		writeJSON(want, 200, api.AppendResponse{Receipts: rs})
		got := httptest.NewRecorder()
		writeReceipts(got, rs)
		if !bytes.Equal(got.Body.Bytes(), want.Body.Bytes()) || got.Code != want.Code || got.Header().Get("Content-Type") != want.Header().Get("Content-Type") {
			t.Errorf("case %d:\n got %d %q %s\nwant %d %q %s", i, got.Code, got.Header().Get("Content-Type"), got.Body.Bytes(), want.Code, want.Header().Get("Content-Type"), want.Body.Bytes())
		}
	}
}

func BenchmarkWriteReceipts(b *testing.B) {
	entry := json.RawMessage(`{"auth":"signature","event":{"action":"user.update","actor":{"id":"u-02230","ip":"10.129.218.211","name":"uniform.golf2230@example.com","type":"user"},"id":"5f2c-1","metadata":{"changes":[{"field":"role","new":"quebec-276","old":"delta-465"},{"field":"plan","new":"charlie-864","old":"zulu-607"},{"field":"description","new":"charlie-333","old":"kilo-291"}],"reason":"ticket 81420: lima whiskey mike","request_id":"req_bf6f0c0747d305b1","user_agent":"acme-cli/2.14.0 (linux; amd64)"},"outcome":"success","source":"vellum-bench","targets":[{"id":"user-17005","name":"echo-uniform","type":"user"}],"time":"2026-11-22T03:17:53.0770932Z"},"index":123456,"key_id":"0123456789abcdef","log":"bench","prev":"3q2+7w==","received":"2026-11-22T03:17:53.077093Z","sig":"AAAA","v":1}`)
	proof := "c2sp.org/tlog-proof@v1\nindex 123456\n"
	for range 17 {
		proof += "q83vEjRWeJCrze8SNFZ4kKvN7xI0VniQq83vEjRWeJA=\n"
	}
	proof += "\nvellum.local/abcd/bench\n123457\nq83vEjRWeJCrze8SNFZ4kKvN7xI0VniQq83vEjRWeJA=\n\n\u2014 vellum.local/abcd zJ8ZRsV4q83vEjRWeJCrze8SNFZ4kKvN7xI0VniQq83vEjRWeJA=\n"
	rs := make([]api.Receipt, 1000)
	for i := range rs {
		rs[i] = api.Receipt{Log: "bench", Index: int64(i), LeafHash: "q83vEjRWeJCrze8SNFZ4kKvN7xI0VniQq83vEjRWeJA=", Entry: entry, Proof: proof}
	}
	b.Run("writeJSON", func(b *testing.B) {
		for b.Loop() {
			writeJSON(httptest.NewRecorder(), 200, api.AppendResponse{Receipts: rs})
		}
	})
	b.Run("writeReceipts", func(b *testing.B) {
		for b.Loop() {
			writeReceipts(httptest.NewRecorder(), rs)
		}
	})
}
