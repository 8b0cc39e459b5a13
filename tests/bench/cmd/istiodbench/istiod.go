package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// istiod is the control plane under test, run as its own process so that
// its memory and CPU are its alone.
type istiod struct {
	cmd     *exec.Cmd
	logPath string
	exited  chan struct{} // closed once the process has been reaped
	waitErr error         // valid after exited

	grpcAddr, readyAddr string
}

// buildIstiod compiles istiod into dir. It runs the go command in the
// current directory, which must be inside the module.
func buildIstiod(ctx context.Context, dir string) (string, error) {
	bin := filepath.Join(dir, "istiod")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "github.com/ambient-mesh/mesh/istiod/cmd/istiod")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build istiod (run from the repository, or pass -istiod): %w\n%s", err, out)
	}
	return bin, nil
}

// istiodArgs are the flags for one run: loopback ports chosen by the
// kernel, the bench's own namespace for the CA, and root certificate
// ConfigMaps published only to the bench's namespaces, so that nothing of
// other users of the cluster is touched. Flags that only newer builds know
// are passed when the binary's usage lists them.
func istiodArgs(ctx context.Context, bin, kubeconfig, namespace, rootSelector string) []string {
	args := []string{
		"--kubeconfig=" + kubeconfig,
		"--namespace=" + namespace,
		"--cluster-id=" + clusterID,
		"--domain-suffix=" + domainSuffix,
		"--grpc-addr=127.0.0.1:0",
		"--secure-grpc-addr=127.0.0.1:0",
		"--ready-addr=127.0.0.1:0",
		"--root-namespace-selector=" + rootSelector,
		"--log-level=info",
	}
	usage, _ := exec.CommandContext(ctx, bin, "-h").CombinedOutput()
	if bytes.Contains(usage, []byte("-monitoring-addr")) {
		args = append(args, "--monitoring-addr=127.0.0.1:0")
	}
	return args
}

// startIstiod starts bin and waits for its "listening" line. Its logs go
// to logPath.
func startIstiod(ctx context.Context, bin string, args []string, logPath string) (*istiod, error) {
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer logFile.Close() // the child has its own descriptor
	cmd := exec.Command(bin, args...)
	cmd.Stderr = logFile
	cmd.SysProcAttr = childAttrs()
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start istiod: %w", err)
	}
	p := &istiod{cmd: cmd, logPath: logPath, exited: make(chan struct{})}

	lines := make(chan string, 1)
	var once sync.Once
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), "listening ") {
				once.Do(func() { lines <- sc.Text() })
			}
		}
		// Wait must only be called once the pipe has been read to the end.
		p.waitErr = cmd.Wait()
		close(p.exited)
	}()

	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	select {
	case line := <-lines:
		f := strings.Fields(line)
		if len(f) < 4 {
			p.stop()
			return nil, fmt.Errorf("istiod printed %q, want \"listening <grpc> <secure-grpc> <ready>\"", line)
		}
		p.grpcAddr, p.readyAddr = f[1], f[3]
		return p, nil
	case <-p.exited:
		return nil, fmt.Errorf("istiod exited before listening: %v", p.waitErr)
	case <-ctx.Done():
		p.stop()
		return nil, fmt.Errorf("istiod did not print its addresses: %w", ctx.Err())
	}
}

// waitReady polls /ready until it returns 200; istiod is then synced with
// the cluster.
func (p *istiod) waitReady(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	url := "http://" + p.readyAddr + "/ready"
	last := "no answer yet"
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		if resp, err := http.DefaultClient.Do(req); err != nil {
			last = err.Error()
		} else {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = resp.Status
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("istiod not ready within %s (last: %s): %w", timeout, last, ctx.Err())
		case <-p.exited:
			return fmt.Errorf("istiod exited: %v", p.waitErr)
		case <-tick.C:
		}
	}
}

// alive returns an error if istiod has exited.
func (p *istiod) alive() error {
	select {
	case <-p.exited:
		return fmt.Errorf("istiod exited: %v", p.waitErr)
	default:
		return nil
	}
}

func (p *istiod) pid() int { return p.cmd.Process.Pid }

// stop sends SIGTERM and waits; istiod stops its servers within seconds,
// so after 15 s it is killed.
func (p *istiod) stop() {
	select {
	case <-p.exited:
		return
	default:
	}
	_ = p.cmd.Process.Signal(terminate)
	select {
	case <-p.exited:
	case <-time.After(15 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.exited
	}
}

// logTail returns the last n lines of istiod's log.
func (p *istiod) logTail(n int) string {
	b, err := os.ReadFile(p.logPath)
	if err != nil {
		return fmt.Sprintf("(cannot read %s: %v)", p.logPath, err)
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
