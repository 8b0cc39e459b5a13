package proxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sort"
	"sync"
	"time"

	"github.com/ambient-mesh/mesh/pkg/spiffe"
	"github.com/ambient-mesh/mesh/pkg/zds"
	"github.com/ambient-mesh/mesh/pkg/zdsapi"
	"github.com/ambient-mesh/mesh/ztunnel/internal/ca"
	"github.com/ambient-mesh/mesh/ztunnel/internal/metrics"
	"github.com/ambient-mesh/mesh/ztunnel/internal/state"
)

// Ports of the in-pod listeners.
const (
	OutboundPort  = 15001
	PlaintextPort = 15006
	HBONEPort     = 15008
)

// Certs hands out the workload certificates; *ca.Manager is one.
type Certs interface {
	Get(ctx context.Context, id spiffe.Identity) (*ca.Certificate, error)
	Forget(id spiffe.Identity)
}

// Config is what the proxy needs from the rest of ztunnel.
type Config struct {
	Store       *state.Store
	Certs       Certs
	TrustDomain string
	// Metrics may be nil.
	Metrics *metrics.Metrics
	Log     *slog.Logger
	// DrainTimeout bounds how long a removed pod's connections may run on
	// before they are cut.
	DrainTimeout time.Duration
	// CertTimeout bounds the first fetch of a new pod's certificate; past
	// it the pod's Add is refused, and the node agent retries. It must stay
	// below the agent's wait for an Ack (zds.DefaultAckTimeout), which
	// otherwise gives up first and resets the whole ZDS session.
	CertTimeout time.Duration
	// ConnectTimeout bounds opening an upstream connection or tunnel.
	ConnectTimeout time.Duration
	// MaxStreamsPerConn caps the tunnels of one pooled HBONE connection
	// (0: the peer's limit).
	MaxStreamsPerConn int
}

// Proxy serves the pods of one node.
type Proxy struct {
	cfg   Config
	conns *connTable

	mu   sync.Mutex
	pods map[string]*pod // by pod UID
	// seen holds the UIDs named since the current ZDS connection began;
	// when its snapshot ends, pods not in it are removed.
	seen     map[string]bool
	synced   bool // a full snapshot has been applied
	shutdown bool
	drains   sync.WaitGroup
}

// New returns a proxy with no pods.
func New(cfg Config) *Proxy {
	if cfg.DrainTimeout <= 0 {
		cfg.DrainTimeout = 5 * time.Second
	}
	if cfg.CertTimeout <= 0 {
		cfg.CertTimeout = zds.DefaultAckTimeout - time.Second
	}
	if cfg.ConnectTimeout <= 0 {
		cfg.ConnectTimeout = 10 * time.Second
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	return &Proxy{cfg: cfg, conns: newConnTable(), pods: map[string]*pod{}}
}

// BeginSnapshot is called as a new ZDS connection starts: the node agent
// will name every pod it wants served before SnapshotSent.
func (p *Proxy) BeginSnapshot() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.seen = map[string]bool{}
}

// Synced reports whether a full ZDS snapshot has been applied.
func (p *Proxy) Synced() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.synced
}

// HandleZDS applies one request from the node agent; it is a zds.Handler.
func (p *Proxy) HandleZDS(ctx context.Context, req *zdsapi.WorkloadRequest, nsFile *os.File) error {
	switch r := req.GetPayload().(type) {
	case *zdsapi.WorkloadRequest_Add:
		return p.add(ctx, r.Add, nsFile)
	case *zdsapi.WorkloadRequest_Keep:
		p.keep(r.Keep.GetUid())
	case *zdsapi.WorkloadRequest_Del:
		p.remove(r.Del.GetUid(), "removed by the node agent", p.cfg.DrainTimeout)
	case *zdsapi.WorkloadRequest_SnapshotSent:
		p.endSnapshot()
	}
	return nil
}

