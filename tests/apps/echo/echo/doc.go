// Package echo implements the echo test application: a server that answers
// HTTP/1.1, h2c, gRPC and raw TCP on separate ports and reports who answered
// and what it saw, and a client that sends a batch of requests to one target
// and summarises the replies.
//
// The server's reply is the contract end-to-end tests assert on: see [Reply].
// The client's output is a [Summary].
package echo
