package resource_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/meshrelay/meshrelay/api/v1alpha1"
	"github.com/meshrelay/meshrelay/internal/resource"
)

// seed003 is the YAML of seed 003 (the Gloo Federation failover guide), unchanged except
// that the `kubectl patch` of the blue Upstream's health checks is written as a whole
// Upstream.
const seed003 = `apiVersion: gateway.solo.io/v1
kind: Gateway
metadata:
 name: failover-gateway
 namespace: gloo-system
 labels:
   app: gloo
spec:
 bindAddress: "::"
 bindPort: 15443
 tcpGateway:
   tcpHosts:
   - name: failover
     sslConfig:
       secretRef:
         name: failover-downstream
         namespace: gloo-system
     destination:
       forwardSniClusterName: {}

---
apiVersion: v1
kind: Service
metadata:
 labels:
   app: gloo
   gateway-proxy-id: gateway-proxy
   gloo: gateway-proxy
 name: failover
 namespace: gloo-system
spec:
 ports:
 - name: failover
   nodePort: 32000
   port: 15443
   protocol: TCP
   targetPort: 15443
 selector:
   gateway-proxy: live
   gateway-proxy-id: gateway-proxy
 sessionAffinity: None
 type: LoadBalancer
---
apiVersion: gloo.solo.io/v1
kind: Upstream
metadata:
 name: default-service-blue-10000
 namespace: gloo-system
spec:
 healthChecks:
 - timeout: 1s
   interval: 1s
   unhealthyThreshold: 1
   healthyThreshold: 1
   httpHealthCheck:
     path: /health
---
apiVersion: fed.solo.io/v1
kind: FailoverScheme
metadata:
 name: failover-scheme
 namespace: gloo-fed
spec:
 failoverGroups:
 - priorityGroup:
   - cluster: remote
     upstreams:
     - name: default-service-green-10000
       namespace: gloo-system
 primary:
   clusterName: local
   name: default-service-blue-10000
   namespace: gloo-system
`

func TestValidateSeed003Loads(t *testing.T) {
	objs, errs := resource.Parse("seed003.yaml", []byte(seed003))
	if len(errs) != 0 {
		t.Fatalf("seed 003 rejected: %v", errs)
	}
	var keys []string
	for _, o := range objs {
		keys = append(keys, o.Key())
	}
	want := "Gateway/gloo-system/failover-gateway,Service/gloo-system/failover,Upstream/gloo-system/default-service-blue-10000,FailoverScheme/gloo-fed/failover-scheme"
	if got := strings.Join(keys, ","); got != want {
		t.Fatalf("objects %s, want %s", got, want)
	}

	var gw v1alpha1.Gateway
	if err := objs[0].Into(&gw); err != nil {
		t.Fatal(err)
	}
	if gw.Spec.BindPort != 15443 || gw.Spec.TCPGateway == nil || len(gw.Spec.TCPGateway.TCPHosts) != 1 ||
		gw.Spec.TCPGateway.TCPHosts[0].Destination.ForwardSNIClusterName == nil ||
		gw.Spec.TCPGateway.TCPHosts[0].SSLConfig.SecretRef.Name != "failover-downstream" || gw.Metadata.Labels["app"] != "gloo" {
		t.Errorf("Gateway decoded as %+v", gw)
	}

	var up v1alpha1.Upstream
	if err := objs[2].Into(&up); err != nil {
		t.Fatal(err)
	}
	if len(up.Spec.HealthChecks) != 1 {
		t.Fatalf("Upstream health checks %+v", up.Spec.HealthChecks)
	}
	hc := up.Spec.HealthChecks[0]
	if hc.Timeout.Duration != time.Second || hc.Interval.Duration != time.Second || hc.UnhealthyThreshold != 1 ||
		hc.HealthyThreshold != 1 || hc.HTTPHealthCheck == nil || hc.HTTPHealthCheck.Path != "/health" {
		t.Errorf("health check decoded as %+v", hc)
	}

	var fs v1alpha1.FailoverScheme
	if err := objs[3].Into(&fs); err != nil {
		t.Fatal(err)
	}
	p := fs.Spec.Primary
	target := fs.Spec.FailoverGroups[0].PriorityGroup[0]
	if p.ClusterName != "local" || p.Name != "default-service-blue-10000" || p.Namespace != "gloo-system" ||
		target.Cluster != "remote" || target.Upstreams[0].Name != "default-service-green-10000" {
		t.Errorf("FailoverScheme decoded as %+v", fs)
	}
}

