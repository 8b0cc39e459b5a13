// Command echo is the test application every end-to-end test deploys to prove
// how traffic behaves inside the mesh.
//
//	echo [serve] [flags]   answer HTTP/1.1 and h2c, gRPC and raw TCP, reporting who answered
//	echo client [flags]    send requests to one target and print a JSON summary
//
// Every reply names the pod, namespace and version that served it and the
// client address it saw, so a test can tell which replica answered, over which
// protocol, and whether the mesh preserved headers and source addresses.
//
// The client prints an echo.Summary as JSON and exits 0 when every request
// succeeded, 1 when some failed (the summary is printed all the same) and 2
// on bad flags. "echo serve -h" and "echo client -h" list the flags. The
// server and client live in package echo beside this command.
package main
