package bench

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
)

// childCommand is the hidden first argument that turns the harness's own
// binary into one of its children. Re-executing the same binary keeps the
// harness a single artifact and works for test binaries too.
const childCommand = "netbench-child"

// Child roles.
const (
	roleServer    = "server"
	roleForwarder = "forwarder"
	roleClient    = "client"
)

// RunChildIfRequested runs the child role named on the command line and
// exits, when this process is one of the harness's children; otherwise it
// returns at once. Call it first thing in main and in TestMain.
func RunChildIfRequested() {
	if len(os.Args) < 3 || os.Args[1] != childCommand {
		return
	}
	os.Exit(childMain(os.Args[2], os.Args[3:]))
}

func childMain(role string, args []string) int {
	// SIGTERM is how the harness stops a child; SIGINT too, for someone
	// running a role by hand.
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil)).With("role", role, "pid", os.Getpid())
	out := newEmitter(os.Stdout)

	var err error
	switch role {
	case roleServer:
		err = runServer(ctx, args, out)
	case roleForwarder:
		err = runForwarder(ctx, args, out, log)
	case roleClient:
		err = runClient(ctx, args, out)
	default:
		err = fmt.Errorf("unknown role %q", role)
	}
	if err != nil && ctx.Err() == nil {
		log.Error("child failed", "err", err)
		return 1
	}
	// Stopped by the harness: whatever was cut short is its decision.
	return 0
}