// validExamples holds one valid resource of each kind, using most of its fields.
var validExamples = map[string]string{
	"Upstream": `apiVersion: meshrelay.io/v1alpha1
kind: Upstream
metadata:
  name: default-service-blue-10000
  namespace: gloo-system
spec:
  cluster: local
  kube:
    serviceName: service-blue
    serviceNamespace: default
    servicePort: 10000
    selector:
      text: blue
  connectTimeout: 250ms
  healthChecks:
  - timeout: 1s
    interval: 1.5s
    noTrafficInterval: 2m
    unhealthyThreshold: 2
    httpHealthCheck:
      path: /health
      host: blue.local
      expectedStatuses: [200, 204]
  outlierDetection:
    consecutive5xx: 3
    interval: 10s
    baseEjectionTime: 30s
    maxEjectionPercent: 100
`,
	"Upstream static": `apiVersion: gloo.solo.io/v1
kind: Upstream
metadata:
  name: petstore
  namespace: gloo-system
spec:
  static:
    useTls: true
    hosts:
    - addr: 10.0.0.1
      port: 8080
    - addr: petstore.example.com
      port: 443
`,
	"FailoverScheme": `apiVersion: meshrelay.io/v1alpha1
kind: FailoverScheme
metadata:
  name: blue
  namespace: gloo-fed
spec:
  primary:
    clusterName: local
    name: default-service-blue-10000
    namespace: gloo-system
  failoverGroups:
  - priorityGroup:
    - cluster: remote
      upstreams:
      - name: default-service-green-10000
        namespace: gloo-system
    - cluster: local
      upstreams:
      - name: default-service-blue-10000
        namespace: other
  - priorityGroup:
    - cluster: far
      upstreams:
      - name: default-service-green-10000
`,
	"Gateway http": `apiVersion: meshrelay.io/v1alpha1
kind: Gateway
metadata:
  name: ingress
spec:
  bindPort: 8080
  cluster: local
  proxyNames: [gateway-proxy]
  httpGateway:
    routeTables:
    - name: blue
      namespace: default
`,
	"Gateway http empty": `apiVersion: gateway.solo.io/v1
kind: Gateway
metadata:
  name: ingress
spec:
  bindAddress: 0.0.0.0
  bindPort: 80
  httpGateway: {}
`,
	"Gateway tcp single": `apiVersion: meshrelay.io/v1alpha1
kind: Gateway
metadata:
  name: tcp
spec:
  bindPort: 9000
  tcpGateway:
    tcpHosts:
    - name: db
      sslConfig:
        sniDomains: [db.example.com, "*.db.example.com"]
      destination:
        single:
          upstream:
            name: default-db-5432
`,
	"RouteTable": `apiVersion: meshrelay.io/v1alpha1
kind: RouteTable
metadata:
  name: colors
  namespace: default
spec:
  hosts: ["*", "colors.example.com:8080"]
  clusters: [local, remote]
  gateway:
    name: ingress
  http:
  - name: canary
    matchers:
    - uri:
        prefix: /api
      headers:
      - name: x-canary
        value: "true"
      - name: user-agent
        value: ".*Mobile.*"
        regex: true
        invertMatch: true
      method: GET
    - uri:
        regex: /v[0-9]+/.*
    forwardTo:
      destinations:
      - ref:
          name: default-service-blue-10000
          namespace: gloo-system
          cluster: local
        weight: 90
      - ref:
          name: reviews
        kind: VIRTUAL_DESTINATION
        port:
          number: 9080
        weight: 10
    retries:
      attempts: 3
      perTryTimeout: 250ms
      retryOn: 5xx,connect-failure
    timeout: 2s
  - forwardTo:
      destinations:
      - ref:
          name: default-service-blue-10000
          namespace: gloo-system
        kind: UPSTREAM
`,
	"VirtualDestination": `apiVersion: meshrelay.io/v1alpha1
kind: VirtualDestination
metadata:
  name: reviews
  namespace: bookinfo
spec:
  hosts: [reviews.global]
  ports:
  - number: 9080
    protocol: HTTP
    targetPort:
      name: http
  - number: 9443
    protocol: TLS
    targetPort:
      number: 443
  - number: 50051
  services:
  - labels:
      app: reviews
    cluster: local
  - name: reviews
    namespace: bookinfo
`,
	"FailoverPolicy": `apiVersion: meshrelay.io/v1alpha1
kind: FailoverPolicy
metadata:
  name: reviews
  namespace: bookinfo
spec:
  applyToDestinations:
  - kind: VIRTUAL_DESTINATION
    selector:
      labels:
        failover: "true"
  config:
    localityMappings:
    - from:
        region: us-east-1
        zone: us-east-1a
      to:
      - region: us-east-1
        zone: us-east-1b
      - region: us-west-2
`,
	"FailoverPolicy empty config": `apiVersion: meshrelay.io/v1alpha1
kind: FailoverPolicy
metadata:
  name: all
spec:
  applyToDestinations:
  - selector:
      name: reviews
`,
	"OutlierDetectionPolicy": `apiVersion: meshrelay.io/v1alpha1
kind: OutlierDetectionPolicy
metadata:
  name: reviews
  namespace: bookinfo
spec:
  applyToDestinations:
  - selector:
      name: reviews
      namespace: bookinfo
  config:
    consecutiveErrors: 7
    interval: 5s
    baseEjectionTime: 1m
    maxEjectionPercent: 0
`,
}

