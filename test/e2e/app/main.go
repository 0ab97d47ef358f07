// Command app is the application the end-to-end tests and the demo run in
// their pods: an HTTP/1.1 and h2c server that answers with who it is and
// what it received, so a test can see which backend served a request and
// which identity the mesh presented for the caller.
//
//	GET /anything      → 200 {"pod": ..., "service": ..., "path": ..., "headers": {...}}
//	GET /status/503    → that status
//	GET /delay/250     → answers after 250 ms
package main

import (
	"encoding/json"
	"flag"
	"log"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	addrs := flag.String("listen", ":8080", "comma-separated addresses to serve on")
	service := flag.String("service", os.Getenv("APP_SERVICE"), "name reported as the service")
	load := flag.String("load", "", "also send GET requests to this URL, for demos (a load generator)")
	rps := flag.Int("rps", 10, "requests per second with --load")
	drain := flag.Duration("drain", time.Second, "on SIGTERM, keep serving this long before exiting (what a preStop sleep gives a real application while endpoint removal propagates)")
	flag.Parse()
	pod := os.Getenv("POD_NAME")
	if pod == "" {
		pod, _ = os.Hostname()
	}
	h := handler(pod, *service)
	protos := new(http.Protocols)
	protos.SetHTTP1(true)
	protos.SetUnencryptedHTTP2(true)
	errc := make(chan error)
	for _, a := range strings.Split(*addrs, ",") {
		srv := &http.Server{Addr: a, Handler: h, Protocols: protos, ReadHeaderTimeout: 10 * time.Second}
		go func() { errc <- srv.ListenAndServe() }()
	}
	if *load != "" {
		go generate(*load, *rps)
	}
	log.Printf("app %s (%s) serving on %s", pod, *service, *addrs)
	term := make(chan os.Signal, 1)
	signal.Notify(term, syscall.SIGTERM)
	select {
	case err := <-errc:
		log.Fatal(err)
	case <-term:
		log.Printf("SIGTERM: serving %s more, then exiting", *drain)
		time.Sleep(*drain)
	}
}

func handler(pod, service string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if rest, ok := strings.CutPrefix(r.URL.Path, "/delay/"); ok {
			if ms, err := strconv.Atoi(rest); err == nil && ms >= 0 && ms <= 60000 {
				time.Sleep(time.Duration(ms) * time.Millisecond)
			}
		}
		code := http.StatusOK
		if rest, ok := strings.CutPrefix(r.URL.Path, "/status/"); ok {
			if c, err := strconv.Atoi(rest); err == nil && c >= 200 && c <= 599 {
				code = c
			}
		}
		headers := map[string]string{}
		for k, v := range r.Header {
			headers[strings.ToLower(k)] = strings.Join(v, ",")
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-App-Pod", pod)
		w.WriteHeader(code)
		json.NewEncoder(w).Encode(map[string]any{
			"pod": pod, "service": service, "method": r.Method, "path": r.URL.Path,
			"proto": r.Proto, "host": r.Host, "headers": headers, "remote": r.RemoteAddr,
		})
	})
}

// generate sends requests at a steady rate and logs a summary every 10 s:
// how many succeeded, failed, and which pods answered.
func generate(url string, rps int) {
	cl := &http.Client{Timeout: 5 * time.Second}
	t := time.NewTicker(time.Second / time.Duration(max(rps, 1)))
	report := time.NewTicker(10 * time.Second)
	ok, failed := 0, 0
	by := map[string]int{}
	for {
		select {
		case <-report.C:
			log.Printf("load: %d ok, %d failed, by pod %v", ok, failed, by)
			ok, failed, by = 0, 0, map[string]int{}
		case <-t.C:
			res, err := cl.Get(url)
			if err != nil {
				failed++
				continue
			}
			res.Body.Close()
			if res.StatusCode >= 500 || res.StatusCode == http.StatusForbidden {
				failed++
			} else {
				ok++
			}
			by[res.Header.Get("X-App-Pod")]++
		}
	}
}
