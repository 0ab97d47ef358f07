package httpguard

import (
	"bytes"
	"io"
	"net"
	"sync"

	"github.com/weftmesh/weft/proxy/internal/h1wire"
)

// Limits of the HTTP/1 head reader.
const (
	// MaxHead bounds a request line plus headers, like the server's
	// MaxHeaderBytes; the guard must hold a whole head before releasing it.
	MaxHead = 64 << 10
	// MaxFields bounds the number of header lines of one head.
	MaxFields = 128
	// maxChunkLine bounds a chunk-size line with its extensions.
	maxChunkLine = 4096
)

// rejectHead replaces a refused head: net/http cannot parse it, answers
// "400 Bad Request" after the responses it owes, and closes the connection.
const rejectHead = "REFUSED-BY-WEFT\r\n\r\n"

type state uint8

const (
	stHead state = iota
	stBody
	stChunkSize
	stChunkData
	stChunkCRLF
	stTrailers
	stPass
	stDone
)

// H1Conn reads HTTP/1 requests from a client strictly and passes each on
// only once its whole head was checked. It tracks message framing
// (Content-Length, chunked) to find each next head on a keep-alive
// connection. After an upgrade request it passes bytes through unchecked: the
// server must then close the connection unless it switched protocols.
//
// It is on the path of every inbound HTTP/1 request, so it reads the client
// straight into one pooled buffer, checks the bytes where they lie and copies
// them once, into the reader's slice; it parses heads without allocating.
type H1Conn struct {
	net.Conn
	// OnReject is called once with the reason a head was refused.
	OnReject func(error)

	st state
	// buf[pos:ready] was checked and is returned next; buf[ready:] was
	// read and not processed yet. step runs only when pos == ready.
	buf       []byte
	bp        *[]byte // buf's pooled array, while buf is in it
	pos       int
	ready     int
	out       []byte // the refusal marker, once everything before it was returned
	remaining int64
	trailer   int   // bytes of trailers so far
	scanned   int   // bytes of an incomplete head or line already searched
	failed    error // a body framing error: every later Read fails
}

// bufSize is the pooled buffer's size; a longer head grows a buffer of its
// own, up to MaxHead and a chunk line.
const bufSize = 4096

var bufs = sync.Pool{New: func() any { b := make([]byte, bufSize); return &b }}

// NewH1Conn guards c. prefix holds bytes already read from c (detection).
func NewH1Conn(c net.Conn, prefix []byte) *H1Conn {
	g := &H1Conn{Conn: c}
	if len(prefix) > 0 {
		g.buf = append(make([]byte, 0, max(bufSize, len(prefix))), prefix...)
	}
	return g
}

// CloseWrite half-closes when the underlying connection can.
func (g *H1Conn) CloseWrite() error {
	if cw, ok := g.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return g.Conn.Close()
}

// in is what was read and not processed yet.
func (g *H1Conn) in() []byte { return g.buf[g.ready:] }

func (g *H1Conn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	for {
		if g.pos < g.ready {
			n := copy(p, g.buf[g.pos:g.ready])
			g.pos += n
			g.release()
			return n, nil
		}
		if len(g.out) > 0 {
			n := copy(p, g.out)
			g.out = g.out[n:]
			return n, nil
		}
		switch g.st {
		case stDone:
			if g.failed != nil {
				return 0, g.failed
			}
			return 0, io.EOF
		case stPass:
			if in := g.in(); len(in) > 0 {
				n := copy(p, in)
				g.ready += n
				g.pos = g.ready
				g.release()
				return n, nil
			}
			return g.Conn.Read(p)
		case stBody, stChunkData:
			if len(g.in()) == 0 {
				// Large bodies go straight through, no copy.
				n := int64(len(p))
				n = min(n, g.remaining)
				m, err := g.Conn.Read(p[:n])
				g.remaining -= int64(m)
				if g.remaining == 0 {
					g.endData()
				}
				return m, err
			}
		}
		if g.step() {
			continue
		}
		if err := g.fill(); err != nil {
			return 0, err
		}
	}
}

