package meshapiv1

import (
	"context"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"
)

// refuser ends every stream at once, before reading anything, the way the
// control plane refuses a proxy without a workload certificate.
type refuser struct{ UnimplementedConfigServer }

func (refuser) Stream(grpc.BidiStreamingServer[ConfigRequest, ConfigResponse]) error {
	return status.Error(codes.Unauthenticated, "no workload certificate")
}

func TestSendErrorReportsTheServersStatus(t *testing.T) {
	lis := bufconn.Listen(1 << 16)
	srv := grpc.NewServer()
	RegisterConfigServer(srv, refuser{})
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	conn, err := grpc.NewClient("passthrough:///bufnet",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	stream, err := NewConfigClient(conn).Stream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// Send until gRPC notices the server has ended the stream: that Send
	// fails with io.EOF, which says nothing about why.
	var sendErr error
	for sendErr == nil && ctx.Err() == nil {
		sendErr = stream.Send(&ConfigRequest{Kind: &ConfigRequest_Hello{Hello: &Hello{PodName: "p", PodNamespace: "n"}}})
	}
	if !errors.Is(sendErr, io.EOF) {
		t.Fatalf("Send failed with %v, want io.EOF", sendErr)
	}
	got := SendError(stream, sendErr)
	if status.Code(got) != codes.Unauthenticated || status.Convert(got).Message() != "no workload certificate" {
		t.Errorf("SendError = %v, want the server's Unauthenticated status", got)
	}
	if other := errors.New("boom"); SendError(stream, other) != other {
		t.Error("SendError changed an error that is not io.EOF")
	}
}
