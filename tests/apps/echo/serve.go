package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"

	"github.com/ambient-mesh/mesh/tests/apps/echo/echo"
)

func serve(ctx context.Context, args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("echo serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	httpPort := fs.Int("http-port", 8080, "port for HTTP/1.1 and h2c (HTTP/2 cleartext, prior knowledge); 0 picks one")
	grpcPort := fs.Int("grpc-port", 7070, "port for gRPC (service echo.Echo and grpc.health.v1); 0 picks one")
	tcpPort := fs.Int("tcp-port", 9090, "port for raw TCP: a greeting line, then echo; 0 picks one")
	pod := fs.String("pod", podName(), "pod name to report (env POD_NAME, else the hostname)")
	namespace := fs.String("namespace", os.Getenv("POD_NAMESPACE"), "namespace to report (env POD_NAMESPACE)")
	version := fs.String("version", os.Getenv("VERSION"), "version to report (env VERSION)")
	if code, done := parseFlags(fs, args); done {
		return code
	}
	for _, p := range []struct {
		flag string
		port int
	}{{"http-port", *httpPort}, {"grpc-port", *grpcPort}, {"tcp-port", *tcpPort}} {
		if p.port < 0 || p.port > 65535 {
			fmt.Fprintf(stderr, "echo serve: --%s %d: want 0..65535\n", p.flag, p.port)
			return exitUsage
		}
	}

	log := slog.New(slog.NewJSONHandler(stderr, nil))
	srv, err := echo.Listen(echo.Config{
		Identity: echo.Identity{Pod: *pod, Namespace: *namespace, Version: *version},
		HTTPAddr: hostPort(*httpPort),
		GRPCAddr: hostPort(*grpcPort),
		TCPAddr:  hostPort(*tcpPort),
		Logger:   log,
	})
	if err != nil {
		log.Error("echo failed to start", "error", err.Error())
		return exitFailed
	}
	log.Info("echo serving",
		"pod", *pod, "namespace", *namespace, "version", *version,
		"http", srv.HTTPAddr(), "grpc", srv.GRPCAddr(), "tcp", srv.TCPAddr())
	if err := srv.Serve(ctx); err != nil {
		log.Error("echo stopped", "error", err.Error())
		return exitFailed
	}
	log.Info("echo stopped")
	return exitOK
}

func podName() string {
	if p := os.Getenv("POD_NAME"); p != "" {
		return p
	}
	// Outside Kubernetes the hostname is the best name there is.
	h, _ := os.Hostname()
	return h
}

// hostPort listens on every address, IPv4 and IPv6.
func hostPort(port int) string { return net.JoinHostPort("", strconv.Itoa(port)) }
