package gateway_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"google.golang.org/protobuf/types/known/durationpb"
	"sigs.k8s.io/yaml"

	"github.com/meshrelay/meshrelay/internal/envoyres"
	"github.com/meshrelay/meshrelay/internal/gateway"
	gt "github.com/meshrelay/meshrelay/internal/gateway/gatewaytest"
	"github.com/meshrelay/meshrelay/internal/snapshot"
)

// goldenEnvoy decodes the Envoy resources of each cluster in the translator's golden
// output of seed 003, with envoyres.Decode.
func goldenEnvoy(t *testing.T) map[string][]types.Resource {
	t.Helper()
	b, err := os.ReadFile("../translate/testdata/seed003.golden.yaml")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]types.Resource{}
	cluster, key := "", ""
	var doc []string
	flush := func() {
		if cluster == "" || key == "" {
			return
		}
		body, err := yaml.YAMLToJSON([]byte(strings.Join(doc, "\n")))
		if err != nil {
			t.Fatalf("golden %s: %v", key, err)
		}
		_, msg, err := envoyres.Decode(snapshot.NewResource(key, body))
		if errors.Is(err, envoyres.ErrNotEnvoy) {
			return
		}
		if err != nil {
			t.Fatalf("golden %s: %v", key, err)
		}
		out[cluster] = append(out[cluster], msg)
	}
	for _, line := range strings.Split(string(b), "\n") {
		switch {
		case strings.HasPrefix(line, "# ===== "):
			flush()
			cluster, key, doc = "", "", nil
			if f := strings.Fields(line); len(f) >= 4 && f[2] == "cluster" {
				cluster = strings.TrimSuffix(f[3], ":")
			}
		case line == "---":
			flush()
			key, doc = "", nil
		case key == "" && strings.HasPrefix(line, "# "):
			key = strings.TrimPrefix(line, "# ")
		default:
			doc = append(doc, line)
		}
	}
	flush()
	return out
}

// placeGolden rewrites the golden resources for this machine: listener and endpoint
// addresses (old → new), health check timing, and real certificates for the secrets.
func placeGolden(t *testing.T, rs []types.Resource, addrs map[string]string, listeners map[string]string, certPEM, keyPEM, caPEM []byte) []types.Resource {
	t.Helper()
	moved := func(a *corev3.Address) {
		sa := a.GetSocketAddress()
		old := net.JoinHostPort(sa.GetAddress(), strconv.Itoa(int(sa.GetPortValue())))
		to, ok := addrs[old]
		if !ok {
			t.Fatalf("no address for golden endpoint %s", old)
		}
		*a = *gt.SocketAddress(t, to)
	}
	for _, r := range rs {
		switch m := r.(type) {
		case *listenerv3.Listener:
			m.Address = gt.SocketAddress(t, listeners[m.GetName()])
		case *clusterv3.Cluster:
			for _, hc := range m.GetHealthChecks() {
				hc.Interval, hc.NoTrafficInterval, hc.Timeout = durationpb.New(200*time.Millisecond), durationpb.New(200*time.Millisecond), durationpb.New(time.Second)
			}
		case *endpointv3.ClusterLoadAssignment:
			for _, g := range m.GetEndpoints() {
				for _, e := range g.GetLbEndpoints() {
					moved(e.GetEndpoint().GetAddress())
				}
			}
		case *tlsv3.Secret:
			switch {
			case m.GetTlsCertificate() != nil:
				*m = *gt.CertSecret(m.GetName(), certPEM, keyPEM)
			case m.GetValidationContext() != nil:
				*m = *gt.CASecret(m.GetName(), caPEM)
			}
		}
	}
	return rs
}