// release returns the buffer to the pool once all of it was returned.
func (g *H1Conn) release() {
	if g.pos < len(g.buf) {
		return
	}
	if g.bp != nil {
		bufs.Put(g.bp)
		g.bp = nil
	}
	g.buf, g.pos, g.ready = nil, 0, 0
}

// fill reads more of the client into the buffer's free end. It is called
// only when everything checked was returned (pos == ready).
func (g *H1Conn) fill() error {
	if len(g.in()) > MaxHead+maxChunkLine {
		g.reject(ErrHeadTooLarge)
		return nil
	}
	switch {
	case g.buf == nil:
		g.bp = bufs.Get().(*[]byte)
		g.buf = (*g.bp)[:0]
	case g.ready > 0:
		n := copy(g.buf, g.in())
		g.buf, g.pos, g.ready = g.buf[:n], 0, 0
	}
	if len(g.buf) == cap(g.buf) {
		g.buf = append(make([]byte, 0, 2*cap(g.buf)), g.buf...)
		if g.bp != nil {
			bufs.Put(g.bp)
			g.bp = nil
		}
	}
	n, err := g.Conn.Read(g.buf[len(g.buf):cap(g.buf)])
	if n > 0 {
		g.buf = g.buf[:len(g.buf)+n]
		return nil
	}
	g.release()
	if err == nil {
		err = io.ErrNoProgress
	}
	return err
}

func (g *H1Conn) endData() {
	if g.st == stChunkData {
		g.st = stChunkCRLF
	} else {
		g.st = stHead
	}
}

func (g *H1Conn) reject(err error) {
	if g.st == stHead {
		g.out = []byte(rejectHead)
	} else {
		// Part of this request already went to the server: fail its body
		// read, which aborts the request and the connection.
		g.failed = err
	}
	g.st = stDone
	g.pos = len(g.buf) // nothing more of it goes out
	g.release()
	if g.OnReject != nil {
		g.OnReject(err)
		g.OnReject = nil
	}
}

// emit marks n more bytes as checked.
func (g *H1Conn) emit(n int) { g.ready += n }

// step processes what is buffered; false means more input is needed.
func (g *H1Conn) step() bool {
	in := g.in()
	switch g.st {
	case stHead:
		// Tolerate empty lines between requests (RFC 9112 §2.2) but drop
		// them: the server gets exactly the checked bytes.
		for bytes.HasPrefix(in, []byte("\r\n")) {
			in = in[2:]
			g.ready += 2
			g.pos = g.ready
			g.scanned = 0
		}
		// Only bytes not scanned yet are searched, so that a client
		// trickling its head costs linear, not quadratic, work.
		from := max(g.scanned-3, 0)
		end := bytes.Index(in[from:], []byte("\r\n\r\n"))
		if end < 0 {
			if len(in) > MaxHead {
				g.reject(ErrHeadTooLarge)
				return true
			}
			for i := g.scanned; i < len(in); i++ {
				if in[i] == '\n' && (i == 0 || in[i-1] != '\r') {
					g.reject(ErrBareLF)
					return true
				}
			}
			g.scanned = len(in)
			return false
		}
		end += from
		g.scanned = 0
		if end+4 > MaxHead {
			g.reject(ErrHeadTooLarge)
			return true
		}
		f, err := ParseHead(in[:end+2])
		if err != nil {
			g.reject(err)
			return true
		}
		g.emit(end + 4)
		switch {
		case f.Upgrade:
			g.st = stPass
		case f.Chunked:
			g.st = stChunkSize
		case f.Length > 0:
			g.st, g.remaining = stBody, f.Length
		}
		return true
	case stBody, stChunkData:
		n := int(min(int64(len(in)), g.remaining))
		if n == 0 {
			return false
		}
		g.emit(n)
		g.remaining -= int64(n)
		if g.remaining == 0 {
			g.endData()
		}
		return true
	case stChunkSize:
		i := bytes.IndexByte(in, '\n')
		if i < 0 {
			if len(in) > maxChunkLine {
				g.reject(ErrBadChunk)
				return true
			}
			return false
		}
		if i == 0 || in[i-1] != '\r' {
			g.reject(ErrBareLF)
			return true
		}
		size, ok := parseChunkSize(in[:i-1])
		if !ok {
			g.reject(ErrBadChunk)
			return true
		}
		g.emit(i + 1)
		if size == 0 {
			g.st, g.trailer = stTrailers, 0
		} else {
			g.st, g.remaining = stChunkData, size
		}
		return true
	case stChunkCRLF:
		if len(in) < 2 {
			return false
		}
		if in[0] != '\r' || in[1] != '\n' {
			g.reject(ErrBadChunk)
			return true
		}
		g.emit(2)
		g.st = stChunkSize
		return true
	case stTrailers:
		i := bytes.IndexByte(in[g.scanned:], '\n')
		if i < 0 {
			if g.trailer+len(in) > MaxHead {
				g.reject(ErrHeadTooLarge)
				return true
			}
			g.scanned = len(in)
			return false
		}
		i += g.scanned
		g.scanned = 0
		if i == 0 || in[i-1] != '\r' {
			g.reject(ErrBareLF)
			return true
		}
		line := in[:i-1]
		if len(line) > 0 {
			if _, _, err := parseField(line); err != nil {
				g.reject(err)
				return true
			}
		}
		g.trailer += i + 1
		if g.trailer > MaxHead {
			g.reject(ErrHeadTooLarge)
			return true
		}
		g.emit(i + 1)
		if len(line) == 0 {
			g.st = stHead
		}
		return true
	}
	return false
}

