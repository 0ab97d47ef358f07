// Package httpguard hardens the proxy's inbound HTTP: one canonical form of
// the request path (used both for the authorization decision and for the
// request sent to the application, so that the two never disagree), a strict
// HTTP/1 request-head reader that refuses request-smuggling shapes before
// net/http parses them, and checks of what net/http parsed (Host/:authority,
// h2c upgrade, methods).
//
// It must not decide who may call what (proxy/authz does) and must not write
// responses itself on a connection net/http owns: a refused HTTP/1 head is
// turned into a malformed one so that net/http answers 400 in order and
// closes the connection.
package httpguard
