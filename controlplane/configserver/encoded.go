package configserver

import (
	"fmt"

	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	protov2 "google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	meshapiv1 "github.com/weftmesh/weft/pkg/meshapi/v1"
)

// A full snapshot is hundreds of KiB with a thousand Services, and every
// proxy of a Deployment is sent the same one. gRPC's codec would encode it
// again for each (a copy per proxy, the bulk of what a burst of connecting
// proxies allocates), so it is encoded once, cached with the snapshot, and
// this codec sends the encoding as it is.

// preEncoded is a ConfigResponse with its wire encoding. Its fields alias
// the encoding. Under another codec than Codec it is encoded like any
// ConfigResponse.
type preEncoded struct {
	*meshapiv1.ConfigResponse
	wire []byte
}

// encodeResponse encodes r once; the result may be sent on any number of
// streams and must not be modified.
func encodeResponse(r *meshapiv1.ConfigResponse) ([]byte, error) {
	return protov2.Marshal(r)
}

// decodeAliased is the ConfigResponse encoded in wire, whose bytes fields
// point into wire instead of copies of it.
func decodeAliased(wire []byte) (*preEncoded, error) {
	r := &meshapiv1.ConfigResponse{}
	m := r.ProtoReflect()
	fields := m.Descriptor().Fields()
	for b := wire; len(b) > 0; {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil, fmt.Errorf("decoding a config response: %w", protowire.ParseError(n))
		}
		b = b[n:]
		fd := fields.ByNumber(num)
		if typ != protowire.BytesType || fd == nil || (fd.Kind() != protoreflect.BytesKind && fd.Kind() != protoreflect.StringKind) {
			n = protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return nil, fmt.Errorf("decoding a config response: %w", protowire.ParseError(n))
			}
			b = b[n:]
			continue
		}
		v, n := protowire.ConsumeBytes(b)
		if n < 0 {
			return nil, fmt.Errorf("decoding a config response: %w", protowire.ParseError(n))
		}
		b = b[n:]
		if fd.Kind() == protoreflect.StringKind {
			m.Set(fd, protoreflect.ValueOfString(string(v)))
		} else {
			m.Set(fd, protoreflect.ValueOfBytes(v))
		}
	}
	return &preEncoded{ConfigResponse: r, wire: wire}, nil
}

// codec is gRPC's proto codec, except that a preEncoded message is sent
// as its encoding, without a copy.
type codec struct{ encoding.CodecV2 }

func (c codec) Marshal(v any) (mem.BufferSlice, error) {
	if p, ok := v.(*preEncoded); ok {
		// A SliceBuffer is never returned to a pool: the encoding stays
		// the cache's.
		return mem.BufferSlice{mem.SliceBuffer(p.wire)}, nil
	}
	return c.CodecV2.Marshal(v)
}

// ServerOptions are the gRPC server options the Config service needs to
// send a snapshot's encoding to many proxies without encoding it for each.
// Without them it still works, at the cost of that copy.
func ServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{grpc.ForceServerCodecV2(codec{encoding.GetCodecV2(proto.Name)})}
}
