package kubetest_test

import (
	"fmt"
	"runtime"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kubev1alpha1 "github.com/meshrelay/meshrelay/api/kube/v1alpha1"
	"github.com/meshrelay/meshrelay/internal/kubetest"
)

// TestStart starts an API server with RBAC and checks the admin, a certificate user and a
// ServiceAccount: each may do what its ClusterRoles allow and nothing more, through its
// client and through its kubeconfig file.
func TestStart(t *testing.T) {
	env := kubetest.Start(t, kubetest.WithRBAC())
	ctx := t.Context()

	// The admin sees meshrelay's custom resources.
	var schemes kubev1alpha1.FailoverSchemeList
	if err := env.Client.List(ctx, &schemes); err != nil {
		t.Fatalf("admin: list failoverschemes: %v", err)
	}
	admin := fromKubeconfig(t, env, env.Kubeconfig)
	if err := admin.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "team"}}); err != nil {
		t.Fatalf("admin from kubeconfig: create namespace: %v", err)
	}

	reader := &rbacv1.ClusterRole{
		ObjectMeta: metav1.ObjectMeta{Name: "service-reader"},
		Rules:      []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"services"}, Verbs: []string{"get", "list", "watch"}}},
	}
	if err := env.Client.Create(ctx, reader); err != nil {
		t.Fatalf("create cluster role: %v", err)
	}
	users := map[string]*kubetest.User{
		"user":            env.AddUser(t, "alice", "service-reader"),
		"service account": env.AddServiceAccount(t, "meshrelay", "agent", "service-reader"),
	}
	for name, u := range users {
		t.Run(name, func(t *testing.T) {
			for how, c := range map[string]client.Client{"client": u.Client, "kubeconfig": fromKubeconfig(t, env, u.Kubeconfig)} {
				var svcs corev1.ServiceList
				if err := c.List(ctx, &svcs, client.InNamespace("default")); err != nil {
					t.Errorf("%s: list services (allowed): %v", how, err)
				}
				cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "team", Name: "x-" + strings.ReplaceAll(name, " ", "-") + "-" + how}}
				if err := c.Create(ctx, cm); !apierrors.IsForbidden(err) {
					t.Errorf("%s: create configmap (not allowed) error = %v, want Forbidden", how, err)
				}
				if err := c.List(ctx, &kubev1alpha1.UpstreamList{}); !apierrors.IsForbidden(err) {
					t.Errorf("%s: list upstreams (not allowed) error = %v, want Forbidden", how, err)
				}
			}
		})
	}
	if s := users["service account"].Subject; s.Kind != rbacv1.ServiceAccountKind || s.Namespace != "meshrelay" || s.Name != "agent" {
		t.Errorf("service account subject %+v", s)
	}
}

func fromKubeconfig(t *testing.T, env *kubetest.Env, path string) client.Client {
	t.Helper()
	cfg, err := clientcmd.BuildConfigFromFlags("", path)
	if err != nil {
		t.Fatalf("load kubeconfig %s: %v", path, err)
	}
	c, err := client.New(cfg, client.Options{Scheme: env.Scheme})
	if err != nil {
		t.Fatalf("client from kubeconfig: %v", err)
	}
	return c
}

// fatalRecorder is a testing.TB whose Fatalf records the message and ends the goroutine.
type fatalRecorder struct {
	testing.TB
	msg string
}

func (f *fatalRecorder) Helper() {}

func (f *fatalRecorder) Fatalf(format string, args ...any) {
	f.msg = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

// TestMissingBinaries checks that Start fails, naming scripts/kube-tools.sh, when the
// binaries are missing: tests never skip for want of them.
func TestMissingBinaries(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("KUBEBUILDER_ASSETS", dir)
	rec := &fatalRecorder{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		kubetest.Start(rec)
	}()
	<-done
	for _, want := range []string{"kube-apiserver and etcd not found", dir, "scripts/kube-tools.sh"} {
		if !strings.Contains(rec.msg, want) {
			t.Errorf("Start failed with %q, want it to mention %q", rec.msg, want)
		}
	}
}
