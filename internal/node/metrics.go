package node

import (
	"os"
	"runtime"
	"strconv"
	"strings"

	"github.com/vellum-audit/vellum/internal/metrics"
)

// newMetrics is a node's registry with the process's own metrics; the
// ledger and the server add theirs.
func newMetrics(version string) *metrics.Registry {
	r := metrics.NewRegistry()
	if version == "" {
		version = "dev"
	}
	r.GaugeFunc("vellum_build_info", "Always 1; the labels say which vellum and Go run.", []string{"version", "goversion"}, func(emit func(float64, ...string)) {
		emit(1, version, runtime.Version())
	})
	r.GaugeFunc("go_goroutines", "Goroutines that currently exist.", nil, func(emit func(float64, ...string)) {
		emit(float64(runtime.NumGoroutine()))
	})
	r.GaugeFunc("go_memstats_heap_inuse_bytes", "Bytes in in-use heap spans (runtime.MemStats.HeapInuse).", nil, func(emit func(float64, ...string)) {
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		emit(float64(ms.HeapInuse))
	})
	r.GaugeFunc("process_resident_memory_bytes", "Resident set size of the process (Linux: /proc/self/statm).", nil, func(emit func(float64, ...string)) {
		if rss, ok := residentBytes(); ok {
			emit(float64(rss))
		}
	})
	return r
}

// residentBytes reads the resident set size from /proc/self/statm.
func residentBytes() (int64, bool) {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0, false
	}
	f := strings.Fields(string(b))
	if len(f) < 2 {
		return 0, false
	}
	pages, err := strconv.ParseInt(f[1], 10, 64)
	if err != nil {
		return 0, false
	}
	return pages * int64(os.Getpagesize()), true
}
