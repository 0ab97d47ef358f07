package httpguard

import (
	"bytes"
	"io"
	"net"
	"strings"
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
type H1Conn struct {
	net.Conn
	// OnReject is called once with the reason a head was refused.
	OnReject func(error)

	st        state
	in        []byte // read, not yet processed
	out       []byte // processed, not yet returned
	remaining int64
	trailer   int   // bytes of trailers so far
	scanned   int   // bytes of an incomplete head already searched
	failed    error // a body framing error: every later Read fails
}

// NewH1Conn guards c. prefix holds bytes already read from c (detection).
func NewH1Conn(c net.Conn, prefix []byte) *H1Conn {
	return &H1Conn{Conn: c, in: prefix}
}

// CloseWrite half-closes when the underlying connection can.
func (g *H1Conn) CloseWrite() error {
	if cw, ok := g.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return g.Conn.Close()
}

func (g *H1Conn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	for {
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
			if len(g.in) > 0 {
				n := copy(p, g.in)
				g.in = g.in[n:]
				return n, nil
			}
			return g.Conn.Read(p)
		case stBody, stChunkData:
			if len(g.in) == 0 {
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

func (g *H1Conn) fill() error {
	if len(g.in) > MaxHead+maxChunkLine {
		g.reject(ErrHeadTooLarge)
		return nil
	}
	var buf [4096]byte
	n, err := g.Conn.Read(buf[:])
	if n > 0 {
		g.in = append(g.in, buf[:n]...)
		return nil
	}
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
	g.in = nil
	if g.OnReject != nil {
		g.OnReject(err)
		g.OnReject = nil
	}
}

// emit moves n processed bytes from in to out.
func (g *H1Conn) emit(n int) {
	g.out = append(g.out, g.in[:n]...)
	g.in = g.in[n:]
}

// step processes what is buffered; false means more input is needed.
func (g *H1Conn) step() bool {
	switch g.st {
	case stHead:
		// Tolerate empty lines between requests (RFC 9112 §2.2) but drop
		// them: the server gets exactly the checked bytes.
		for bytes.HasPrefix(g.in, []byte("\r\n")) {
			g.in = g.in[2:]
			g.scanned = 0
		}
		// Only bytes not scanned yet are searched, so that a client
		// trickling its head costs linear, not quadratic, work.
		from := max(g.scanned-3, 0)
		end := bytes.Index(g.in[from:], []byte("\r\n\r\n"))
		if end < 0 {
			if len(g.in) > MaxHead {
				g.reject(ErrHeadTooLarge)
				return true
			}
			for i := g.scanned; i < len(g.in); i++ {
				if g.in[i] == '\n' && (i == 0 || g.in[i-1] != '\r') {
					g.reject(ErrBareLF)
					return true
				}
			}
			g.scanned = len(g.in)
			return false
		}
		end += from
		g.scanned = 0
		if end+4 > MaxHead {
			g.reject(ErrHeadTooLarge)
			return true
		}
		f, err := ParseHead(g.in[:end+2])
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
		n := int(min(int64(len(g.in)), g.remaining))
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
		i := bytes.IndexByte(g.in, '\n')
		if i < 0 {
			if len(g.in) > maxChunkLine {
				g.reject(ErrBadChunk)
				return true
			}
			return false
		}
		if i == 0 || g.in[i-1] != '\r' {
			g.reject(ErrBareLF)
			return true
		}
		size, ok := parseChunkSize(g.in[:i-1])
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
		if len(g.in) < 2 {
			return false
		}
		if g.in[0] != '\r' || g.in[1] != '\n' {
			g.reject(ErrBadChunk)
			return true
		}
		g.emit(2)
		g.st = stChunkSize
		return true
	case stTrailers:
		i := bytes.IndexByte(g.in[g.scanned:], '\n')
		if i < 0 {
			if g.trailer+len(g.in) > MaxHead {
				g.reject(ErrHeadTooLarge)
				return true
			}
			g.scanned = len(g.in)
			return false
		}
		i += g.scanned
		g.scanned = 0
		if i == 0 || g.in[i-1] != '\r' {
			g.reject(ErrBareLF)
			return true
		}
		line := g.in[:i-1]
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
	var host string
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
		case strings.EqualFold(name, "Content-Length"):
			if cl++; cl > 1 {
				return f, ErrDuplicateCL
			}
			n, ok := parseDecimal(value)
			if !ok {
				return f, ErrBadCL
			}
			f.Length = n
		case strings.EqualFold(name, "Transfer-Encoding"):
			if te++; te > 1 || !strings.EqualFold(value, "chunked") || version == "HTTP/1.0" {
				return f, ErrBadTE
			}
			f.Chunked = true
		case strings.EqualFold(name, "Host"):
			hosts++
			host = value
		case strings.EqualFold(name, "Connection"):
			for t := range strings.SplitSeq(value, ",") {
				if strings.EqualFold(strings.TrimSpace(t), "upgrade") {
					connUpgrade = true
				}
			}
		case strings.EqualFold(name, "Upgrade"):
			upgrade = upgrade || value != ""
		}
	}
	if cl > 0 && te > 0 {
		return f, ErrCLAndTE
	}
	if hosts > 1 || (hosts == 0 && version == "HTTP/1.1") {
		return f, ErrHost
	}
	if hosts == 1 && !validHost(host) {
		return f, ErrHost
	}
	if !strings.HasPrefix(target, "/") && target != "*" {
		// Absolute form: the authority wins over Host in RFC 9112, but an
		// application behind may read Host; they must agree.
		auth := target[strings.Index(target, "://")+3:]
		if i := strings.IndexAny(auth, "/?"); i >= 0 {
			auth = auth[:i]
		}
		if hosts == 1 && CanonicalHost(auth) != CanonicalHost(host) {
			return f, ErrHostMismatch
		}
	}
	f.Upgrade = connUpgrade && upgrade && method != "CONNECT"
	return f, nil
}

func parseRequestLine(line []byte) (method, target, version string, err error) {
	s := string(line)
	m, rest, ok1 := strings.Cut(s, " ")
	t, v, ok2 := strings.Cut(rest, " ")
	if !ok1 || !ok2 || strings.Contains(v, " ") {
		return "", "", "", ErrBadTarget
	}
	if !ValidToken(m) {
		return "", "", "", ErrBadMethod
	}
	if m == "CONNECT" {
		return "", "", "", ErrConnect
	}
	if v != "HTTP/1.1" && v != "HTTP/1.0" {
		return "", "", "", ErrBadVersion
	}
	if t == "" {
		return "", "", "", ErrBadTarget
	}
	for i := 0; i < len(t); i++ {
		if c := t[i]; c <= ' ' || c >= 0x7f {
			return "", "", "", ErrControlChar
		}
	}
	switch {
	case t[0] == '/':
	case t == "*":
		if m != "OPTIONS" {
			return "", "", "", ErrBadTarget
		}
	case strings.HasPrefix(strings.ToLower(t), "http://") || strings.HasPrefix(strings.ToLower(t), "https://"):
	default:
		return "", "", "", ErrBadTarget
	}
	return m, t, v, nil
}

// parseField splits "name: value", refusing obs-fold, whitespace before the
// colon, non-token names, and control characters in the value.
func parseField(line []byte) (string, string, error) {
	if len(line) > 0 && (line[0] == ' ' || line[0] == '\t') {
		return "", "", ErrObsFold
	}
	i := bytes.IndexByte(line, ':')
	if i <= 0 {
		return "", "", ErrHeaderName
	}
	name := string(line[:i])
	if !ValidToken(name) {
		return "", "", ErrHeaderName
	}
	v := line[i+1:]
	for _, c := range v {
		if c < ' ' && c != '\t' || c == 0x7f {
			return "", "", ErrHeaderValue
		}
	}
	return name, strings.Trim(string(v), " \t"), nil
}

func parseDecimal(s string) (int64, bool) {
	if s == "" || len(s) > 18 {
		return 0, false
	}
	var n int64
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	return n, true
}
