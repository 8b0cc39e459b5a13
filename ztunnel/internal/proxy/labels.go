package proxy

import (
	"slices"

	"github.com/ambient-mesh/mesh/pkg/workloadapi"
	"github.com/ambient-mesh/mesh/ztunnel/internal/metrics"
	"github.com/ambient-mesh/mesh/ztunnel/internal/state"
)

// describe fills the labels of one end of a connection from its workload
// w; with w unknown (nil) it leaves what the caller set.
func describe(p *metrics.Peer, w *workloadapi.Workload) {
	if w == nil {
		return
	}
	p.Workload = workloadName(w, p.Workload)
	p.Namespace = w.GetNamespace()
	p.CanonicalService = w.GetCanonicalName()
	p.CanonicalRevision = w.GetCanonicalRevision()
	p.Cluster = w.GetClusterId()
}

// setService fills the destination service labels from svc, if known.
func setService(l *metrics.Labels, svc *workloadapi.Service) {
	if svc == nil {
		return
	}
	l.DestinationService = svc.GetHostname()
	l.DestinationServiceName = svc.GetName()
	l.DestinationServiceNamespace = svc.GetNamespace()
}

// inboundService guesses which service an inbound connection came
// through: the destination sees only its own address and port, so it is
// the service of w that forwards to that port (by target port, or by
// service port where the service names no target port). Of several, the
// first by key, so that a connection always gets the same one; nil if
// none.
func inboundService(store *state.Store, w *workloadapi.Workload, port uint16) *workloadapi.Service {
	var keys []string
	for key, pl := range w.GetServices() {
		for _, p := range pl.GetPorts() {
			if t := p.GetTargetPort(); t == uint32(port) || t == 0 && p.GetServicePort() == uint32(port) {
				keys = append(keys, key)
				break
			}
		}
	}
	slices.Sort(keys)
	for _, key := range keys {
		if svc := store.ServiceByKey(key); svc != nil {
			return svc
		}
	}
	return nil
}

// peerLabels describe the pod as one end of its connections, before (or
// without) its workload from xDS.
func (pd *pod) peerLabels() metrics.Peer {
	return metrics.Peer{Workload: pd.info.GetName(), Namespace: pd.info.GetNamespace(), Principal: pd.id.String()}
}