func TestValidateAcceptsExamples(t *testing.T) {
	for name, src := range validExamples {
		t.Run(name, func(t *testing.T) {
			objs, errs := resource.Parse("valid.yaml", []byte(src))
			if len(errs) != 0 || len(objs) != 1 {
				t.Fatalf("got %d objects, errors %v; want one object", len(objs), errs)
			}
		})
	}
}

// TestValidateTypedRoundTrip checks that the typed decoding keeps what validation accepted.
func TestValidateTypedRoundTrip(t *testing.T) {
	objs, errs := resource.Parse("rt.yaml", []byte(validExamples["RouteTable"]))
	if len(errs) != 0 {
		t.Fatal(errs)
	}
	var rt v1alpha1.RouteTable
	if err := objs[0].Into(&rt); err != nil {
		t.Fatal(err)
	}
	r := rt.Spec.HTTP[0]
	d := r.ForwardTo.Destinations
	if r.Timeout.Duration != 2*time.Second || r.Retries.PerTryTimeout.Duration != 250*time.Millisecond ||
		*d[0].Weight != 90 || d[1].Kind != v1alpha1.DestinationKindVirtualDestination || d[1].Port.Number != 9080 ||
		r.Matchers[0].URI.Prefix != "/api" || !r.Matchers[0].Headers[1].InvertMatch || rt.Spec.HTTP[1].ForwardTo.Destinations[0].Weight != nil {
		t.Errorf("RouteTable decoded as %+v", rt.Spec)
	}

	objs, errs = resource.Parse("odp.yaml", []byte(validExamples["OutlierDetectionPolicy"]))
	if len(errs) != 0 {
		t.Fatal(errs)
	}
	var odp v1alpha1.OutlierDetectionPolicy
	if err := objs[0].Into(&odp); err != nil {
		t.Fatal(err)
	}
	if p := odp.Spec.Config.MaxEjectionPercent; p == nil || *p != 0 || odp.Spec.Config.BaseEjectionTime.Duration != time.Minute {
		t.Errorf("OutlierDetectionPolicy config %+v: an explicit 0 must be kept", odp.Spec.Config)
	}
}

// doc builds a resource of kind in namespace ns named name with spec (indented by two).
func doc(kind, name, spec string) string {
	return "apiVersion: meshrelay.io/v1alpha1\nkind: " + kind + "\nmetadata:\n  name: " + name + "\n  namespace: ns\nspec:\n" + spec
}

