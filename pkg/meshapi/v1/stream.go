package meshapiv1

import (
	"errors"
	"io"
)

// SendError is the error to report for a failed Send on a Config stream.
// gRPC's Send returns io.EOF when the server has already ended the stream
// (for example by refusing the proxy before it read the Hello); the status
// the server ended it with is only available from Recv. Without this, a
// refused proxy would log "EOF" instead of the server's reason.
func SendError(stream Config_StreamClient, err error) error {
	if !errors.Is(err, io.EOF) {
		return err
	}
	// Responses sent before the stream ended come first; the status
	// follows them.
	for {
		if _, rerr := stream.Recv(); rerr != nil {
			if errors.Is(rerr, io.EOF) {
				return err
			}
			return rerr
		}
	}
}
