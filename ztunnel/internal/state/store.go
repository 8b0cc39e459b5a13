package state

import (
	"errors"
	"fmt"
	"net/netip"
	"sort"
	"sync"

	"google.golang.org/protobuf/types/known/anypb"

	"github.com/ambient-mesh/mesh/pkg/workloadapi"
	"github.com/ambient-mesh/mesh/pkg/workloadapi/security"
	"github.com/ambient-mesh/mesh/ztunnel/internal/authz"
)

// Type URLs of the resources ztunnel subscribes to.
const (
	AddressType       = "type.googleapis.com/istio.workload.Address"
	AuthorizationType = "type.googleapis.com/istio.security.Authorization"
)

// Resource is one named, versioned resource of a delta update.
type Resource struct {
	Name    string
	Version string
	Body    *anypb.Any
}

// Store holds the current resources. It is safe for concurrent use: xDS
// writes, the data path reads.
type Store struct {
	mu sync.RWMutex
	// versions per type, by resource name, for resuming a stream.
	versions map[string]map[string]string

	workloads map[string]*workloadapi.Workload // by resource name
	services  map[string]*workloadapi.Service
	policies  map[string]*authz.Policy
	// rawPolicies keeps what istiod sent, for the config dump.
	rawPolicies map[string]*security.Authorization

	byIP  map[netip.Addr]*workloadapi.Workload
	byVIP map[netip.Addr]*workloadapi.Service
	// byKey holds services by "namespace/hostname", the key a workload's
	// services map uses.
	byKey map[string]*workloadapi.Service
	// members holds, by service key, the workloads (by resource name)
	// whose services map names it; endpoints the healthy ones among them,
	// sorted by UID, kept up to date as workloads change so that an
	// outbound connection finds its endpoints without a scan of every
	// workload.
	members   map[string]map[string]*workloadapi.Workload
	endpoints map[string][]*workloadapi.Workload
	// stale names the services whose members changed during the current
	// Apply; their endpoints are rebuilt once, at its end, so that a push
	// of n endpoints of one service costs one sort, not n.
	stale map[string]struct{}

	// Warn, if set, is told of a resource applied with a reservation,
	// such as a policy holding fields this ztunnel does not know.
	Warn func(msg string, args ...any)
}

// New returns an empty store.
func New() *Store {
	return &Store{
		versions:    map[string]map[string]string{AddressType: {}, AuthorizationType: {}},
		workloads:   map[string]*workloadapi.Workload{},
		services:    map[string]*workloadapi.Service{},
		policies:    map[string]*authz.Policy{},
		rawPolicies: map[string]*security.Authorization{},
		byIP:        map[netip.Addr]*workloadapi.Workload{},
		byVIP:       map[netip.Addr]*workloadapi.Service{},
		byKey:       map[string]*workloadapi.Service{},
		members:     map[string]map[string]*workloadapi.Workload{},
		endpoints:   map[string][]*workloadapi.Workload{},
		stale:       map[string]struct{}{},
	}
}

// Versions returns the stored resources' versions for a type, to resume an
// xDS stream where it left off.
func (s *Store) Versions(typeURL string) map[string]string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make(map[string]string, len(s.versions[typeURL]))
	for k, v := range s.versions[typeURL] {
		out[k] = v
	}
	return out
}

// Apply merges one delta of typeURL. Valid resources are stored even when
// others are rejected; the returned error lists every rejection.
func (s *Store) Apply(typeURL string, updated []Resource, removed []string) error {
	var errs []error
	s.mu.Lock()
	defer s.mu.Unlock()
	defer s.refreshEndpointsLocked()
	vers, ok := s.versions[typeURL]
	if !ok {
		return fmt.Errorf("unknown resource type %s", typeURL)
	}
	for _, name := range removed {
		s.removeLocked(typeURL, name)
		delete(vers, name)
	}
	for _, r := range updated {
		var err error
		switch typeURL {
		case AddressType:
			err = s.applyAddressLocked(r)
		case AuthorizationType:
			err = s.applyAuthorizationLocked(r)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", r.Name, err))
			continue
		}
		vers[r.Name] = r.Version
	}
	return errors.Join(errs...)
}