func TestValidateRejects(t *testing.T) {
	tests := []struct {
		name  string
		src   string
		field string
		want  string // a key word of the reason
	}{
		// Upstream
		{"upstream kube and static", doc("Upstream", "u", "  kube: {serviceName: s, servicePort: 80}\n  static: {hosts: [{addr: 10.0.0.1, port: 80}]}\n"), "spec", "at most one of kube, static"},
		{"upstream kube port", doc("Upstream", "u", "  kube: {serviceName: s, servicePort: 70000}\n"), "spec.kube.servicePort", "between 1 and 65535"},
		{"upstream health path", doc("Upstream", "u", "  healthChecks:\n  - {timeout: 1s, interval: 1s, httpHealthCheck: {path: /ok}}\n  - {timeout: 1s, interval: 1s, httpHealthCheck: {path: health}}\n"), "spec.healthChecks[1].httpHealthCheck.path", "must start with '/'"},
		{"upstream health threshold", doc("Upstream", "u", "  healthChecks:\n  - {timeout: 1s, interval: 1s, healthyThreshold: -1, httpHealthCheck: {path: /}}\n"), "spec.healthChecks[0].healthyThreshold", "at least 1"},
		{"upstream bad duration", doc("Upstream", "u", "  healthChecks:\n  - {timeout: 1x, interval: 1s, httpHealthCheck: {path: /}}\n"), "spec.healthChecks[0].timeout", "not a duration"},
		{"upstream negative duration", doc("Upstream", "u", "  healthChecks:\n  - {timeout: 1s, interval: -1s, httpHealthCheck: {path: /}}\n"), "spec.healthChecks[0].interval", "greater than 0"},
		{"upstream number as duration", doc("Upstream", "u", "  connectTimeout: 5\n"), "spec.connectTimeout", "duration string"},
		{"upstream missing interval", doc("Upstream", "u", "  healthChecks:\n  - {timeout: 1s, httpHealthCheck: {path: /}}\n"), "spec.healthChecks[0].interval", "is required"},
		{"upstream ejection percent", doc("Upstream", "u", "  outlierDetection: {maxEjectionPercent: 101}\n"), "spec.outlierDetection.maxEjectionPercent", "between 0 and 100"},
		{"upstream typo", doc("Upstream", "u", "  healthCheck: []\n"), "spec.healthCheck", "unknown field (known here: kube, static, healthChecks"},
		{"upstream nested typo", doc("Upstream", "u", "  healthChecks:\n  - {timeout: 1s, interval: 1s, httpHealthCheck: {path: /}}\n  - {timout: 1s, interval: 1s, httpHealthCheck: {path: /}}\n"), "spec.healthChecks[1].timout", "unknown field"},

		// FailoverScheme
		{"scheme primary in its groups", doc("FailoverScheme", "fs", "  primary: {clusterName: local, name: blue, namespace: ns}\n  failoverGroups:\n  - priorityGroup:\n    - cluster: local\n      upstreams: [{name: blue}]\n"), "spec.failoverGroups[0].priorityGroup[0].upstreams[0]", "is the primary"},
		{"scheme no groups", doc("FailoverScheme", "fs", "  primary: {clusterName: local, name: blue}\n"), "spec.failoverGroups", "at least one failover group"},
		{"scheme primary name", doc("FailoverScheme", "fs", "  primary: {clusterName: local}\n  failoverGroups: [{priorityGroup: [{cluster: remote, upstreams: [{name: green}]}]}]\n"), "spec.primary.name", "is required"},
		{"scheme empty upstreams", doc("FailoverScheme", "fs", "  primary: {clusterName: local, name: blue}\n  failoverGroups: [{priorityGroup: [{cluster: remote, upstreams: []}]}]\n"), "spec.failoverGroups[0].priorityGroup[0].upstreams", "at least one upstream"},
		{"scheme duplicate target", doc("FailoverScheme", "fs", "  primary: {clusterName: local, name: blue}\n  failoverGroups:\n  - priorityGroup: [{cluster: remote, upstreams: [{name: green}]}]\n  - priorityGroup: [{cluster: remote, upstreams: [{name: green, namespace: ns}]}]\n"), "spec.failoverGroups[1].priorityGroup[0].upstreams[0]", "duplicate failover target"},

		// Gateway
		{"gateway both kinds", doc("Gateway", "gw", "  bindPort: 80\n  httpGateway: {}\n  tcpGateway: {tcpHosts: [{name: a, destination: {forwardSniClusterName: {}}}]}\n"), "spec", "exactly one of httpGateway, tcpGateway"},
		{"gateway no kind", doc("Gateway", "gw", "  bindPort: 80\n"), "spec", "exactly one of httpGateway, tcpGateway"},
		{"gateway port", doc("Gateway", "gw", "  bindPort: 0\n  httpGateway: {}\n"), "spec.bindPort", "is required"},
		{"gateway two destinations", doc("Gateway", "gw", "  bindPort: 15443\n  tcpGateway:\n    tcpHosts:\n    - name: failover\n      destination:\n        forwardSniClusterName: {}\n        single: {upstream: {name: u}}\n"), "spec.tcpGateway.tcpHosts[0].destination", "exactly one of forwardSniClusterName, single"},
		{"gateway bind address", doc("Gateway", "gw", "  bindAddress: localhost\n  bindPort: 80\n  httpGateway: {}\n"), "spec.bindAddress", "IP address"},

		// RouteTable
		{"route uri two kinds", doc("RouteTable", "rt", "  hosts: ['*']\n  http:\n  - matchers:\n    - uri: {prefix: /}\n    - uri: {prefix: /a, exact: /a}\n    forwardTo: {destinations: [{ref: {name: u}}]}\n"), "spec.http[0].matchers[1].uri", "exactly one of prefix, exact, regex"},
		{"route no hosts", doc("RouteTable", "rt", "  http: [{forwardTo: {destinations: [{ref: {name: u}}]}}]\n"), "spec.hosts", "at least one host"},
		{"route zero weights", doc("RouteTable", "rt", "  hosts: [a.example.com]\n  http:\n  - forwardTo: {destinations: [{ref: {name: blue}, weight: 0}, {ref: {name: green}}]}\n"), "spec.http[0].forwardTo.destinations", "weights sum to 0"},
		{"route bad kind", doc("RouteTable", "rt", "  hosts: [a.example.com]\n  http:\n  - forwardTo: {destinations: [{ref: {name: blue}, kind: SERVICE}]}\n"), "spec.http[0].forwardTo.destinations[0].kind", "must be one of UPSTREAM, VIRTUAL_DESTINATION"},
		{"route bad timeout", doc("RouteTable", "rt", "  hosts: [a.example.com]\n  http:\n  - forwardTo: {destinations: [{ref: {name: blue}}]}\n    retries: {perTryTimeout: 0s}\n"), "spec.http[0].retries.perTryTimeout", "greater than 0"},
		{"route weight not a number", doc("RouteTable", "rt", "  hosts: [a.example.com]\n  http:\n  - forwardTo: {destinations: [{ref: {name: blue}, weight: \"10%\"}]}\n"), "spec.http[0].forwardTo.destinations[0].weight", "must be an integer, not a string"},
		{"route method", doc("RouteTable", "rt", "  hosts: [a.example.com]\n  http:\n  - matchers: [{method: get}]\n    forwardTo: {destinations: [{ref: {name: blue}}]}\n"), "spec.http[0].matchers[0].method", "must be one of GET"},

		// VirtualDestination
		{"vd protocol", doc("VirtualDestination", "vd", "  hosts: [reviews.global]\n  ports: [{number: 9080, protocol: HTTP3}]\n  services: [{name: reviews}]\n"), "spec.ports[0].protocol", "must be one of HTTP, HTTP2, GRPC, TCP, TLS"},
		{"vd empty selector", doc("VirtualDestination", "vd", "  hosts: [reviews.global]\n  ports: [{number: 9080}]\n  services: [{namespace: bookinfo}]\n"), "spec.services[0]", "at least one of labels, name"},
		{"vd bad host", doc("VirtualDestination", "vd", "  hosts: [Reviews_Global]\n  ports: [{number: 9080}]\n  services: [{name: reviews}]\n"), "spec.hosts[0]", "DNS name"},
		{"vd target port both", doc("VirtualDestination", "vd", "  hosts: [reviews.global]\n  ports: [{number: 9080, targetPort: {number: 80, name: http}}]\n  services: [{name: reviews}]\n"), "spec.ports[0].targetPort", "exactly one of number, name"},

		// FailoverPolicy
		{"fp no destinations", doc("FailoverPolicy", "fp", "  config: {}\n"), "spec.applyToDestinations", "at least one destination selector"},
		{"fp kind", doc("FailoverPolicy", "fp", "  applyToDestinations: [{kind: UPSTREAM}]\n"), "spec.applyToDestinations[0].kind", "VIRTUAL_DESTINATION"},
		{"fp mapping region", doc("FailoverPolicy", "fp", "  applyToDestinations: [{}]\n  config:\n    localityMappings:\n    - from: {region: us-east-1}\n      to: [{zone: us-west-2a}]\n"), "spec.config.localityMappings[0].to[0].region", "is required"},

		// OutlierDetectionPolicy
		{"odp percent", doc("OutlierDetectionPolicy", "odp", "  applyToDestinations: [{}]\n  config: {maxEjectionPercent: -5}\n"), "spec.config.maxEjectionPercent", "between 0 and 100"},
		{"odp errors", doc("OutlierDetectionPolicy", "odp", "  applyToDestinations: [{}]\n  config: {consecutiveErrors: -1}\n"), "spec.config.consecutiveErrors", "at least 1"},
		{"odp bad interval", doc("OutlierDetectionPolicy", "odp", "  applyToDestinations: [{}]\n  config: {interval: 10}\n"), "spec.config.interval", "duration string"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			objs, errs := resource.Parse("bad.yaml", []byte(tc.src))
			if len(objs) != 0 || len(errs) != 1 {
				t.Fatalf("got %d objects and errors %v; want one error", len(objs), errs)
			}
			err := errs[0]
			if !errors.Is(err, resource.ErrInvalid) {
				t.Errorf("error %v does not match ErrInvalid", err)
			}
			kind := strings.Fields(strings.Split(tc.src, "kind: ")[1])[0]
			name := strings.Fields(strings.Split(tc.src, "name: ")[1])[0]
			res := kind + ` "ns/` + name + `"`
			msg := err.Error()
			t.Log(msg)
			for _, w := range []string{res + ": " + tc.field, tc.want} {
				if !strings.Contains(msg, w) {
					t.Errorf("error %q does not contain %q", msg, w)
				}
			}
		})
	}
}

