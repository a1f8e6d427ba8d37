package charts_test

import (
	"crypto/x509"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"sigs.k8s.io/yaml"

	"github.com/meshrelay/meshrelay/api/v1alpha1"
	"github.com/meshrelay/meshrelay/charts"
	"github.com/meshrelay/meshrelay/internal/pki"
	"github.com/meshrelay/meshrelay/internal/pki/pkitest"
)

const serverName = "meshrelay-server" // the objects' name with the default release name

// serverHAValues are the seed's HA settings: replicas, leader election, cluster load
// balancing, a shared Redis, active/passive and a safe start window instead of safe mode.
func serverHAValues() map[string]any {
	return vals(
		"replicas", 3,
		"leaderElection", true,
		"leaseDuration", "10s",
		"enableClusterLoadBalancing", true,
		"mgmtClusterName", "east",
		"redis.address", "redis.meshrelay-system.svc:6379",
		"redis.prefix", "mr",
		"redis.passwordSecret.name", "redis-auth",
		"safeMode", false,
		"safeStartWindow", 90,
		"relay.serverNames", []any{"mgmt.example.com", "203.0.113.10"},
		"relay.agentCertTTL", "30m",
		"meshCA.certTTL", "12h",
		"trustDomain", "mesh.example.com",
		"log.level", "debug",
		"config.configMap", "meshrelay-config",
	)
}