func (s *Store) removeLocked(typeURL, name string) {
	switch typeURL {
	case AddressType:
		if w, ok := s.workloads[name]; ok {
			for _, a := range w.GetAddresses() {
				if ip, ok := netip.AddrFromSlice(a); ok && s.byIP[ip.Unmap()] == w {
					delete(s.byIP, ip.Unmap())
				}
			}
			delete(s.workloads, name)
			for key := range w.GetServices() {
				delete(s.members[key], name)
				if len(s.members[key]) == 0 {
					delete(s.members, key)
				}
				s.stale[key] = struct{}{}
			}
		}
		if svc, ok := s.services[name]; ok {
			for _, a := range svc.GetAddresses() {
				if ip, ok := netip.AddrFromSlice(a.GetAddress()); ok && s.byVIP[ip.Unmap()] == svc {
					delete(s.byVIP, ip.Unmap())
				}
			}
			if k := serviceKey(svc); s.byKey[k] == svc {
				delete(s.byKey, k)
			}
			delete(s.services, name)
		}
	case AuthorizationType:
		delete(s.policies, name)
		delete(s.rawPolicies, name)
	}
}

func (s *Store) applyAddressLocked(r Resource) error {
	var addr workloadapi.Address
	if err := r.Body.UnmarshalTo(&addr); err != nil {
		return fmt.Errorf("decode: %w", err)
	}
	switch t := addr.GetType().(type) {
	case *workloadapi.Address_Workload:
		if err := validateWorkload(t.Workload); err != nil {
			return err
		}
		s.removeLocked(AddressType, r.Name)
		s.workloads[r.Name] = t.Workload
		for _, a := range t.Workload.GetAddresses() {
			ip, _ := netip.AddrFromSlice(a)
			s.byIP[ip.Unmap()] = t.Workload
		}
		for key := range t.Workload.GetServices() {
			if s.members[key] == nil {
				s.members[key] = map[string]*workloadapi.Workload{}
			}
			s.members[key][r.Name] = t.Workload
			s.stale[key] = struct{}{}
		}
	case *workloadapi.Address_Service:
		if err := validateService(t.Service); err != nil {
			return err
		}
		s.removeLocked(AddressType, r.Name)
		s.services[r.Name] = t.Service
		s.byKey[serviceKey(t.Service)] = t.Service
		for _, a := range t.Service.GetAddresses() {
			ip, _ := netip.AddrFromSlice(a.GetAddress())
			s.byVIP[ip.Unmap()] = t.Service
		}
	default:
		return errors.New("address is neither a workload nor a service")
	}
	return nil
}

func validateWorkload(w *workloadapi.Workload) error {
	if w.GetUid() == "" {
		return errors.New("workload: uid is required")
	}
	for i, a := range w.GetAddresses() {
		if _, ok := netip.AddrFromSlice(a); !ok {
			return fmt.Errorf("workload %s: addresses[%d]: %d bytes is not an IP address", w.GetUid(), i, len(a))
		}
	}
	for svc, pl := range w.GetServices() {
		for i, p := range pl.GetPorts() {
			if p.GetServicePort() > 65535 || p.GetTargetPort() > 65535 {
				return fmt.Errorf("workload %s: services[%s].ports[%d]: port out of range", w.GetUid(), svc, i)
			}
		}
	}
	return nil
}

func validateService(svc *workloadapi.Service) error {
	if svc.GetHostname() == "" || svc.GetNamespace() == "" {
		return errors.New("service: namespace and hostname are required")
	}
	for i, a := range svc.GetAddresses() {
		if _, ok := netip.AddrFromSlice(a.GetAddress()); !ok {
			return fmt.Errorf("service %s/%s: addresses[%d]: %d bytes is not an IP address", svc.GetNamespace(), svc.GetHostname(), i, len(a.GetAddress()))
		}
	}
	for i, p := range svc.GetPorts() {
		if p.GetServicePort() == 0 || p.GetServicePort() > 65535 || p.GetTargetPort() > 65535 {
			return fmt.Errorf("service %s/%s: ports[%d]: port out of range", svc.GetNamespace(), svc.GetHostname(), i)
		}
	}
	return nil
}

