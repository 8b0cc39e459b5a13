package zds

import (
	"errors"
	"fmt"
)

// ErrInvalidMessage marks a packet that breaks the protocol: undecodable,
// truncated, of the wrong kind, or with the wrong fds. The connection itself
// stays usable (packet boundaries survive), so a reader may answer with an
// Ack carrying the error and go on.
var ErrInvalidMessage = errors.New("invalid zds message")

// ErrNotConnected is returned by Server pushes while no ztunnel is connected.
var ErrNotConnected = errors.New("no ztunnel connected")

// AckError is ztunnel's refusal of a request: the text of a non-empty
// Ack.error.
type AckError struct {
	Message string
}

func (e *AckError) Error() string { return "ztunnel: " + e.Message }

func invalidf(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalidMessage, fmt.Sprintf(format, args...))
}
