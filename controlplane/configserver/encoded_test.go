package configserver

import (
	"bytes"
	"testing"

	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/encoding/proto"
	protov2 "google.golang.org/protobuf/proto"

	meshapiv1 "github.com/weftmesh/weft/pkg/meshapi/v1"
)

func TestPreEncodedResponses(t *testing.T) {
	want := &meshapiv1.ConfigResponse{Version: "v1", Snapshot: []byte(`{"outbound":{}}`), TrustBundle: []byte("-----BEGIN CERTIFICATE-----")}
	wire, err := encodeResponse(want)
	if err != nil {
		t.Fatal(err)
	}
	p, err := decodeAliased(wire)
	if err != nil {
		t.Fatal(err)
	}
	if !protov2.Equal(p.ConfigResponse, want) {
		t.Fatalf("decoded %v, want %v", p.ConfigResponse, want)
	}
	// The snapshot is not copied: it is the encoding's.
	if i := bytes.Index(wire, want.Snapshot); i < 0 || &p.Snapshot[0] != &wire[i] {
		t.Errorf("the decoded snapshot does not alias the encoding")
	}

	base := encoding.GetCodecV2(proto.Name)
	for name, c := range map[string]encoding.CodecV2{"our codec": codec{base}, "gRPC's proto codec": base} {
		data, err := c.Marshal(p)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		var got meshapiv1.ConfigResponse
		if err := c.Unmarshal(data, &got); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !protov2.Equal(&got, want) {
			t.Errorf("%s sent %v, want %v", name, &got, want)
		}
		data.Free()
	}
	// Freeing what our codec sent must leave the encoding intact for the
	// next proxy.
	if again, err := decodeAliased(wire); err != nil || !protov2.Equal(again.ConfigResponse, want) {
		t.Errorf("the encoding changed after a send: %v, %v", again, err)
	}

	if _, err := decodeAliased([]byte{0x0a, 0x05, 'v'}); err == nil {
		t.Errorf("a truncated encoding decoded without an error")
	}
}