func (s *Store) applyAuthorizationLocked(r Resource) error {
	var a security.Authorization
	if err := r.Body.UnmarshalTo(&a); err != nil {
		return fmt.Errorf("decode: %w", err)
	}
	p, err := authz.Compile(&a)
	if err != nil {
		return err
	}
	if len(p.Unknown) > 0 && s.Warn != nil {
		effect := "the ALLOW policy's parts holding them match nothing"
		if p.Deny {
			effect = "the DENY policy is enforced without them"
		}
		s.Warn("authorization holds fields this ztunnel does not know; failing closed", "policy", p.Key(), "parts", p.Unknown, "effect", effect)
	}
	s.policies[r.Name] = p
	s.rawPolicies[r.Name] = &a
	return nil
}

// WorkloadByIP returns the workload with this address.
func (s *Store) WorkloadByIP(ip netip.Addr) *workloadapi.Workload {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.byIP[ip.Unmap()]
}

// ServiceByVIP returns the service with this virtual IP.
func (s *Store) ServiceByVIP(ip netip.Addr) *workloadapi.Service {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.byVIP[ip.Unmap()]
}

// ServiceByKey returns the service a workload's services map names
// ("namespace/hostname").
func (s *Store) ServiceByKey(key string) *workloadapi.Service {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.byKey[key]
}

func serviceKey(svc *workloadapi.Service) string {
	return svc.GetNamespace() + "/" + svc.GetHostname()
}

// Endpoints returns the workloads behind a service ("namespace/hostname"),
// healthy ones only, in a stable order. The slice is shared: callers must
// not modify it.
func (s *Store) Endpoints(serviceKey string) []*workloadapi.Workload {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.endpoints[serviceKey]
}

// refreshEndpointsLocked recomputes the healthy endpoints of the services
// whose members changed, each into a new slice (readers may hold the old
// one).
func (s *Store) refreshEndpointsLocked() {
	for key := range s.stale {
		delete(s.stale, key)
		var out []*workloadapi.Workload
		for _, w := range s.members[key] {
			if w.GetStatus() == workloadapi.WorkloadStatus_HEALTHY {
				out = append(out, w)
			}
		}
		if len(out) == 0 {
			delete(s.endpoints, key)
			continue
		}
		sort.Slice(out, func(i, j int) bool { return out[i].GetUid() < out[j].GetUid() })
		s.endpoints[key] = out
	}
}

// PoliciesFor returns the authorization policies that apply to a workload
// in namespace ns naming the selected policies.
func (s *Store) PoliciesFor(ns string, selected []string) []*authz.Policy {
	s.mu.RLock()
	defer s.mu.RUnlock()
	var out []*authz.Policy
	for _, p := range s.policies {
		if p.Applies(ns, selected) {
			out = append(out, p)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key() < out[j].Key() })
	return out
}

// Snapshot is a copy of the store's resources by name, for the config dump.
type Snapshot struct {
	Workloads map[string]*workloadapi.Workload
	Services  map[string]*workloadapi.Service
	Policies  map[string]*security.Authorization
}

// Snapshot returns the current resources. The messages are shared with the
// store and must not be modified.
func (s *Store) Snapshot() Snapshot {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := Snapshot{
		Workloads: make(map[string]*workloadapi.Workload, len(s.workloads)),
		Services:  make(map[string]*workloadapi.Service, len(s.services)),
		Policies:  make(map[string]*security.Authorization, len(s.rawPolicies)),
	}
	for k, v := range s.workloads {
		out.Workloads[k] = v
	}
	for k, v := range s.services {
		out.Services[k] = v
	}
	for k, v := range s.rawPolicies {
		out.Policies[k] = v
	}
	return out
}
