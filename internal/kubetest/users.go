package kubetest

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

// tokenLifetime is the lifetime of a ServiceAccount token: longer than any test.
const tokenLifetime = 24 * 3600

// User is a non-admin identity of the API server, allowed what its ClusterRoles allow.
type User struct {
	// Subject is the identity as an RBAC subject, for further (Cluster)RoleBindings.
	Subject rbacv1.Subject
	// Config is a REST config that authenticates as the identity.
	Config *rest.Config
	// Client is a client for Config with Env.Scheme.
	Client client.Client
	// Kubeconfig is the path of a kubeconfig file for Config, for child processes.
	Kubeconfig string
}

// AddUser provisions a user authenticated by a client certificate and binds it to each of
// clusterRoles with a ClusterRoleBinding (the ClusterRoles may be created before or after).
// With no ClusterRole the user may do nothing but discovery.
func (e *Env) AddUser(t testing.TB, name string, clusterRoles ...string) *User {
	t.Helper()
	u, err := e.Environment.AddUser(envtest.User{Name: name}, &rest.Config{QPS: e.Config.QPS, Burst: e.Config.Burst})
	if err != nil {
		t.Fatalf("kubetest: add user %q: %v", name, err)
	}
	subject := rbacv1.Subject{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: name}
	return e.newUser(t, subject, u.Config(), clusterRoles)
}

// AddServiceAccount creates a ServiceAccount (and its namespace when missing), binds it to
// each of clusterRoles with a ClusterRoleBinding and returns it with a token from the
// TokenRequest API, as a Pod running under the ServiceAccount would authenticate.
func (e *Env) AddServiceAccount(t testing.TB, namespace, name string, clusterRoles ...string) *User {
	t.Helper()
	ctx := t.Context()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}}
	if err := e.Client.Create(ctx, ns); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatalf("kubetest: create namespace %q: %v", namespace, err)
	}
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name}}
	if err := e.Client.Create(ctx, sa); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatalf("kubetest: create service account %s/%s: %v", namespace, name, err)
	}
	cs, err := kubernetes.NewForConfig(e.Config)
	if err != nil {
		t.Fatalf("kubetest: new clientset: %v", err)
	}
	lifetime := int64(tokenLifetime)
	tr, err := cs.CoreV1().ServiceAccounts(namespace).CreateToken(ctx, name,
		&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &lifetime}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("kubetest: request token of service account %s/%s: %v", namespace, name, err)
	}
	cfg := &rest.Config{
		Host:            e.Config.Host,
		TLSClientConfig: rest.TLSClientConfig{CAData: e.Config.CAData},
		BearerToken:     tr.Status.Token,
		QPS:             e.Config.QPS,
		Burst:           e.Config.Burst,
	}
	subject := rbacv1.Subject{Kind: rbacv1.ServiceAccountKind, Namespace: namespace, Name: name}
	return e.newUser(t, subject, cfg, clusterRoles)
}

func (e *Env) newUser(t testing.TB, subject rbacv1.Subject, cfg *rest.Config, clusterRoles []string) *User {
	t.Helper()
	for _, role := range clusterRoles {
		e.bind(t, subject, role)
	}
	c, err := client.New(cfg, client.Options{Scheme: e.Scheme})
	if err != nil {
		t.Fatalf("kubetest: new client for %s %q: %v", subject.Kind, subject.Name, err)
	}
	kc, err := kubeconfig(cfg)
	if err != nil {
		t.Fatalf("kubetest: kubeconfig for %s %q: %v", subject.Kind, subject.Name, err)
	}
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(path, kc, 0o600); err != nil {
		t.Fatalf("kubetest: write kubeconfig: %v", err)
	}
	return &User{Subject: subject, Config: cfg, Client: c, Kubeconfig: path}
}

// bind creates a ClusterRoleBinding of subject to a ClusterRole.
func (e *Env) bind(t testing.TB, subject rbacv1.Subject, clusterRole string) {
	t.Helper()
	who := subject.Name
	if subject.Namespace != "" {
		who = subject.Namespace + "-" + subject.Name
	}
	crb := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("kubetest-%s-%s-%s", kindPrefix(subject.Kind), who, clusterRole)},
		Subjects:   []rbacv1.Subject{subject},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: clusterRole},
	}
	if err := e.Client.Create(t.Context(), crb); err != nil {
		t.Fatalf("kubetest: bind %s %q to cluster role %q: %v", subject.Kind, subject.Name, clusterRole, err)
	}
}

func kindPrefix(kind string) string {
	if kind == rbacv1.ServiceAccountKind {
		return "sa"
	}
	return "user"
}

// kubeconfig renders a kubeconfig file for a REST config with a client certificate or a
// bearer token.
func kubeconfig(cfg *rest.Config) ([]byte, error) {
	kc := clientcmdapi.NewConfig()
	kc.Clusters["kubetest"] = &clientcmdapi.Cluster{Server: cfg.Host, CertificateAuthorityData: cfg.CAData}
	kc.AuthInfos["kubetest"] = &clientcmdapi.AuthInfo{
		ClientCertificateData: cfg.CertData,
		ClientKeyData:         cfg.KeyData,
		Token:                 cfg.BearerToken,
	}
	kc.Contexts["kubetest"] = &clientcmdapi.Context{Cluster: "kubetest", AuthInfo: "kubetest"}
	kc.CurrentContext = "kubetest"
	b, err := clientcmd.Write(*kc)
	if err != nil {
		return nil, fmt.Errorf("render kubeconfig: %w", err)
	}
	return b, nil
}
