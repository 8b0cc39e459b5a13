// Package hbone carries TCP connections through the mesh as HBONE: CONNECT
// tunnels over HTTP/2 (RFC 9113 section 8.5) on a mutual-TLS connection.
//
// It is a small HTTP/2 implementation built for tunnels alone: a frame
// reader per connection that demultiplexes DATA into per-stream buffers
// bounded by flow control (so a slow stream never blocks the others),
// writers that send large DATA frames straight from the caller's buffer
// under one lock, and generous windows so bulk transfers are limited by
// TLS, not by credit round trips. Frames are parsed and written by
// golang.org/x/net/http2's Framer and HPACK coder. Identity and TLS are
// the caller's: this package sees an established net.Conn.
package hbone