func parseChunkSize(line []byte) (int64, bool) {
	if i := bytes.IndexByte(line, ';'); i >= 0 {
		for _, c := range line[i:] {
			if c < ' ' && c != '\t' || c == 0x7f {
				return 0, false
			}
		}
		line = line[:i]
	}
	line = bytes.TrimRight(line, " \t")
	if len(line) == 0 || len(line) > 15 {
		return 0, false
	}
	var n int64
	for _, c := range line {
		d, ok := unhex(c)
		if !ok {
			return 0, false
		}
		n = n<<4 | int64(d)
	}
	return n, true
}

// Framing is how a request's body is delimited, and whether it upgrades.
type Framing struct {
	Length  int64
	Chunked bool
	Upgrade bool
}

// ParseHead checks one request head (request line and header lines, each
// ending in CRLF, without the final empty line) and returns its framing. It
// refuses what lets two parsers disagree on where a request ends or what it
// says: bare CR or LF, obs-fold, invalid names or values, both
// Content-Length and Transfer-Encoding, several or malformed Content-Lengths,
// any transfer coding but a single "chunked", several Host headers or one
// that disagrees with an absolute-form target.
func ParseHead(head []byte) (Framing, error) {
	var f Framing
	for i, c := range head {
		switch c {
		case '\n':
			if i == 0 || head[i-1] != '\r' {
				return f, ErrBareLF
			}
		case '\r':
			if i+1 >= len(head) || head[i+1] != '\n' {
				return f, ErrBareCR
			}
		case 0:
			return f, ErrControlChar
		}
	}
	line, rest, _ := bytes.Cut(head, []byte("\r\n"))
	method, target, version, err := parseRequestLine(line)
	if err != nil {
		return f, err
	}
	var cl, te, hosts, fields int
	var host []byte
	connUpgrade, upgrade := false, false
	for len(rest) > 0 {
		line, rest, _ = bytes.Cut(rest, []byte("\r\n"))
		if fields++; fields > MaxFields {
			return f, ErrTooManyFields
		}
		name, value, err := parseField(line)
		if err != nil {
			return f, err
		}
		switch {
		case equalFold(name, "Content-Length"):
			if cl++; cl > 1 {
				return f, ErrDuplicateCL
			}
			n, ok := h1wire.ParseLength(value)
			if !ok {
				return f, ErrBadCL
			}
			f.Length = n
		case equalFold(name, "Transfer-Encoding"):
			if te++; te > 1 || !equalFold(value, "chunked") || string(version) == "HTTP/1.0" {
				return f, ErrBadTE
			}
			f.Chunked = true
		case equalFold(name, "Host"):
			hosts++
			host = value
		case equalFold(name, "Connection"):
			for t := range bytes.SplitSeq(value, []byte(",")) {
				if equalFold(bytes.TrimSpace(t), "upgrade") {
					connUpgrade = true
				}
			}
		case equalFold(name, "Upgrade"):
			upgrade = upgrade || len(value) > 0
		}
	}
	if cl > 0 && te > 0 {
		return f, ErrCLAndTE
	}
	if hosts > 1 || (hosts == 0 && string(version) == "HTTP/1.1") {
		return f, ErrHost
	}
	if hosts == 1 && !validHost(host) {
		return f, ErrHost
	}
	if target[0] != '/' && string(target) != "*" {
		// Absolute form: the authority wins over Host in RFC 9112, but an
		// application behind may read Host; they must agree.
		auth := target[bytes.Index(target, []byte("://"))+3:]
		if i := bytes.IndexAny(auth, "/?"); i >= 0 {
			auth = auth[:i]
		}
		if hosts == 1 && CanonicalHost(string(auth)) != CanonicalHost(string(host)) {
			return f, ErrHostMismatch
		}
	}
	f.Upgrade = connUpgrade && upgrade && string(method) != "CONNECT"
	return f, nil
}

