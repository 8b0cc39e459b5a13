package workloads

// Labels and values read from Kubernetes objects. They are Istio's, so
// existing Istio manifests keep their meaning here.
const (
	LabelDataplaneMode        = "istio.io/dataplane-mode"
	LabelUseWaypoint          = "istio.io/use-waypoint"
	LabelUseWaypointNamespace = "istio.io/use-waypoint-namespace"
	LabelGatewayName          = "gateway.networking.k8s.io/gateway-name"
	LabelWaypointFor          = "istio.io/waypoint-for"
	// LabelGatewayManaged marks the pods and Service of a waypoint deployed
	// by the mesh; they never use a waypoint themselves.
	LabelGatewayManaged = "gateway.istio.io/managed"
	// LabelTunnel on a ServiceEntry declares that its endpoints accept
	// HBONE themselves (value "http").
	LabelTunnel = "networking.istio.io/tunnel"

	LabelCanonicalName     = "service.istio.io/canonical-name"
	LabelCanonicalRevision = "service.istio.io/canonical-revision"

	DataplaneModeAmbient = "ambient"
	DataplaneModeNone    = "none"
	WaypointNone         = "none"

	ManagedByMeshController = "istio.io-mesh-controller"
	TunnelHTTP              = "http"

	// WaypointClassName is the GatewayClass of waypoints.
	WaypointClassName = "istio-waypoint"

	// Values of istio.io/waypoint-for.
	WaypointForService  = "service"
	WaypointForWorkload = "workload"
	WaypointForAll      = "all"
	WaypointForNone     = "none"
)

// Fallback labels for canonical name and revision, in order of precedence
// after the Istio-specific label.
var (
	canonicalNameLabels     = []string{LabelCanonicalName, "app.kubernetes.io/name", "app"}
	canonicalRevisionLabels = []string{LabelCanonicalRevision, "app.kubernetes.io/version", "version"}
)

// HBONEPort is the port on which waypoints (and ztunnel) accept HBONE.
const HBONEPort = 15008

// podTemplateHashLabel is set by the Deployment controller on every pod; its
// value is the suffix it appended to the ReplicaSet name.
const podTemplateHashLabel = "pod-template-hash"

// firstLabel returns the value of the first of keys present and non-empty.
func firstLabel(labels map[string]string, keys []string) string {
	for _, k := range keys {
		if v := labels[k]; v != "" {
			return v
		}
	}
	return ""
}