// TestValidateJoinsErrors checks that every problem of a resource is reported, each as a
// FieldError naming the resource.
func TestValidateJoinsErrors(t *testing.T) {
	src := doc("RouteTable", "rt", "  hosts: ['']\n  http:\n  - matchers: [{uri: {}}]\n    forwardTo: {destinations: []}\n")
	_, errs := resource.Parse("bad.yaml", []byte(src))
	if len(errs) != 1 {
		t.Fatalf("errors %v, want one per document", errs)
	}
	var fes []*resource.FieldError
	var walk func(error)
	walk = func(err error) {
		switch e := err.(type) {
		case *resource.FieldError:
			fes = append(fes, e)
		case interface{ Unwrap() []error }:
			for _, x := range e.Unwrap() {
				walk(x)
			}
		case interface{ Unwrap() error }:
			walk(e.Unwrap())
		}
	}
	walk(errs[0])
	if !errors.Is(errs[0], resource.ErrInvalid) {
		t.Errorf("joined error %v does not match ErrInvalid", errs[0])
	}
	want := []string{"spec.hosts[0]", "spec.http[0].matchers[0].uri", "spec.http[0].forwardTo.destinations"}
	if len(fes) != len(want) {
		t.Fatalf("field errors %v, want %d: %v", errs[0], len(want), want)
	}
	for i, fe := range fes {
		if fe.Resource != `RouteTable "ns/rt"` || fe.Field != want[i] || !errors.Is(fe, resource.ErrInvalid) {
			t.Errorf("field error %d: %+v, want field %s of RouteTable \"ns/rt\"", i, *fe, want[i])
		}
	}
}

func TestValidateDurations(t *testing.T) {
	for _, tc := range []struct {
		value string
		want  string // empty: valid
	}{
		{"1s", ""},
		{"250ms", ""},
		{"1.5s", ""},
		{"2m", ""},
		{"1x", `"1x" is not a duration`},
		{"-1s", "must be greater than 0"},
		{"0s", "must be greater than 0"},
		{"1", `"1" is not a duration`},
		{"true", "not a boolean"},
	} {
		t.Run(tc.value, func(t *testing.T) {
			v := tc.value
			if v != "true" {
				v = `"` + v + `"`
			}
			src := doc("Upstream", "u", "  connectTimeout: "+v+"\n")
			_, errs := resource.Parse("d.yaml", []byte(src))
			switch {
			case tc.want == "" && len(errs) != 0:
				t.Errorf("rejected: %v", errs)
			case tc.want != "" && len(errs) != 1:
				t.Errorf("errors %v, want one", errs)
			case tc.want != "":
				msg := errs[0].Error()
				if !strings.Contains(msg, `Upstream "ns/u": spec.connectTimeout: `) || !strings.Contains(msg, tc.want) {
					t.Errorf("error %q, want the field and %q", msg, tc.want)
				}
			}
		})
	}
}
