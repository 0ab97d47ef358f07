package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Protocol phases of the benchmark.
const (
	pHTTP1 = "HTTP/1.1"
	pH2    = "HTTP/2"
	pGRPC  = "gRPC"
	pTCP   = "TCP"
)

// haproxyOneHop: plaintext reverse proxy to the backend.
func haproxyOneHop(proto, listen, backend string) string {
	mode, bindOpt, srvOpt := "http", "", ""
	switch proto {
	case pTCP:
		mode = "tcp"
	case pH2, pGRPC:
		bindOpt, srvOpt = " proto h2", " proto h2"
	}
	return haproxyGlobal(mode) + fmt.Sprintf(`
frontend f
  bind %s%s
  default_backend b
backend b
  server s %s%s
`, listen, bindOpt, backend, srvOpt)
}

// haproxyClientHop: plaintext in, mTLS (TLS 1.3, client certificate, peer
// verified against the bundle) out to the server-side haproxy. HTTP rides h2
// between the two, and with "http-reuse always" a client connection's first
// request may ride a connection another client opened, as weft pools its
// mTLS connections between proxies: haproxy's default ("safe") sends each
// client connection's first request on a connection of its own, which
// without keep-alive means a TLS handshake per request.
func haproxyClientHop(proto, listen, peer, certs string) string {
	mode, bindOpt, alpn, reuse := "http", "", " alpn h2", "\n  http-reuse always"
	switch proto {
	case pTCP:
		mode, alpn, reuse = "tcp", "", ""
	case pH2, pGRPC:
		bindOpt = " proto h2"
	}
	return haproxyGlobal(mode) + fmt.Sprintf(`
frontend f
  bind %s%s
  default_backend b
backend b%s
  server s %s ssl crt %s/client/combined.pem ca-file %s/client/bundle.pem verify required ssl-min-ver TLSv1.3%s
`, listen, bindOpt, reuse, peer, certs, certs, alpn)
}

// haproxyServerHop: mTLS in (client certificate required and verified),
// plaintext to the application.
func haproxyServerHop(proto, listen, backend, certs string) string {
	mode, srvOpt, alpn := "http", "", " alpn h2,http/1.1"
	switch proto {
	case pTCP:
		mode, alpn = "tcp", ""
	case pH2, pGRPC:
		srvOpt = " proto h2"
	}
	return haproxyGlobal(mode) + fmt.Sprintf(`
frontend f
  bind %s ssl crt %s/server/combined.pem ca-file %s/server/bundle.pem verify required ssl-min-ver TLSv1.3%s
  default_backend b
backend b
  server s %s%s
`, listen, certs, certs, alpn, backend, srvOpt)
}

func haproxyGlobal(mode string) string {
	return fmt.Sprintf(`global
  maxconn 4096
defaults
  mode %s
  timeout connect 5s
  timeout client 60s
  timeout server 60s
`, mode)
}

// nginxOneHop: nginx as the well-known second peer, one hop, plaintext.
func nginxOneHop(proto, listen, backend, dir string) string {
	var body string
	switch proto {
	case pTCP:
		return fmt.Sprintf(`load_module /usr/lib/nginx/modules/ngx_stream_module.so;
%s
stream { server { listen %s; proxy_pass %s; } }
`, nginxGlobal(dir), listen, backend)
	case pGRPC:
		body = fmt.Sprintf(`server { listen %s http2; location / { grpc_pass grpc://%s; } }`, listen, backend)
	default:
		h2 := ""
		if proto == pH2 {
			h2 = " http2"
		}
		body = fmt.Sprintf(`upstream u { server %s; keepalive 64; }
  server { listen %s%s;
    location / { proxy_pass http://u; proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_buffering off; proxy_request_buffering off; } }`, backend, listen, h2)
	}
	return fmt.Sprintf(`%s
http { access_log off; %s }
`, nginxGlobal(dir), body)
}

func nginxGlobal(dir string) string {
	return fmt.Sprintf(`daemon off;
worker_processes 2;
pid %s/nginx.pid;
error_log %s/nginx-error.log warn;
events { worker_connections 4096; }`, dir, dir)
}

// weftSnapshot routes the virtual address to one endpoint.
func weftSnapshot(vip string, port int, endpoint, identity string, opaque bool) string {
	proto := ""
	if opaque {
		proto = `, "protocol": "Opaque"`
	}
	id := ""
	if identity != "" {
		id = fmt.Sprintf(`, "identity": %q`, identity)
	}
	return fmt.Sprintf(`{"version": "bench", "outbound": {"services": [{"name": "backend", "namespace": "bench",
  "addresses": [%q], "ports": [{"port": %d%s, "defaultBackends": [{"name": "backend", "namespace": "bench", "weight": 1,
  "endpoints": [{"address": %q%s}]}]}]}]}, "inbound": {}}`, vip, port, proto, endpoint, id)
}

func writeFile(dir, name, content string) string {
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(strings.TrimLeft(content, "\n")), 0o600); err != nil {
		panic(err)
	}
	return p
}
