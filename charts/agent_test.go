package charts_test

import (
	"reflect"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"

	"github.com/meshrelay/meshrelay/charts"
)

const agentName = "meshrelay-agent" // the objects' name with the default release name

// agentValues are the required values plus kv.
func agentValues(kv ...any) map[string]any {
	return merged(vals("cluster", "east", "relay.address", "mgmt.example.com:9900"), vals(kv...))
}

// agentKubeValues: Kubernetes mode (the default) with two replicas and leader election.
func agentKubeValues() map[string]any {
	return agentValues("replicas", 2, "leaderElection", true)
}

// agentEverythingValues turns on every optional piece.
func agentEverythingValues() map[string]any {
	return merged(agentKubeValues(), vals(
		"kubernetes.kubeconfigSecret.name", "remote-kubeconfig",
		"kubernetes.kubeconfigSecret.context", "east-admin",
		"kubernetes.namespaces", []any{"default", "shop"},
		"kubernetes.maxDeleteFraction", 0.2,
		"kubernetes.deleteGuardMin", 3,
		"kubernetes.resync", "30s",
		"leaseDuration", "20s",
		"relay.serverName", "meshrelay-server.meshrelay-system.svc",
		"relay.tlsMode", "tls",
		"relay.resolveInterval", "30s",
		"relay.maxBackoff", "1m",
		"relay.tokenSecret.name", "east-token",
		"relay.tokenSecret.key", "relay-token",
		"relay.caSecret.name", "east-ca",
		"relay.caSecret.key", "bundle.pem",
		"xds.port", 18001,
		"admin.port", 19977,
		"stateVolume", map[string]any{"persistentVolumeClaim": map[string]any{"claimName": "agent-state"}},
		"networkPolicy.enabled", true,
		"xds.service.enabled", true,
		"xds.service.gatewaySelector", map[string]any{"app": "meshrelay-gateway"},
		"networkPolicy.adminFrom", []any{map[string]any{"namespaceSelector": map[string]any{"matchLabels": map[string]any{"name": "monitoring"}}}},
		"topologySpreadConstraints", []any{map[string]any{"maxSkew": 1, "topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "DoNotSchedule"}},
		"extraArgs", []any{"--dns-server=10.96.0.10:53"},
	))
}

func TestAgentRequiredValues(t *testing.T) {
	if err := renderErr(t, charts.Agent, nil); !strings.Contains(err.Error(), "cluster is required") {
		t.Errorf("render without cluster: %v", err)
	}
	if err := renderErr(t, charts.Agent, vals("cluster", "east")); !strings.Contains(err.Error(), "relay.address is required") {
		t.Errorf("render without relay.address: %v", err)
	}
}

// TestAgentDefaults: the required values only: Kubernetes mode, one replica.
func TestAgentDefaults(t *testing.T) {
	r := render(t, charts.Agent, agentValues())
	d := deployment(t, r)
	checkArgs(t, d)
	args := d.Spec.Template.Spec.Containers[0].Args
	wantArgs(t, args, "agent", "--cluster=east", "--relay-address=mgmt.example.com:9900", "--relay-tls-mode=mtls",
		"--token-file=/etc/meshrelay/token/token", "--relay-ca-file=/etc/meshrelay/relay-ca/ca.crt",
		"--state-dir=/var/lib/meshrelay/state", "--admin-address=:9977", "--xds-address=unix:///var/lib/meshrelay/state/xds.sock", "--kubernetes")
	noFlags(t, args, "xds-tls", "leader-election", "relay-server-name", "discovery-dir", "output-dir", "kubeconfig", "kube-context",
		"kube-namespaces", "max-delete-fraction", "delete-guard-min", "kube-resync")
	if *d.Spec.Replicas != 1 || d.Spec.Strategy.Type != appsv1.RecreateDeploymentStrategyType {
		t.Errorf("replicas %d strategy %s: want 1 and Recreate (two agents of one cluster must not overlap)", *d.Spec.Replicas, d.Spec.Strategy.Type)
	}
	secrets := map[string]string{}
	for _, v := range d.Spec.Template.Spec.Volumes {
		if v.Secret != nil {
			secrets[v.Name] = v.Secret.SecretName
		}
	}
	if want := map[string]string{"token": "meshrelay-relay-token", "relay-ca": "meshrelay-relay-ca"}; !reflect.DeepEqual(secrets, want) {
		t.Errorf("Secret volumes %v, want %v (the names the server chart and registration use)", secrets, want)
	}
	// xDS carries the mesh private keys: by default on the Unix socket, no port, no Service.
	if _, ok := r.Get("Service", agentName+"-xds"); ok {
		t.Error("defaults render an xDS Service")
	}
	for _, p := range d.Spec.Template.Spec.Containers[0].Ports {
		if p.Name == "xds" {
			t.Errorf("defaults declare the xDS container port %+v", p)
		}
	}
	if at := d.Spec.Template.Spec.AutomountServiceAccountToken; at == nil || !*at {
		t.Error("Kubernetes mode without the service account token")
	}
	if len(r.OfKind("ClusterRole")) != 1 || len(r.OfKind("ClusterRoleBinding")) != 1 {
		t.Errorf("Kubernetes mode without its ClusterRole: %s", inventory(r))
	}
	for _, kind := range []string{"PodDisruptionBudget", "NetworkPolicy", "Secret"} {
		if objs := r.OfKind(kind); len(objs) != 0 {
			t.Errorf("defaults render a %s", kind)
		}
	}
	if roles := r.OfKind("Role"); len(roles) != 1 || len(r.OfKind("RoleBinding")) != 1 {
		t.Errorf("defaults render Roles other than Istio's cacerts one: %s", inventory(r))
	}
	get[rbacv1.Role](t, r, "Role", agentName+"-istio-cacerts")
	if d.Labels["meshrelay.io/cluster"] != "east" {
		t.Errorf("Deployment labels %v: want meshrelay.io/cluster=east", d.Labels)
	}
}

// TestAgentUniversal: kubernetes.enabled=false runs universal mode, with no RBAC.
func TestAgentUniversal(t *testing.T) {
	r := render(t, charts.Agent, agentValues("kubernetes.enabled", false))
	d := deployment(t, r)
	checkArgs(t, d)
	args := d.Spec.Template.Spec.Containers[0].Args
	wantArgs(t, args, "--discovery-dir=/etc/meshrelay/discovery", "--output-dir=/var/lib/meshrelay/output")
	noFlags(t, args, "kubernetes", "kubeconfig")
	if at := d.Spec.Template.Spec.AutomountServiceAccountToken; at == nil || *at {
		t.Error("universal mode mounts a service account token it does not use")
	}
	for _, kind := range []string{"ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"} {
		if objs := r.OfKind(kind); len(objs) != 0 {
			t.Errorf("universal mode renders a %s", kind)
		}
	}
	d = deployment(t, render(t, charts.Agent, agentValues("kubernetes.enabled", false, "universal.discoveryConfigMap", "east-discovery")))
	checkArgs(t, d)
	if !slices.ContainsFunc(d.Spec.Template.Spec.Volumes, func(v corev1.Volume) bool {
		return v.Name == "discovery" && v.ConfigMap != nil && v.ConfigMap.Name == "east-discovery"
	}) {
		t.Error("universal.discoveryConfigMap is not the discovery volume")
	}
}

// TestAgentValues checks single values against what they must change.
func TestAgentValues(t *testing.T) {
	t.Run("everything", func(t *testing.T) {
		r := render(t, charts.Agent, agentEverythingValues())
		d := deployment(t, r)
		checkArgs(t, d)
		args := d.Spec.Template.Spec.Containers[0].Args
		wantArgs(t, args, "--relay-server-name=meshrelay-server.meshrelay-system.svc", "--relay-tls-mode=tls",
			"--resolve-interval=30s", "--max-backoff=1m", "--token-file=/etc/meshrelay/token/relay-token",
			"--relay-ca-file=/etc/meshrelay/relay-ca/bundle.pem", "--xds-address=:18001", "--xds-tls", "--admin-address=:19977",
			"--kubernetes", "--kubeconfig=/etc/meshrelay/kubeconfig/kubeconfig", "--kube-context=east-admin",
			"--kube-namespaces=default,shop", "--max-delete-fraction=0.2", "--delete-guard-min=3", "--kube-resync=30s",
			"--leader-election", "--leader-election-lease=meshrelay-system/meshrelay-agent", "--lease-duration=20s", "--dns-server=10.96.0.10:53")
		noFlags(t, args, "discovery-dir", "output-dir")
		if *d.Spec.Replicas != 2 || d.Spec.Strategy.Type != appsv1.RollingUpdateDeploymentStrategyType {
			t.Errorf("replicas %d strategy %s: want 2 and a rolling update", *d.Spec.Replicas, d.Spec.Strategy.Type)
		}
		if !slices.ContainsFunc(d.Spec.Template.Spec.Volumes, func(v corev1.Volume) bool {
			return v.Name == "state" && v.PersistentVolumeClaim != nil && v.PersistentVolumeClaim.ClaimName == "agent-state"
		}) {
			t.Error("stateVolume is not the state volume")
		}
		pdb := get[policyv1.PodDisruptionBudget](t, r, "PodDisruptionBudget", agentName)
		if !selects(pdb.Spec.Selector.MatchLabels, d.Spec.Template.Labels) {
			t.Errorf("PodDisruptionBudget selects %v", pdb.Spec.Selector.MatchLabels)
		}
	})
	t.Run("rolling update", func(t *testing.T) {
		// Without leader election only one without surge: the old pod stops first, since
		// the server refuses the new one while the old one is connected.
		noSurge := map[string]any{"type": "RollingUpdate", "rollingUpdate": map[string]any{"maxSurge": 0, "maxUnavailable": 1}}
		for _, v := range []map[string]any{agentValues("strategy", noSurge), merged(agentKubeValues(), vals("strategy", map[string]any{"type": "RollingUpdate"}))} {
			d := deployment(t, render(t, charts.Agent, v))
			if d.Spec.Strategy.Type != appsv1.RollingUpdateDeploymentStrategyType {
				t.Errorf("strategy %+v: want the rolling update given", d.Spec.Strategy)
			}
		}
	})
	t.Run("xDS service", func(t *testing.T) {
		// Only the mutual TLS port, admitted from the gateway pods only; networkPolicy.enabled
		// is false, so the admin port stays open.
		r := render(t, charts.Agent, agentValues("xds.service.enabled", true, "xds.service.gatewaySelector", map[string]any{"app": "gw"}))
		d := deployment(t, r)
		checkArgs(t, d)
		wantArgs(t, d.Spec.Template.Spec.Containers[0].Args, "--xds-address=:18000", "--xds-tls")
		xds := get[corev1.Service](t, r, "Service", agentName+"-xds")
		if xds.Spec.Type != corev1.ServiceTypeClusterIP || len(xds.Spec.Ports) != 1 || xds.Spec.Ports[0].Port != 18000 || xds.Spec.Ports[0].TargetPort.String() != "xds" {
			t.Errorf("xDS Service %s %+v: want ClusterIP 18000 to the xds port only", xds.Spec.Type, xds.Spec.Ports)
		}
		np := get[networkingv1.NetworkPolicy](t, r, "NetworkPolicy", agentName)
		if !selects(np.Spec.PodSelector.MatchLabels, d.Spec.Template.Labels) {
			t.Errorf("NetworkPolicy selects %v", np.Spec.PodSelector.MatchLabels)
		}
		var xdsRule, adminRule *networkingv1.NetworkPolicyIngressRule
		for i, in := range np.Spec.Ingress {
			switch in.Ports[0].Port.String() {
			case "xds":
				xdsRule = &np.Spec.Ingress[i]
			case "admin":
				adminRule = &np.Spec.Ingress[i]
			default:
				t.Errorf("NetworkPolicy admits port %s", in.Ports[0].Port)
			}
		}
		if xdsRule == nil || len(xdsRule.From) != 1 || xdsRule.From[0].PodSelector == nil ||
			!reflect.DeepEqual(xdsRule.From[0].PodSelector.MatchLabels, map[string]string{"app": "gw"}) || xdsRule.From[0].NamespaceSelector != nil {
			t.Errorf("xDS ingress %+v: want only pods labelled app=gw", xdsRule)
		}
		if adminRule == nil || len(adminRule.From) != 0 {
			t.Errorf("admin ingress %+v: want open (networkPolicy.enabled is false)", adminRule)
		}
	})
	t.Run("xDS off", func(t *testing.T) {
		r := render(t, charts.Agent, agentValues("xds.enabled", false))
		d := deployment(t, r)
		checkArgs(t, d)
		wantArgs(t, d.Spec.Template.Spec.Containers[0].Args, "--xds-address=")
		if _, ok := r.Get("Service", agentName+"-xds"); ok {
			t.Error("xds.enabled=false still renders the xDS Service")
		}
	})
}

func TestAgentRefuses(t *testing.T) {
	for _, c := range []struct {
		values map[string]any
		want   string
	}{
		{agentValues("replicas", 2), "leaderElection: true"},
		{agentValues("xds.service.enabled", true), "xds.service.gatewaySelector is required"},
		{agentValues("relay.tlsMode", "none"), "relay.tlsMode"},
		{agentValues("relay.address", "mgmt.example.com"), "want host:port"},
		{agentValues("kubernetes.maxDeleteFraction", 1.5), "between 0 and 1"},
		{agentValues("kubernetes.deleteGuardMin", -1), "deleteGuardMin"},
		{agentValues("relay.tokenSecret.name", ""), "relay.tokenSecret.name"},
		{agentValues("strategy", map[string]any{"type": "RollingUpdate"}), "maxSurge: 0"},
		{agentValues("strategy", map[string]any{"rollingUpdate": map[string]any{"maxSurge": 1}}), "maxSurge: 0"},
	} {
		err := renderErr(t, charts.Agent, c.values)
		if !strings.Contains(err.Error(), c.want) {
			t.Errorf("values %v: error %q, want it to say %q", c.values, err, c.want)
		}
	}
}

// TestAgentRBAC checks that the agent may read services, endpointslices and nodes, write the
// four Istio kinds it applies, create the namespaces they need, and hold its Lease — and
// nothing else.
func TestAgentRBAC(t *testing.T) {
	r := render(t, charts.Agent, agentKubeValues())
	d := deployment(t, r)
	checkArgs(t, d)
	read := []string{"get", "list", "watch"}
	write := []string{"create", "delete", "get", "list", "patch", "update", "watch"}
	want := map[string][]string{
		"/services":                            read,
		"/nodes":                               read,
		"/namespaces":                          {"create"},
		"discovery.k8s.io/endpointslices":      read,
		"networking.istio.io/serviceentries":   write,
		"networking.istio.io/destinationrules": write,
		"networking.istio.io/virtualservices":  write,
		"networking.istio.io/gateways":         write,
		"networking.istio.io/workloadentries":  write,
	}
	crs := r.OfKind("ClusterRole")
	if len(crs) != 1 {
		t.Fatalf("want one ClusterRole, have %s", inventory(r))
	}
	cr := into[rbacv1.ClusterRole](t, crs[0])
	if got := rulesOf(t, cr.Rules); !reflect.DeepEqual(got, want) {
		t.Errorf("ClusterRole rules\n%v\nwant exactly\n%v", got, want)
	}
	if cr.AggregationRule != nil {
		t.Error("the ClusterRole aggregates other roles")
	}
	crb := get[rbacv1.ClusterRoleBinding](t, r, "ClusterRoleBinding", agentName)
	checkBinding(t, crb.RoleRef, crb.Subjects, "ClusterRole", cr.Name, d)

	// Istio's cacerts: that one Secret in istio-system (get, patch), create there.
	ca := get[rbacv1.Role](t, r, "Role", agentName+"-istio-cacerts")
	wantCA := []rbacv1.PolicyRule{
		{APIGroups: []string{""}, Resources: []string{"secrets"}, ResourceNames: []string{"cacerts"}, Verbs: []string{"get", "patch"}},
		{APIGroups: []string{""}, Resources: []string{"secrets"}, Verbs: []string{"create"}},
	}
	if ca.Namespace != "istio-system" || !reflect.DeepEqual(ca.Rules, wantCA) {
		t.Errorf("cacerts Role in %q with rules %+v, want istio-system and exactly %+v", ca.Namespace, ca.Rules, wantCA)
	}
	carb := get[rbacv1.RoleBinding](t, r, "RoleBinding", ca.Name)
	checkBinding(t, carb.RoleRef, carb.Subjects, "Role", ca.Name, d)
	if _, ok := render(t, charts.Agent, merged(agentKubeValues(), vals("kubernetes.istioCACerts", false))).Get("Role", ca.Name); ok {
		t.Error("cacerts Role with kubernetes.istioCACerts=false")
	}

	role := get[rbacv1.Role](t, r, "Role", agentName+"-leader-election")
	if role.Namespace != d.Namespace {
		t.Errorf("Lease Role in %q, the agent runs in %q", role.Namespace, d.Namespace)
	}
	if got, want := rulesOf(t, role.Rules), map[string][]string{"coordination.k8s.io/leases": {"create", "get", "update"}}; !reflect.DeepEqual(got, want) {
		t.Errorf("Lease Role rules %v, want exactly %v", got, want)
	}
	rb := get[rbacv1.RoleBinding](t, r, "RoleBinding", role.Name)
	checkBinding(t, rb.RoleRef, rb.Subjects, "Role", role.Name, d)

	// Without leader election: no Lease Role. Without Kubernetes mode: no ClusterRole.
	r = render(t, charts.Agent, agentValues())
	if _, ok := r.Get("Role", agentName+"-leader-election"); ok {
		t.Error("Lease Role without leaderElection")
	}
	r = render(t, charts.Agent, agentValues("kubernetes.enabled", false, "leaderElection", true))
	if objs := r.OfKind("ClusterRole"); len(objs) != 0 {
		t.Error("ClusterRole without kubernetes.enabled")
	}
	if objs := r.OfKind("Role"); len(objs) != 1 {
		t.Error("no Lease Role with leaderElection")
	}
	r = render(t, charts.Agent, merged(agentKubeValues(), vals("rbac.create", false)))
	for _, kind := range []string{"ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"} {
		if objs := r.OfKind(kind); len(objs) != 0 {
			t.Errorf("rbac.create=false renders a %s", kind)
		}
	}
}