// serverEverythingValues turns on every optional piece on top of the HA values.
func serverEverythingValues() map[string]any {
	return merged(serverHAValues(), vals(
		"kubernetes.enabled", true,
		"kubernetes.kubeconfigSecret.name", "mgmt-kubeconfig",
		"kubernetes.kubeconfigSecret.key", "config",
		"redis.tls.enabled", true,
		"redis.tls.serverName", "redis.example.com",
		"redis.tls.caSecret.name", "redis-ca",
		"redis.tls.caSecret.key", "ca.pem",
		"relay.serverCertSecretName", "relay-serving",
		"relay.tlsMode", "tls",
		"relay.advertiseAddress", "[$(POD_IP)]:9900",
		"relay.ca.generate", false,
		"relay.ca.secretName", "my-relay-ca",
		"networkPolicy.enabled", true,
		"networkPolicy.adminFrom", []any{map[string]any{"namespaceSelector": map[string]any{}}},
		"service.annotations", map[string]any{"external-dns.alpha.kubernetes.io/hostname": "mgmt.example.com"},
		"service.loadBalancerSourceRanges", []any{"10.0.0.0/8"},
		"service.externalTrafficPolicy", "Local",
		"service.loadBalancerClass", "service.k8s.aws/nlb",
		"topologySpreadConstraints", []any{map[string]any{"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "ScheduleAnyway"}},
		"image.digest", "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
		"extraArgs", []any{"--relay-server-names=unused.example.com"},
		"extraEnv", []any{map[string]any{"name": "GODEBUG", "value": "tlsrsakex=0"}},
		"podAnnotations", map[string]any{"example.com/team": "mesh"},
		"podLabels", map[string]any{"team": "mesh"},
		"nodeSelector", map[string]any{"kubernetes.io/os": "linux"},
		"tolerations", []any{map[string]any{"key": "dedicated", "operator": "Equal", "value": "mesh", "effect": "NoSchedule"}},
		"priorityClassName", "system-cluster-critical",
		"imagePullSecrets", []any{map[string]any{"name": "regcred"}},
		"serviceAccount.annotations", map[string]any{"eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/meshrelay"},
	))
}

func TestServerDefaults(t *testing.T) {
	r := render(t, charts.Server, nil)
	d := deployment(t, r)
	args := d.Spec.Template.Spec.Containers[0].Args
	checkArgs(t, d)
	if got := *d.Spec.Replicas; got != 1 {
		t.Errorf("replicas %d, want 1", got)
	}
	if d.Spec.Strategy.Type != appsv1.RecreateDeploymentStrategyType {
		t.Errorf("one in-memory replica: strategy %s, want Recreate", d.Spec.Strategy.Type)
	}
	wantArgs(t, args, "server", "--relay-address=:9900", "--admin-address=:9901", "--safe-mode=true",
		"--relay-ca-cert=/etc/meshrelay/relay-ca/tls.crt", "--mesh-ca-cert=/etc/meshrelay/mesh-ca/tls.crt",
		"--token-file=/etc/meshrelay/token/token", "--admin-token-file=/etc/meshrelay/admin-token/token", "--replica-id=$(POD_NAME)", "--advertise-address=$(POD_IP):9900",
		"--relay-server-names=meshrelay-server,meshrelay-server.meshrelay-system,meshrelay-server.meshrelay-system.svc,meshrelay-server.meshrelay-system.svc.cluster.local,"+
			"meshrelay-server-admin,meshrelay-server-admin.meshrelay-system,meshrelay-server-admin.meshrelay-system.svc,meshrelay-server-admin.meshrelay-system.svc.cluster.local")
	noFlags(t, args, "admin-plaintext", "admin-tls-cert-file")
	noFlags(t, args, "leader-election", "cluster-load-balancing", "redis-address", "mgmt-cluster-name", "safe-start-window", "config-dir",
		"kubernetes", "redis-password")

	svc := get[corev1.Service](t, r, "Service", serverName)
	if svc.Spec.Type != corev1.ServiceTypeLoadBalancer || len(svc.Spec.Ports) != 1 || svc.Spec.Ports[0].Port != 9900 || svc.Spec.Ports[0].TargetPort.String() != "relay" {
		t.Errorf("relay Service: want a LoadBalancer on 9900 to the relay port, have %s %+v", svc.Spec.Type, svc.Spec.Ports)
	}
	admin := get[corev1.Service](t, r, "Service", serverName+"-admin")
	if admin.Spec.Type != corev1.ServiceTypeClusterIP || admin.Spec.Ports[0].Port != 9901 {
		t.Errorf("admin Service: want ClusterIP on 9901, have %s %+v", admin.Spec.Type, admin.Spec.Ports)
	}
	if ann := d.Spec.Template.Annotations; ann["prometheus.io/scrape"] != "true" || ann["prometheus.io/port"] != "9901" || ann["prometheus.io/scheme"] != "https" {
		t.Errorf("pod annotations %v: want Prometheus scraping of the admin port over HTTPS", ann)
	}
	for _, kind := range []string{"ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding", "PodDisruptionBudget", "NetworkPolicy"} {
		if objs := r.OfKind(kind); len(objs) != 0 {
			t.Errorf("defaults render a %s", kind)
		}
	}
	if at := d.Spec.Template.Spec.AutomountServiceAccountToken; at == nil || *at {
		t.Error("the pods mount a service account token they do not use (not Kubernetes mode)")
	}
	sa := get[corev1.ServiceAccount](t, r, "ServiceAccount", serverName)
	if d.Spec.Template.Spec.ServiceAccountName != sa.Name {
		t.Errorf("pods run as %q, the chart creates %q", d.Spec.Template.Spec.ServiceAccountName, sa.Name)
	}
	c := d.Spec.Template.Spec.Containers[0]
	if c.Resources.Limits.Memory().IsZero() || c.Resources.Requests.Cpu().IsZero() {
		t.Errorf("resources %+v: want a memory limit and a CPU request", c.Resources)
	}
	if !slices.ContainsFunc(c.Env, func(e corev1.EnvVar) bool {
		return e.Name == "GOMEMLIMIT" && e.ValueFrom != nil && e.ValueFrom.ResourceFieldRef != nil && e.ValueFrom.ResourceFieldRef.Resource == "limits.memory"
	}) {
		t.Error("GOMEMLIMIT does not follow the memory limit")
	}
	for _, s := range []string{"meshrelay-relay-token", "meshrelay-admin-token", "meshrelay-relay-ca", "meshrelay-mesh-ca"} {
		sec := get[corev1.Secret](t, r, "Secret", s)
		if sec.Annotations["helm.sh/resource-policy"] != "keep" {
			t.Errorf("generated Secret %s is not kept on uninstall", s)
		}
	}
}

// TestServerHA renders the seed's HA values and checks each one reaches the binary.
func TestServerHA(t *testing.T) {
	r := render(t, charts.Server, serverHAValues())
	d := deployment(t, r)
	args := d.Spec.Template.Spec.Containers[0].Args
	checkArgs(t, d)
	if got := *d.Spec.Replicas; got != 3 {
		t.Errorf("replicas %d, want 3", got)
	}
	if d.Spec.Strategy.Type != appsv1.RollingUpdateDeploymentStrategyType || d.Spec.Strategy.RollingUpdate.MaxUnavailable.IntValue() != 0 {
		t.Errorf("strategy %+v: want a rolling update that keeps every replica", d.Spec.Strategy)
	}
	wantArgs(t, args, "--leader-election", "--lease-duration=10s", "--cluster-load-balancing", "--mgmt-cluster-name=east",
		"--redis-address=redis.meshrelay-system.svc:6379", "--redis-prefix=mr", "--safe-mode=false", "--safe-start-window=90",
		"--agent-cert-ttl=30m", "--mesh-cert-ttl=12h", "--trust-domain=mesh.example.com", "--log-level=debug",
		"--config-dir=/etc/meshrelay/config")
	if a := flagArg(args, "relay-server-names"); !strings.HasSuffix(a, ",mgmt.example.com,203.0.113.10") {
		t.Errorf("%q: want the extra server names after the Service names", a)
	}
	c := d.Spec.Template.Spec.Containers[0]
	for _, a := range args {
		if strings.Contains(a, "redis-password") {
			t.Errorf("the Redis password is an argument: %q", a)
		}
	}
	if !slices.ContainsFunc(c.Env, func(e corev1.EnvVar) bool {
		return e.Name == "MESHRELAY_REDIS_PASSWORD" && e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil &&
			e.ValueFrom.SecretKeyRef.Name == "redis-auth" && e.ValueFrom.SecretKeyRef.Key == "password"
	}) {
		t.Errorf("want MESHRELAY_REDIS_PASSWORD from Secret redis-auth, have %+v", c.Env)
	}
	pdb := get[policyv1.PodDisruptionBudget](t, r, "PodDisruptionBudget", serverName)
	if pdb.Spec.MaxUnavailable.IntValue() != 1 || !selects(pdb.Spec.Selector.MatchLabels, d.Spec.Template.Labels) {
		t.Errorf("PodDisruptionBudget %+v", pdb.Spec)
	}
	if !slices.ContainsFunc(d.Spec.Template.Spec.Volumes, func(v corev1.Volume) bool {
		return v.Name == "config" && v.ConfigMap != nil && v.ConfigMap.Name == "meshrelay-config"
	}) {
		t.Error("config.configMap is not mounted")
	}
	// Not Kubernetes mode: still no RBAC.
	if objs := r.OfKind("ClusterRole"); len(objs) != 0 {
		t.Errorf("ClusterRole without kubernetes.enabled")
	}
}

// TestServerValues checks single values against what they must change.
func TestServerValues(t *testing.T) {
	t.Run("service", func(t *testing.T) {
		r := render(t, charts.Server, vals("service.type", "ClusterIP", "service.port", 443, "relay.port", 9443, "admin.port", 19901,
			"admin.service.enabled", false, "metrics.podAnnotations", false))
		d := deployment(t, r)
		checkArgs(t, d)
		wantArgs(t, d.Spec.Template.Spec.Containers[0].Args, "--relay-address=:9443", "--admin-address=:19901", "--advertise-address=$(POD_IP):9443")
		svc := get[corev1.Service](t, r, "Service", serverName)
		if svc.Spec.Type != corev1.ServiceTypeClusterIP || svc.Spec.Ports[0].Port != 443 {
			t.Errorf("Service %s %+v: want ClusterIP on 443", svc.Spec.Type, svc.Spec.Ports)
		}
		if _, ok := r.Get("Service", serverName+"-admin"); ok {
			t.Error("admin.service.enabled=false still renders the admin Service")
		}
		if len(d.Spec.Template.Annotations) != 0 {
			t.Errorf("pod annotations %v with metrics.podAnnotations=false", d.Spec.Template.Annotations)
		}
	})
	t.Run("bring your own certificates", func(t *testing.T) {
		r := render(t, charts.Server, vals("relay.ca.generate", false, "relay.ca.secretName", "corp-relay-ca",
			"relay.serverCertSecretName", "relay-serving", "meshCA.generate", false, "meshCA.secretName", "corp-mesh-ca",
			"relay.token.generate", false, "relay.token.secretName", "corp-token", "relay.token.secretKey", "relay-token",
			"admin.token.generate", false, "admin.token.secretName", "corp-admin", "admin.token.secretKey", "admin",
			"admin.serverCertSecretName", "admin-serving"))
		d := deployment(t, r)
		checkArgs(t, d)
		args := d.Spec.Template.Spec.Containers[0].Args
		wantArgs(t, args, "--relay-server-cert=/etc/meshrelay/relay-server/tls.crt", "--relay-server-key=/etc/meshrelay/relay-server/tls.key",
			"--admin-tls-cert-file=/etc/meshrelay/admin-server/tls.crt", "--admin-tls-key-file=/etc/meshrelay/admin-server/tls.key",
			"--token-file=/etc/meshrelay/token/relay-token", "--admin-token-file=/etc/meshrelay/admin-token/admin")
		noFlags(t, args, "relay-server-names") // no certificate is generated
		if objs := r.OfKind("Secret"); len(objs) != 0 {
			t.Errorf("bring-your-own renders Secrets: %s", inventory(r))
		}
		got := map[string]string{}
		for _, v := range d.Spec.Template.Spec.Volumes {
			if v.Secret != nil {
				got[v.Name] = v.Secret.SecretName
			}
		}
		want := map[string]string{"token": "corp-token", "admin-token": "corp-admin", "relay-ca": "corp-relay-ca", "relay-server": "relay-serving",
			"admin-server": "admin-serving", "mesh-ca": "corp-mesh-ca"}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("Secret volumes %v, want %v", got, want)
		}
	})
	t.Run("throwaway CA in the data dir", func(t *testing.T) {
		d := deployment(t, render(t, charts.Server, vals("relay.ca.secretName", "", "meshCA.secretName", "")))
		checkArgs(t, d)
		noFlags(t, d.Spec.Template.Spec.Containers[0].Args, "relay-ca-cert", "relay-ca-key", "mesh-ca-cert", "mesh-ca-key")
	})
	t.Run("safe start window", func(t *testing.T) {
		d := deployment(t, render(t, charts.Server, vals("safeMode", false, "safeStartWindow", 45)))
		checkArgs(t, d)
		wantArgs(t, d.Spec.Template.Spec.Containers[0].Args, "--safe-mode=false", "--safe-start-window=45")
	})
	t.Run("strategy and spread", func(t *testing.T) {
		d := deployment(t, render(t, charts.Server, serverEverythingValues()))
		tsc := d.Spec.Template.Spec.TopologySpreadConstraints
		if len(tsc) != 1 || tsc[0].LabelSelector == nil || !selects(tsc[0].LabelSelector.MatchLabels, d.Spec.Template.Labels) {
			t.Errorf("topology spread %+v: want the pods' labels added", tsc)
		}
		if img := d.Spec.Template.Spec.Containers[0].Image; !strings.HasSuffix(img, "@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef") {
			t.Errorf("image %s: want the digest", img)
		}
	})
}

// TestServerRefuses checks that values the server would refuse at start fail at install,
// with a message naming the value.
func TestServerRefuses(t *testing.T) {
	for _, c := range []struct {
		values map[string]any
		want   string
	}{
		{vals("replicas", 2), "set redis.address"},
		{vals("replicas", 2, "redis.address", "r:6379"), "leaderElection: true"},
		{vals("replicas", 0), "at least 1"},
		{vals("leaderElection", true), "set redis.address"},
		{vals("enableClusterLoadBalancing", true), "set redis.address"},
		{vals("mgmtClusterName", "east"), "set redis.address"},
		{vals("safeStartWindow", 30), "safeMode: false"},
		{vals("safeMode", false, "safeStartWindow", -1), "safeStartWindow must be >= 0"},
		{vals("relay.tlsMode", "plain"), "relay.tlsMode"},
		{vals("replicas", 2, "redis.address", "r:6379", "leaderElection", true, "relay.ca.secretName", ""), "share one relay CA"},
		{vals("redis.tls.enabled", true), "redis.tls.enabled needs redis.address"},
		{vals("log.format", "xml"), "log.format"},
	} {
		err := renderErr(t, charts.Server, c.values)
		if !strings.Contains(err.Error(), c.want) {
			t.Errorf("values %v: error %q, want it to say %q", c.values, err, c.want)
		}
	}
}

// TestServerKubernetesMode checks the RBAC of Kubernetes mode and the flags it still needs.
func TestServerKubernetesMode(t *testing.T) {
	r := render(t, charts.Server, vals("kubernetes.enabled", true, "kubernetes.kubeconfigSecret.name", "mgmt-kubeconfig"))
	d := deployment(t, r)
	checkArgs(t, d)
	wantArgs(t, d.Spec.Template.Spec.Containers[0].Args, "--kubernetes", "--kubeconfig=/etc/meshrelay/kubeconfig/kubeconfig")
	if at := d.Spec.Template.Spec.AutomountServiceAccountToken; at == nil || !*at {
		t.Error("Kubernetes mode without the service account token")
	}

	cr := get[rbacv1.ClusterRole](t, r, "ClusterRole", serverName)
	rules := rulesOf(t, cr.Rules)
	kinds := []string{v1alpha1.KindKubernetesCluster, v1alpha1.KindUpstream, v1alpha1.KindFailoverScheme, v1alpha1.KindGateway,
		v1alpha1.KindRouteTable, v1alpha1.KindVirtualDestination, v1alpha1.KindFailoverPolicy, v1alpha1.KindOutlierDetectionPolicy}
	want := map[string][]string{}
	for _, k := range kinds {
		want[v1alpha1.Group+"/"+plural(k)] = []string{"get", "list", "watch"}
		want[v1alpha1.Group+"/"+plural(k)+"/status"] = []string{"get", "patch", "update"}
	}
	if !reflect.DeepEqual(rules, want) {
		t.Errorf("ClusterRole rules\n%v\nwant\n%v", rules, want)
	}
	// Every CRD the chart ships must be readable (the CRDs are another part of the work; the
	// check covers whatever crds/ holds).
	for _, crd := range r.CRDs {
		var c struct {
			Spec struct {
				Group string `json:"group"`
				Names struct {
					Plural string `json:"plural"`
				} `json:"names"`
			} `json:"spec"`
		}
		if err := yaml.Unmarshal(crd.JSON, &c); err != nil {
			t.Fatal(err)
		}
		if _, ok := rules[c.Spec.Group+"/"+c.Spec.Names.Plural]; !ok && crd.Kind == "CustomResourceDefinition" {
			t.Errorf("CRD %s (%s/%s) is not readable by the server's ClusterRole", crd.Name, c.Spec.Group, c.Spec.Names.Plural)
		}
	}
	crb := get[rbacv1.ClusterRoleBinding](t, r, "ClusterRoleBinding", serverName)
	checkBinding(t, crb.RoleRef, crb.Subjects, "ClusterRole", cr.Name, d)
	if _, ok := r.Get("Role", serverName+"-leader-election"); ok {
		t.Error("Lease Role without leaderElection")
	}

	r = render(t, charts.Server, vals("kubernetes.enabled", true, "leaderElection", true, "redis.address", "r:6379"))
	d = deployment(t, r)
	role := get[rbacv1.Role](t, r, "Role", serverName+"-leader-election")
	if got, want := rulesOf(t, role.Rules), map[string][]string{"coordination.k8s.io/leases": {"create", "get", "update"}}; !reflect.DeepEqual(got, want) {
		t.Errorf("Lease Role rules %v, want %v", got, want)
	}
	rb := get[rbacv1.RoleBinding](t, r, "RoleBinding", serverName+"-leader-election")
	checkBinding(t, rb.RoleRef, rb.Subjects, "Role", role.Name, d)
}

// TestServerRedisTLS checks the Redis TLS values and the flags they pass.
func TestServerRedisTLS(t *testing.T) {
	d := deployment(t, render(t, charts.Server, vals("redis.address", "redis:6380", "redis.tls.enabled", true,
		"redis.tls.caSecret.name", "redis-ca", "redis.tls.serverName", "redis.example.com")))
	checkArgs(t, d)
	wantArgs(t, d.Spec.Template.Spec.Containers[0].Args, "--redis-tls", "--redis-tls-ca-file=/etc/meshrelay/redis-ca/ca.crt",
		"--redis-tls-server-name=redis.example.com")
}

// TestServerGeneratedSecretsWorkWithTheBinary loads the CAs and token the chart generates
// the way the server does, issues a serving certificate for the Service's names and an agent
// certificate from them, and verifies both.
func TestServerGeneratedSecretsWorkWithTheBinary(t *testing.T) {
	r := render(t, charts.Server, nil)
	d := deployment(t, r)
	args := d.Spec.Template.Spec.Containers[0].Args
	dir := t.TempDir()
	write := func(secret, key string) string {
		s := get[corev1.Secret](t, r, "Secret", secret)
		p := filepath.Join(dir, secret+"-"+key)
		if err := os.WriteFile(p, s.Data[key], 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	const trustDomain = "meshrelay.local"
	ca, err := pki.LoadCA(write("meshrelay-relay-ca", "tls.crt"), write("meshrelay-relay-ca", "tls.key"), trustDomain)
	if err != nil {
		t.Fatalf("the server refuses the generated relay CA: %v", err)
	}
	bundle, err := pki.ParseCertPEM(get[corev1.Secret](t, r, "Secret", "meshrelay-relay-ca").Data["ca.crt"])
	if err != nil || !bundle.Equal(ca.Cert) {
		t.Fatalf("ca.crt (what agents trust) is not the relay CA: %v", err)
	}
	if left := time.Until(ca.Cert.NotAfter); left < 9*365*24*time.Hour {
		t.Errorf("relay CA valid for %v only", left)
	}

	names := strings.Split(strings.TrimPrefix(flagArg(args, "relay-server-names"), "--relay-server-names="), ",")
	serving := pkitest.Server(t, ca, names...).TLS
	for _, n := range names {
		if _, err := serving.Leaf.Verify(x509.VerifyOptions{DNSName: n, Roots: ca.Pool()}); err != nil {
			t.Errorf("an agent dialing %s would refuse the serving certificate: %v", n, err)
		}
	}

	agentCert := pkitest.Cluster(t, ca, "east").TLS.Leaf
	if err := ca.Verify(agentCert, x509.ExtKeyUsageClientAuth); err != nil {
		t.Errorf("the server would refuse an agent certificate of its own CA: %v", err)
	}
	if c, err := pki.ClusterFromCert(agentCert, trustDomain); err != nil || c != "east" {
		t.Errorf("cluster of the agent certificate: %q, %v", c, err)
	}

	mesh, err := pki.LoadCA(write("meshrelay-mesh-ca", "tls.crt"), write("meshrelay-mesh-ca", "tls.key"), trustDomain)
	if err != nil {
		t.Fatalf("the server refuses the generated mesh CA: %v", err)
	}
	if mesh.Cert.Equal(ca.Cert) {
		t.Error("the mesh CA is the relay CA")
	}
	if _, _, _, err := mesh.IssueMesh("east", time.Hour); err != nil {
		t.Errorf("the generated mesh CA cannot issue gateway certificates: %v", err)
	}

	token := get[corev1.Secret](t, r, "Secret", "meshrelay-relay-token").Data["token"]
	if len(strings.TrimSpace(string(token))) < 32 {
		t.Errorf("generated token %q is too short", token)
	}
	admin := get[corev1.Secret](t, r, "Secret", "meshrelay-admin-token")
	if a := admin.Data["token"]; len(strings.TrimSpace(string(a))) < 32 || string(a) == string(token) || admin.Labels["meshrelay.io/secret"] != "admin-token" {
		t.Errorf("generated admin token Secret: token %q (relay token %q), labels %v", a, token, admin.Labels)
	}
	// A second render (a second install, or helm template) generates different secrets: the
	// chart keeps the first ones only through lookup, which the NOTES explain.
	again := get[corev1.Secret](t, render(t, charts.Server, nil), "Secret", "meshrelay-relay-token").Data["token"]
	if string(again) == string(token) {
		t.Error("two renders generated the same token")
	}
}

func checkBinding(t *testing.T, ref rbacv1.RoleRef, subjects []rbacv1.Subject, kind, name string, d *appsv1.Deployment) {
	t.Helper()
	if ref.Kind != kind || ref.Name != name {
		t.Errorf("binding refers to %s %s, want %s %s", ref.Kind, ref.Name, kind, name)
	}
	want := []rbacv1.Subject{{Kind: "ServiceAccount", Name: d.Spec.Template.Spec.ServiceAccountName, Namespace: d.Namespace}}
	if !reflect.DeepEqual(subjects, want) {
		t.Errorf("binding subjects %+v, want the pods' ServiceAccount %+v", subjects, want)
	}
}

// plural is the resource name of a kind, as controller-gen derives it.
func plural(kind string) string {
	l := strings.ToLower(kind)
	if strings.HasSuffix(l, "y") && !strings.ContainsAny(l[len(l)-2:len(l)-1], "aeiou") {
		return strings.TrimSuffix(l, "y") + "ies"
	}
	return l + "s"
}

// TestServerRedisModes checks the Sentinel and Cluster values: the flags they pass (which
// the binary accepts), the sentinels' password as an environment variable from its Secret,
// a rolling update and the TLS CA in every mode, and that exactly one mode may be set.
func TestServerRedisModes(t *testing.T) {
	sentinel := vals("replicas", 2, "leaderElection", true, "relay.ca.secretName", "relay-ca", "meshCA.secretName", "mesh-ca",
		"redis.sentinel.addresses", []any{"s1.redis:26379", "s2.redis:26379", "s3.redis:26379"}, "redis.sentinel.masterName", "mymaster",
		"redis.sentinel.passwordSecret.name", "sentinel-auth", "redis.passwordSecret.name", "redis-auth",
		"redis.tls.enabled", true, "redis.tls.caSecret.name", "redis-ca")
	d := deployment(t, render(t, charts.Server, sentinel))
	checkArgs(t, d)
	c := d.Spec.Template.Spec.Containers[0]
	wantArgs(t, c.Args, "--redis-sentinel-addresses=s1.redis:26379,s2.redis:26379,s3.redis:26379", "--redis-master-name=mymaster",
		"--redis-tls", "--redis-tls-ca-file=/etc/meshrelay/redis-ca/ca.crt")
	noFlags(t, c.Args, "redis-address", "redis-cluster-addresses", "redis-sentinel-password", "redis-password")
	if !slices.ContainsFunc(c.Env, func(e corev1.EnvVar) bool {
		return e.Name == "MESHRELAY_REDIS_SENTINEL_PASSWORD" && e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil &&
			e.ValueFrom.SecretKeyRef.Name == "sentinel-auth" && e.ValueFrom.SecretKeyRef.Key == "password"
	}) {
		t.Errorf("want MESHRELAY_REDIS_SENTINEL_PASSWORD from Secret sentinel-auth, have %+v", c.Env)
	}
	if !slices.ContainsFunc(d.Spec.Template.Spec.Volumes, func(v corev1.Volume) bool { return v.Name == "redis-ca" }) {
		t.Error("Sentinel mode with redis.tls.caSecret mounts no redis-ca volume")
	}

	d = deployment(t, render(t, charts.Server, vals("redis.cluster.addresses", []any{"n1.redis:6379", "n2.redis:6379"}, "mgmtClusterName", "east")))
	checkArgs(t, d)
	args := d.Spec.Template.Spec.Containers[0].Args
	wantArgs(t, args, "--redis-cluster-addresses=n1.redis:6379,n2.redis:6379", "--mgmt-cluster-name=east")
	noFlags(t, args, "redis-address", "redis-sentinel-addresses", "redis-master-name")
	if d.Spec.Strategy.Type != appsv1.RollingUpdateDeploymentStrategyType {
		t.Errorf("a single replica on a Redis Cluster gets strategy %s, want a rolling update (the store is shared)", d.Spec.Strategy.Type)
	}

	for _, c := range []struct {
		values map[string]any
		want   string
	}{
		{vals("redis.address", "r:6379", "redis.cluster.addresses", []any{"n:6379"}), "redis.address and redis.cluster.addresses exclude each other: set exactly one of"},
		{vals("redis.sentinel.addresses", []any{"s:26379"}, "redis.sentinel.masterName", "m", "redis.cluster.addresses", []any{"n:6379"}),
			"redis.sentinel.addresses and redis.cluster.addresses exclude each other"},
		{vals("redis.sentinel.addresses", []any{"s:26379"}), "redis.sentinel.addresses needs redis.sentinel.masterName"},
		{vals("redis.sentinel.masterName", "m"), "redis.sentinel.masterName needs redis.sentinel.addresses"},
		{vals("redis.sentinel.passwordSecret.name", "x"), "redis.sentinel.passwordSecret needs redis.sentinel.addresses"},
		{vals("replicas", 2), "or redis.sentinel.addresses or redis.cluster.addresses"},
	} {
		err := renderErr(t, charts.Server, c.values)
		if !strings.Contains(err.Error(), c.want) {
			t.Errorf("values %v: error %q, want it to say %q", c.values, err, c.want)
		}
	}
}
