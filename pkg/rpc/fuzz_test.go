package rpc

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"testing"

	"google.golang.org/protobuf/types/known/structpb"
)

// FuzzResponseBody feeds arbitrary bytes, as a server's response body with
// arbitrary trailers, to the message reader: it must return a message, a
// clean end or an error, never panic or read past its limit.
func FuzzResponseBody(f *testing.F) {
	ok, _ := frame(&structpb.Struct{})
	f.Add(ok, "0", "")
	f.Add(append(ok, 0, 0, 0, 0), "13", "bad%20thing")
	f.Add([]byte{0, 0xff, 0xff, 0xff, 0xff}, "", "")
	f.Add([]byte{1, 0, 0, 0, 1, 0}, "0", "%zz")
	f.Fuzz(func(t *testing.T, body []byte, status, message string) {
		res := &http.Response{Trailer: http.Header{}}
		if status != "" {
			res.Trailer.Set("grpc-status", status)
			res.Trailer.Set("grpc-message", message)
		}
		r := reader{body: bytes.NewReader(body), max: 1 << 10}
		for range 4 {
			err := r.next(&structpb.Struct{})
			if errors.Is(err, io.EOF) {
				_ = trailerStatus(res)
				return
			}
			if err != nil {
				_ = bodyError(context.Background(), res, err)
				return
			}
		}
	})
}