// TestSeed003EndToEnd runs seed 003 on two gateways fed with the translator's output: the
// local gateway's HTTP listener routes to default-service-blue-10000, whose priority 1 is
// the remote failover gateway reached over mTLS with SNI default-service-green-10000,
// which forwards to the green demo app. Failing blue's health moves traffic to green and
// back.
func TestSeed003EndToEnd(t *testing.T) {
	golden := goldenEnvoy(t)
	if len(golden["local"]) != 6 || len(golden["remote"]) != 7 {
		t.Fatalf("golden resources: %d local, %d remote", len(golden["local"]), len(golden["remote"]))
	}
	ca := gt.NewPKI(t)
	blue, blueAddr, blueAdmin := gt.StartDemoApp(t, "blue-pod")
	_, greenAddr, _ := gt.StartDemoApp(t, "green-pod")
	localHTTP, remoteGW := gt.FreeAddr(t), gt.FreeAddr(t)
	addrs := map[string]string{"10.0.1.10:10000": blueAddr, "10.0.2.100:15443": remoteGW, "10.0.2.20:10000": greenAddr}

	localXDS, remoteXDS := gt.StartXDS(t, "127.0.0.1:0"), gt.StartXDS(t, "127.0.0.1:0")
	localCert, localKey := ca.Mesh(t, "local")
	remoteCert, remoteKey := ca.Mesh(t, "remote")
	localXDS.Set(t, "local-gateway", placeGolden(t, golden["local"], addrs,
		map[string]string{"gloo-system-gateway-proxy": localHTTP}, localCert, localKey, ca.CA.CertPEM)...)
	remoteXDS.Set(t, "remote-gateway", placeGolden(t, golden["remote"], addrs,
		map[string]string{"gloo-system-failover-gateway": remoteGW}, remoteCert, remoteKey, ca.CA.CertPEM)...)

	adminAddr := gt.FreeAddr(t)
	local := gt.StartGateway(t, gateway.Config{XDSAddress: localXDS.Addr, NodeID: "local-gateway", AdminAddress: adminAddr})
	remote := gt.StartGateway(t, gateway.Config{XDSAddress: remoteXDS.Addr, NodeID: "remote-gateway"})
	c := gt.Client(t)
	url := "http://" + localHTTP + "/"
	gt.WantBody(t, c, url, "blue-pod", 10*time.Second)

	const cluster = "default-service-blue-10000"
	gt.Eventually(t, 10*time.Second, func() error { // the failover target is checked over mTLS through the remote gateway
		for _, e := range gt.ClusterStatus(t, local, cluster).Endpoints {
			if e.Priority == 1 && (e.Health != "healthy" || !e.TLS || e.SNI != "default-service-green-10000") {
				return fmt.Errorf("priority 1 endpoint %+v", e)
			}
		}
		return nil
	})

	failedAt := time.Now()
	gt.Post(t, c, "http://"+blueAdmin+"/healthcheck/fail")
	gt.WantBody(t, c, url, "green-pod", 10*time.Second)
	t.Logf("failover to the remote cluster after %v (health check interval 200ms, unhealthy threshold 1)", time.Since(failedAt))
	st := gt.ClusterStatus(t, local, cluster)
	if st.ActivePriority != 1 || !strings.Contains(st.Reason, "priority 0 has no healthy endpoint") {
		t.Errorf("local status during failover: priority %d reason %q", st.ActivePriority, st.Reason)
	}
	checkAdmin(t, c, adminAddr, cluster, 1)
	if n := probesUntil(blue, false, failedAt, time.Now()); n == 0 {
		t.Errorf("blue saw no failed health check")
	}

	gt.Post(t, c, "http://"+blueAdmin+"/healthcheck/ok")
	gt.WantBody(t, c, url, "blue-pod", 10*time.Second)
	checkAdmin(t, c, adminAddr, cluster, 0)
	if rs := remote.Status(); len(rs.Listeners) != 1 || rs.Listeners[0].Name != "gloo-system-failover-gateway" {
		t.Errorf("remote listeners: %+v", rs.Listeners)
	}
}

// checkAdmin reads /readyz, /status and /metrics of a gateway's admin server: the
// cluster's active priority must show in both.
func checkAdmin(t *testing.T, c *http.Client, addr, cluster string, priority int) {
	t.Helper()
	if code, _, err := gt.Get(c, "http://"+addr+"/readyz"); err != nil || code != 200 {
		t.Errorf("/readyz: %d %v", code, err)
	}
	_, body, err := gt.Get(c, "http://"+addr+"/status")
	if err != nil {
		t.Fatal(err)
	}
	var st gateway.Status
	if err := json.Unmarshal([]byte(body), &st); err != nil {
		t.Fatalf("/status: %v", err)
	}
	found := false
	for _, cs := range st.Clusters {
		if cs.Name == cluster {
			found = true
			if cs.ActivePriority != priority || cs.Reason == "" || cs.Since.IsZero() {
				t.Errorf("/status cluster %s: activePriority %d since %v reason %q, want priority %d", cluster, cs.ActivePriority, cs.Since, cs.Reason, priority)
			}
		}
	}
	if !found || !st.Ready || !st.XDS.Connected {
		t.Errorf("/status: cluster found %v, ready %v, xds %+v", found, st.Ready, st.XDS)
	}
	_, metrics, err := gt.Get(c, "http://"+addr+"/metrics")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		fmt.Sprintf("meshrelay_gateway_active_priority{cluster=%q} %d", cluster, priority),
		`meshrelay_gateway_requests_total{cluster="` + cluster + `",code="200"}`,
		`meshrelay_gateway_upstream_healthy{cluster="` + cluster + `"`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}