// parseRequestLine splits and checks a request line. The results share
// line's bytes: a head is checked on every inbound request, without
// allocating.
func parseRequestLine(line []byte) (method, target, version []byte, err error) {
	m, rest, ok1 := bytes.Cut(line, []byte(" "))
	t, v, ok2 := bytes.Cut(rest, []byte(" "))
	if !ok1 || !ok2 || bytes.IndexByte(v, ' ') >= 0 {
		return nil, nil, nil, ErrBadTarget
	}
	if !ValidToken(m) {
		return nil, nil, nil, ErrBadMethod
	}
	if string(m) == "CONNECT" {
		return nil, nil, nil, ErrConnect
	}
	if string(v) != "HTTP/1.1" && string(v) != "HTTP/1.0" {
		return nil, nil, nil, ErrBadVersion
	}
	if len(t) == 0 {
		return nil, nil, nil, ErrBadTarget
	}
	for _, c := range t {
		if c <= ' ' || c >= 0x7f {
			return nil, nil, nil, ErrControlChar
		}
	}
	switch {
	case t[0] == '/':
	case string(t) == "*":
		if string(m) != "OPTIONS" {
			return nil, nil, nil, ErrBadTarget
		}
	case hasPrefixFold(t, "http://") || hasPrefixFold(t, "https://"):
	default:
		return nil, nil, nil, ErrBadTarget
	}
	return m, t, v, nil
}

// parseField splits "name: value", refusing obs-fold, whitespace before the
// colon, non-token names, and control characters in the value. The results
// share line's bytes.
func parseField(line []byte) (name, value []byte, err error) {
	if len(line) > 0 && (line[0] == ' ' || line[0] == '\t') {
		return nil, nil, ErrObsFold
	}
	i := bytes.IndexByte(line, ':')
	if i <= 0 {
		return nil, nil, ErrHeaderName
	}
	name = line[:i]
	if !ValidToken(name) {
		return nil, nil, ErrHeaderName
	}
	v := line[i+1:]
	if !h1wire.ValidValue(v) {
		return nil, nil, ErrHeaderValue
	}
	return name, bytes.Trim(v, " \t"), nil
}

// equalFold reports whether b is s, ASCII case aside.
func equalFold(b []byte, s string) bool {
	return len(b) == len(s) && hasPrefixFold(b, s)
}

// hasPrefixFold reports whether b starts with s, ASCII case aside.
func hasPrefixFold(b []byte, s string) bool {
	if len(b) < len(s) {
		return false
	}
	for i := 0; i < len(s); i++ {
		if lower(b[i]) != lower(s[i]) {
			return false
		}
	}
	return true
}

func lower(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}
