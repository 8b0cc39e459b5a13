package echo

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"strings"
	"time"
)

type tcpRequester struct {
	addr    string
	message string
}

// do dials, reads the greeting, sends the message and checks that exactly
// the same bytes come back.
func (t *tcpRequester) do(ctx context.Context) (Reply, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", t.addr)
	if err != nil {
		return Reply{}, fmt.Errorf("dial tcp: %w", err)
	}
	defer c.Close()
	if deadline, ok := ctx.Deadline(); ok {
		c.SetDeadline(deadline)
	}
	// Cancellation must also unblock reads and writes, which only deadlines do.
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	r := bufio.NewReader(c)
	line, err := r.ReadString('\n')
	if err != nil {
		return Reply{}, fmt.Errorf("read greeting: %w", err)
	}
	reply, err := parseGreeting(line)
	if err != nil {
		return Reply{}, err
	}
	if _, err := io.WriteString(c, t.message); err != nil {
		return Reply{}, fmt.Errorf("send message: %w", err)
	}
	got := make([]byte, len(t.message))
	if _, err := io.ReadFull(r, got); err != nil {
		return Reply{}, fmt.Errorf("read echo: %w", err)
	}
	if string(got) != t.message {
		return Reply{}, fmt.Errorf("echoed %q, sent %q", got, t.message)
	}
	reply.Message = string(got)
	reply.LocalAddr = c.LocalAddr().String()
	return reply, nil
}

func (t *tcpRequester) close() {}

// parseGreeting reads "pod=P namespace=N version=V client=A".
func parseGreeting(line string) (Reply, error) {
	fields := map[string]string{}
	for _, f := range strings.Fields(line) {
		k, v, ok := strings.Cut(f, "=")
		if !ok {
			return Reply{}, fmt.Errorf("greeting %q: field %q is not key=value", line, f)
		}
		fields[k] = v
	}
	for _, k := range []string{"pod", "namespace", "version", "client"} {
		if _, ok := fields[k]; !ok {
			return Reply{}, fmt.Errorf("greeting %q: no %s", line, k)
		}
	}
	return Reply{
		Pod:        fields["pod"],
		Namespace:  fields["namespace"],
		Version:    fields["version"],
		Protocol:   ProtocolTCP,
		ClientAddr: fields["client"],
		Headers:    map[string][]string{},
	}, nil
}
