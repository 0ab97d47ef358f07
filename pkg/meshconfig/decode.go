package meshconfig

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// Decode reads one snapshot strictly: unknown fields, trailing data and invalid
// values are errors, and nothing of a rejected snapshot is returned.
func Decode(data []byte) (*Snapshot, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var s Snapshot
	if err := dec.Decode(&s); err != nil {
		return nil, fmt.Errorf("decoding snapshot: %w", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, errors.New("decoding snapshot: trailing data after the JSON object")
	}
	if err := s.Validate(); err != nil {
		return nil, fmt.Errorf("invalid snapshot %q: %w", s.Version, err)
	}
	return &s, nil
}

// Encode writes a snapshot as JSON.
func Encode(s *Snapshot) ([]byte, error) {
	return json.Marshal(s)
}
