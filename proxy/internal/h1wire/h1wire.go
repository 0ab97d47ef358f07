// Package h1wire writes HTTP/1.1 header fields the way net/http writes them,
// for the proxy's own request and response writers.
package h1wire

import (
	"strings"

	"golang.org/x/net/http/httpguts"
)

var newlineToSpace = strings.NewReplacer("\n", " ", "\r", " ")

// AppendField appends "k: v\r\n" as net/http's header writer does: nothing
// for a name that is not a valid token, CR and LF in v turned into spaces,
// and v trimmed of ASCII space.
func AppendField(b []byte, k, v string) []byte {
	if !httpguts.ValidHeaderFieldName(k) {
		return b
	}
	if strings.ContainsAny(v, "\r\n") {
		v = newlineToSpace.Replace(v)
	}
	v = strings.Trim(v, " \t\n\r")
	b = append(b, k...)
	b = append(b, ": "...)
	b = append(b, v...)
	return append(b, "\r\n"...)
}

// HasToken says whether the comma-separated list v holds token, compared
// without case, between token boundaries (space, tab, comma or either
// end), as net/http finds "close" in a Connection field.
func HasToken(v, token string) bool {
	n := len(token)
	boundary := func(i int) bool { return i < 0 || i >= len(v) || v[i] == ' ' || v[i] == '\t' || v[i] == ',' }
	for i := 0; i+n <= len(v); i++ {
		if strings.EqualFold(v[i:i+n], token) && boundary(i-1) && boundary(i+n) {
			return true
		}
	}
	return false
}
