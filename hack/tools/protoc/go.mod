// A protoc stand-in built from the Go module proxy (see main.go). Kept apart
// from the main module so the project itself does not depend on a compiler.
module github.com/weftmesh/weft/hack/tools/protoc

go 1.26.0

require (
	github.com/bufbuild/protocompile v0.14.1
	google.golang.org/protobuf v1.36.12
)

require golang.org/x/sync v0.8.0 // indirect
