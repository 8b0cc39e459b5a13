package rpc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
)

// Code is a gRPC status code.
type Code uint32

// The gRPC status codes.
const (
	OK                 Code = 0
	Canceled           Code = 1
	Unknown            Code = 2
	InvalidArgument    Code = 3
	DeadlineExceeded   Code = 4
	NotFound           Code = 5
	AlreadyExists      Code = 6
	PermissionDenied   Code = 7
	ResourceExhausted  Code = 8
	FailedPrecondition Code = 9
	Aborted            Code = 10
	OutOfRange         Code = 11
	Unimplemented      Code = 12
	Internal           Code = 13
	Unavailable        Code = 14
	DataLoss           Code = 15
	Unauthenticated    Code = 16
)

var codeNames = [...]string{"OK", "Canceled", "Unknown", "InvalidArgument", "DeadlineExceeded", "NotFound",
	"AlreadyExists", "PermissionDenied", "ResourceExhausted", "FailedPrecondition", "Aborted", "OutOfRange",
	"Unimplemented", "Internal", "Unavailable", "DataLoss", "Unauthenticated"}

func (c Code) String() string {
	if int(c) < len(codeNames) {
		return codeNames[c]
	}
	return "Code(" + strconv.FormatUint(uint64(c), 10) + ")"
}

// Status is how a call ended, when it did not end with OK.
type Status struct {
	Code    Code
	Message string
}

func (s *Status) Error() string {
	return fmt.Sprintf("rpc error: code = %v desc = %s", s.Code, s.Message)
}

// err is nil for OK.
func (s *Status) err() error {
	if s.Code == OK {
		return nil
	}
	return s
}

// CodeOf returns the status code of err: OK for nil, Unknown for an error
// that is not a Status.
func CodeOf(err error) Code {
	if err == nil {
		return OK
	}
	var st *Status
	if errors.As(err, &st) {
		return st.Code
	}
	return Unknown
}

// headerStatus returns the status a response carries in its headers: a
// "Trailers-Only" response ending the call at once, or an HTTP error from
// something that is not a gRPC server. Nil for a call that goes on.
func headerStatus(res *http.Response) *Status {
	if v := res.Header.Get("grpc-status"); v != "" {
		return parseStatus(v, res.Header.Get("grpc-message"))
	}
	if res.StatusCode != http.StatusOK {
		return &Status{Code: httpCode(res.StatusCode), Message: "HTTP status " + res.Status}
	}
	if ct := res.Header.Get("content-type"); !strings.HasPrefix(ct, "application/grpc") {
		return &Status{Code: Internal, Message: fmt.Sprintf("response content-type %q is not gRPC", ct)}
	}
	return nil
}

// trailerStatus returns the status in the trailers of a finished body.
func trailerStatus(res *http.Response) *Status {
	v := res.Trailer.Get("grpc-status")
	if v == "" {
		return &Status{Code: Internal, Message: "server ended the call without a status"}
	}
	return parseStatus(v, res.Trailer.Get("grpc-message"))
}

func parseStatus(code, msg string) *Status {
	n, err := strconv.ParseUint(code, 10, 32)
	if err != nil {
		return &Status{Code: Unknown, Message: fmt.Sprintf("malformed grpc-status %q", code)}
	}
	return &Status{Code: Code(n), Message: decodeMessage(msg)}
}

// decodeMessage undoes the percent-encoding of grpc-message; a malformed
// escape is kept as it came.
func decodeMessage(s string) string {
	if !strings.Contains(s, "%") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '%' && i+2 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+3], 16, 8); err == nil {
				b.WriteByte(byte(v))
				i += 2
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// httpCode maps an HTTP status from something that is not a gRPC server
// (a proxy, a load balancer) to a gRPC code, as the gRPC specification
// does.
func httpCode(status int) Code {
	switch status {
	case http.StatusBadRequest:
		return Internal
	case http.StatusUnauthorized:
		return Unauthenticated
	case http.StatusForbidden:
		return PermissionDenied
	case http.StatusNotFound:
		return Unimplemented
	case http.StatusTooManyRequests, http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return Unavailable
	}
	return Unknown
}

// transportError turns a failure below gRPC (the connection, the stream,
// the context) into a Status.
func transportError(ctx context.Context, err error) error {
	var st *Status
	if errors.As(err, &st) {
		return st
	}
	switch {
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		return &Status{Code: DeadlineExceeded, Message: err.Error()}
	case ctx.Err() != nil:
		return &Status{Code: Canceled, Message: err.Error()}
	}
	return &Status{Code: Unavailable, Message: err.Error()}
}

// bodyError explains a failed read of a response body: a message cut short
// by a server that then ended the call cleanly is the server's error; any
// other failure is the connection's or the context's.
func bodyError(ctx context.Context, res *http.Response, err error) error {
	if errors.Is(err, io.ErrUnexpectedEOF) && res.Trailer.Get("grpc-status") != "" {
		return &Status{Code: Internal, Message: "truncated message"}
	}
	return transportError(ctx, err)
}
