package meshconfig

// Snapshot is everything one proxy needs to serve its pod. Once built it is never
// mutated; a change produces a new Snapshot with a new Version.
type Snapshot struct {
	// Version identifies this snapshot; proxies acknowledge it.
	Version string `json:"version"`
	// Identity is the SPIFFE ID of the proxy the snapshot was built for.
	Identity string `json:"identity,omitempty"`
	// TrustDomain of the mesh, e.g. "cluster.local".
	TrustDomain string `json:"trustDomain,omitempty"`
	// MTLSMode says whether inbound plaintext is accepted.
	MTLSMode MTLSMode `json:"mtlsMode,omitempty"`
	// Outbound is what the pod may call.
	Outbound Outbound `json:"outbound"`
	// Inbound is what the pod serves and who may call it.
	Inbound Inbound `json:"inbound"`
}

// MTLSMode mirrors MeshControlPlane spec.mtls.mode.
type MTLSMode string

const (
	// MTLSStrict refuses plaintext inbound connections on every port.
	MTLSStrict MTLSMode = "Strict"
	// MTLSPermissive accepts plaintext inbound connections as "unauthenticated".
	MTLSPermissive MTLSMode = "Permissive"
)

// Protocol is a hint for a port. An empty value means "detect".
type Protocol string

const (
	ProtocolDetect Protocol = ""
	ProtocolHTTP1  Protocol = "HTTP/1"
	ProtocolHTTP2  Protocol = "HTTP/2"
	ProtocolGRPC   Protocol = "gRPC"
	// ProtocolOpaque is forwarded as bytes with no detection. Server-first
	// protocols (MySQL, SMTP) must be opaque: the client sends nothing first.
	ProtocolOpaque Protocol = "Opaque"
)

// Outbound lists the destinations the pod may reach through the mesh.
type Outbound struct {
	// Services are the destinations, found by virtual address and port.
	Services []Service `json:"services,omitempty"`
	// OpaquePorts are destination ports never inspected.
	OpaquePorts []uint16 `json:"opaquePorts,omitempty"`
}

// Service is one destination Service.
type Service struct {
	// Name and Namespace of the Service; they label metrics.
	Name      string `json:"name"`
	Namespace string `json:"namespace"`
	// Addresses are the Service's virtual IPs (ClusterIPs).
	Addresses []string `json:"addresses,omitempty"`
	// Hosts are the names a client may use in Host/:authority for it
	// ("svc", "svc.ns", "svc.ns.svc", "svc.ns.svc.cluster.local").
	Hosts []string `json:"hosts,omitempty"`
	// Ports of the Service.
	Ports []ServicePort `json:"ports"`
}

// ServicePort is one port of a destination Service with the traffic rules that
// apply to requests sent to it.
type ServicePort struct {
	Port     uint16   `json:"port"`
	Name     string   `json:"name,omitempty"`
	Protocol Protocol `json:"protocol,omitempty"`
	// Routes are the compiled HTTP routes in precedence order (see route.go).
	// Empty means every request goes to DefaultBackends.
	Routes []Route `json:"routes,omitempty"`
	// DefaultBackends receive traffic that no route matches, and all opaque
	// traffic. Normally the Service itself; a TrafficSplit replaces it.
	DefaultBackends []Backend `json:"defaultBackends"`
}

// Backend is a weighted group of endpoints (a Service's ready endpoints).
type Backend struct {
	// Name and Namespace of the backend Service; they label metrics.
	Name      string `json:"name"`
	Namespace string `json:"namespace"`
	// Weight is relative to the other backends of the same rule; 0 receives
	// nothing.
	Weight uint32 `json:"weight"`
	// Endpoints that serve it.
	Endpoints []Endpoint `json:"endpoints,omitempty"`
}

// Endpoint is one address that serves a backend.
type Endpoint struct {
	// Address is "ip:port" (IPv6 in brackets).
	Address string `json:"address"`
	// Identity is the SPIFFE ID the endpoint's proxy must present. Empty means
	// the endpoint is not meshed and is reached in plaintext.
	Identity string `json:"identity,omitempty"`
	// Pod is "namespace/name", for diagnostics only.
	Pod string `json:"pod,omitempty"`
}

// Inbound is what the proxy's own pod serves.
type Inbound struct {
	// Ports the application listens on, with protocol hints.
	Ports []InboundPort `json:"ports,omitempty"`
	// DefaultPolicy applies when no AuthorizationPolicy selects the workload.
	DefaultPolicy DefaultPolicy `json:"defaultPolicy,omitempty"`
	// Policies select this workload (see authz.go).
	Policies []AuthorizationPolicy `json:"policies,omitempty"`
}

// InboundPort is one application port.
type InboundPort struct {
	Port     uint16   `json:"port"`
	Name     string   `json:"name,omitempty"`
	Protocol Protocol `json:"protocol,omitempty"`
}

// DefaultPolicy is the authorization default for a workload that no policy
// selects.
type DefaultPolicy string

const (
	DefaultAllow         DefaultPolicy = "Allow"
	DefaultDeny          DefaultPolicy = "Deny"
	DefaultAuthenticated DefaultPolicy = "Authenticated"
)
