package main

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"time"
)

// render writes the Markdown section. Added latency is computed per round
// (setup minus direct in the same round and cell) and then the median over
// rounds is taken, so drift between rounds on a shared machine cancels out.
func render(o options, phases []*phase, took time.Duration, loadStart, loadEnd string) string {
	var b strings.Builder
	p := func(f string, a ...any) { fmt.Fprintf(&b, f, a...) }
	p("## Proxy data plane (issue 3)\n\n")
	end := time.Now().UTC()
	p("Measured %s–%s by `make bench-proxy` (bench/proxy) in %s on %d vCPUs shared with other work; %s, %s.\n",
		end.Add(-took).Format("2006-01-02 15:04"), end.Format("15:04 MST"), took.Round(time.Second), runtime.NumCPU(), version(o.haproxy, "-v"), version(o.nginx, "-v"))
	p("Load average (1/5/15 min) %s at the start, %s at the end: other work ran on the machine, which is why setups run side by side in rotating order and ratios are computed per round.\n", loadStart, loadEnd)
	p("fortio %d rps, 1 KiB bodies (echoed back), %s per run, %d rounds per cell, setups in rotating order each round; histogram resolution (fortio -r) %s: percentiles are interpolated within fortio's buckets, 1× the resolution wide up to 100×, then 2×, 5×, 10× and 20× up to 200×.\n",
		o.qps, o.dur, o.rounds, o.resolution)
	p("Latencies are medians over rounds; *added* is that round's percentile minus the direct run's, then the median over rounds (µs).\n")
	p("Ratio is weft's added latency over haproxy's (≤ 1.0 is the goal). CPU is the proxy's utime+stime during the run divided by its wall time.\n\n")
	for _, ph := range phases {
		for _, c := range ph.cells {
			p("### %s, %s\n\n", ph.proto, c)
			p("| setup | p50 ms | p90 ms | p99 ms | added p50 µs | added p90 µs | added p99 µs | rps | errors | CPU vCPU per proxy |\n")
			p("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|\n")
			direct := ph.samples[c]["direct"]
			added := map[string][3]float64{}
			for _, s := range ph.setups {
				ss := ph.samples[c][s.name]
				var p50, p90, p99, qps, a50, a90, a99 []float64
				errs := 0
				for i, sm := range ss {
					p50, p90, p99, qps = append(p50, sm.p50), append(p90, sm.p90), append(p99, sm.p99), append(qps, sm.qps)
					errs += sm.errors
					if i < len(direct) {
						a50 = append(a50, sm.p50-direct[i].p50)
						a90 = append(a90, sm.p90-direct[i].p90)
						a99 = append(a99, sm.p99-direct[i].p99)
					}
				}
				added[s.name] = [3]float64{median(a50), median(a90), median(a99)}
				var cpus []string
				for pi := range s.procs {
					var v []float64
					for _, sm := range ss {
						v = append(v, sm.cpu[pi])
					}
					cpus = append(cpus, fmt.Sprintf("%.3f", median(v)))
				}
				p("| %s | %.3f | %.3f | %.3f | %.0f | %.0f | %.0f | %.0f | %d | %s |\n", s.name,
					median(p50)*1e3, median(p90)*1e3, median(p99)*1e3,
					median(a50)*1e6, median(a90)*1e6, median(a99)*1e6, median(qps), errs, strings.Join(cpus, " + "))
			}
			p("\n")
			for _, pair := range [][2]string{{"weft", "haproxy"}, {"weft 2 hops mTLS", "haproxy 2 hops mTLS"}} {
				w, h := added[pair[0]], added[pair[1]]
				p("- %s / %s: p50 %s, p90 %s, p99 %s\n", pair[0], pair[1], ratio(w[0], h[0]), ratio(w[1], h[1]), ratio(w[2], h[2]))
			}
			p("\n")
		}
	}
	p("### Memory per proxy process (KiB; nginx counts master and workers)\n\n")
	p("RssAnon is the private part of VmRSS; the rest is file pages (the executable and shared libraries, from the page cache, shared by every process that maps them).\n\n")
	p("| protocol | setup | process | VmRSS idle | VmRSS after load | VmHWM | RssAnon idle | RssAnon after load |\n|---|---|---|---:|---:|---:|---:|---:|\n")
	for _, ph := range phases {
		for _, s := range ph.setups {
			for i, pr := range s.procs {
				m := ph.mem[s.name][i]
				p("| %s | %s | %s | %d | %d | %d | %d | %d |\n", ph.proto, s.name, pr.name, m.idle, m.loaded, m.hwm, m.anonIdle, m.anonLoaded)
			}
		}
	}
	p("\n")
	if notes, err := os.ReadFile("bench/proxy/notes.md"); err == nil {
		b.Write(notes)
	}
	return b.String()
}

func ratio(a, b float64) string {
	if b <= 0 {
		return fmt.Sprintf("n/a (haproxy adds %.0f µs)", b*1e6)
	}
	return fmt.Sprintf("%.2f", a/b)
}

func version(bin, flag string) string {
	out, _ := exec.Command(bin, flag).CombinedOutput()
	line, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	return line
}