func (p *Proxy) add(ctx context.Context, a *zdsapi.AddWorkload, nsFile *os.File) error {
	uid := a.GetUid()
	p.mu.Lock()
	if p.shutdown {
		p.mu.Unlock()
		nsFile.Close()
		return errors.New("ztunnel is shutting down")
	}
	// A pod named in a snapshot is already running behind its redirection
	// (ztunnel restarted or reconnected): refusing it would leave it
	// unreachable for good, as the agent does not send it again.
	running := p.seen != nil
	if running {
		p.seen[uid] = true
	}
	old := p.pods[uid]
	p.mu.Unlock()
	if old != nil {
		if old.sameNetns(nsFile) {
			nsFile.Close()
			return nil
		}
		// Same UID, new namespace: the sandbox was recreated.
		p.remove(uid, "replaced by a new sandbox", p.cfg.DrainTimeout)
	}
	pd, err := p.startPod(ctx, uid, a.GetWorkloadInfo(), nsFile, !running)
	if err != nil {
		p.cfg.Log.Error("pod not added", "uid", uid, "pod", podName(a.GetWorkloadInfo()), "error", err)
		return err
	}
	p.mu.Lock()
	p.pods[uid] = pd
	p.mu.Unlock()
	p.cfg.Log.Info("pod added", "uid", uid, "pod", pd.name(), "identity", pd.id.String(), "ips", fmt.Sprint(pd.ips))
	return nil
}

func (p *Proxy) keep(uid string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.seen != nil {
		p.seen[uid] = true
	}
	if p.pods[uid] == nil {
		// The agent knows the pod but could not pass its netns; there is
		// nothing to serve it with until it is added again.
		p.cfg.Log.Warn("keep for a pod this ztunnel does not serve", "uid", uid)
	}
}

func (p *Proxy) endSnapshot() {
	p.mu.Lock()
	var stale []string
	for uid := range p.pods {
		if p.seen != nil && !p.seen[uid] {
			stale = append(stale, uid)
		}
	}
	p.seen = nil
	p.synced = true
	p.mu.Unlock()
	for _, uid := range stale {
		p.remove(uid, "not in the node agent's snapshot", p.cfg.DrainTimeout)
	}
}

// remove stops serving a pod at once (its listeners close) and drains its
// connections in the background.
func (p *Proxy) remove(uid, why string, timeout time.Duration) {
	p.mu.Lock()
	pd := p.pods[uid]
	delete(p.pods, uid)
	if pd != nil {
		p.drains.Add(1)
	}
	p.mu.Unlock()
	if pd == nil {
		return
	}
	p.cfg.Log.Info("pod removed", "uid", uid, "pod", pd.name(), "reason", why)
	pd.closeListeners()
	go func() {
		defer p.drains.Done()
		pd.drain(timeout)
		if !p.identityInUse(pd.id) {
			p.cfg.Certs.Forget(pd.id)
		}
	}()
}

func (p *Proxy) identityInUse(id spiffe.Identity) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, pd := range p.pods {
		if pd.id == id {
			return true
		}
	}
	return false
}

// Shutdown stops accepting connections in every pod and lets the open ones
// finish, cutting what is left when ctx ends.
func (p *Proxy) Shutdown(ctx context.Context) {
	p.mu.Lock()
	p.shutdown = true
	var uids []string
	for uid := range p.pods {
		uids = append(uids, uid)
	}
	p.mu.Unlock()
	timeout := p.cfg.DrainTimeout
	if dl, ok := ctx.Deadline(); ok {
		timeout = max(time.Until(dl), 0)
	}
	for _, uid := range uids {
		p.remove(uid, "ztunnel shutting down", timeout)
	}
	p.drains.Wait()
}

// PodInfo describes a served pod, for the config dump.
type PodInfo struct {
	UID       string   `json:"uid"`
	Name      string   `json:"name"`
	Namespace string   `json:"namespace"`
	Identity  string   `json:"identity"`
	IPs       []string `json:"ips"`
}

// Pods lists the served pods.
func (p *Proxy) Pods() []PodInfo {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]PodInfo, 0, len(p.pods))
	for _, pd := range p.pods {
		info := PodInfo{UID: pd.uid, Name: pd.info.GetName(), Namespace: pd.info.GetNamespace(), Identity: pd.id.String()}
		for _, ip := range pd.ips {
			info.IPs = append(info.IPs, ip.String())
		}
		out = append(out, info)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].UID < out[j].UID })
	return out
}

// Connections lists the open connections.
func (p *Proxy) Connections() []ConnInfo { return p.conns.list() }

func podName(info *zdsapi.WorkloadInfo) string {
	return info.GetNamespace() + "/" + info.GetName()
}
