// Package register registers a workload cluster with a Kubernetes-mode management server,
// like `meshctl cluster register`: it creates the KubernetesCluster custom resource in the
// management cluster and copies the relay identity token and the relay CA bundle (never the
// CA's key) into the workload cluster as the Secrets the agent chart mounts. Deregister
// undoes exactly that.
//
// Every object Register creates carries the labels LabelManagedBy=ManagedBy and
// LabelCluster=<cluster>; Deregister deletes only objects carrying both, so a
// KubernetesCluster or a Secret that existed before (applied by hand or by GitOps) is used
// but never changed or deleted. The workload cluster's namespace is created when missing and
// never deleted: it may hold the agent's release.
package register

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"regexp"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kubev1alpha1 "github.com/meshrelay/meshrelay/api/kube/v1alpha1"
	kubecfg "github.com/meshrelay/meshrelay/internal/kubeconfig"
)

// Labels of the objects Register creates.
const (
	LabelManagedBy = "app.kubernetes.io/managed-by"
	ManagedBy      = "meshrelay-cluster-register"
	LabelCluster   = "meshrelay.io/cluster"
)

// Defaults, matching the meshrelay-server chart's Secrets and the meshrelay-agent chart's
// values (relay.tokenSecret, relay.caSecret) and the namespace of docs/kubernetes.md.
const (
	DefaultNamespace   = "meshrelay-system"
	DefaultTokenSecret = "meshrelay-relay-token"
	DefaultTokenKey    = "token"
	DefaultCASecret    = "meshrelay-relay-ca"
	DefaultCAKey       = "ca.crt"
	DefaultRelease     = "meshrelay-agent"
)

// Config says what to register.
type Config struct {
	// Cluster is the workload cluster's name (a DNS label).
	Cluster string
	// Namespace is the workload cluster's namespace of the Secrets (and of the agent).
	Namespace string
	// MgmtNamespace is the management cluster's namespace of the server's Secrets (read when
	// TokenFile or RelayCAFile is empty); empty means Namespace.
	MgmtNamespace string
	// TokenFile and RelayCAFile, when set, are read instead of the management cluster's
	// Secrets.
	TokenFile   string
	RelayCAFile string
	// ClusterDomain is the KubernetesCluster's spec.clusterDomain (empty: the default).
	ClusterDomain string
}

// Validate checks the configuration and fills in defaults.
func (c *Config) Validate() error {
	var errs []error
	if c.Cluster == "" {
		errs = append(errs, errors.New("--cluster is required"))
	} else if !dnsLabel.MatchString(c.Cluster) || len(c.Cluster) > 63 {
		errs = append(errs, fmt.Errorf("--cluster %q: a cluster name must be a DNS label (lowercase a-z, 0-9, '-', at most 63)", c.Cluster))
	}
	if c.Namespace == "" {
		c.Namespace = DefaultNamespace
	}
	if c.MgmtNamespace == "" {
		c.MgmtNamespace = c.Namespace
	}
	for _, ns := range []struct{ flag, v string }{{"--namespace", c.Namespace}, {"--mgmt-namespace", c.MgmtNamespace}} {
		if !dnsLabel.MatchString(ns.v) || len(ns.v) > 63 {
			errs = append(errs, fmt.Errorf("%s %q: not a namespace name", ns.flag, ns.v))
		}
	}
	return errors.Join(errs...)
}

var dnsLabel = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)

// Change is one object Register or Deregister looked at, and what it did.
type Change struct {
	// Where is "management" or "workload".
	Where string `json:"cluster"`
	// Object names the object: "KubernetesCluster east", "Secret meshrelay-system/meshrelay-relay-token".
	Object string `json:"object"`
	// Action is one of the Action constants.
	Action string `json:"action"`
}

// Actions of a Change.
const (
	Created   = "created"
	Updated   = "updated"
	Unchanged = "unchanged"
	Deleted   = "deleted"
	Absent    = "absent"
	// Kept is an object that was not created by register: used as it is, never deleted.
	Kept = "kept (not created by cluster register)"
)

func (c Change) String() string { return fmt.Sprintf("%s cluster: %s %s", c.Where, c.Object, c.Action) }

// Sentinel errors.
var (
	// ErrConflict is returned when an object of the name register needs exists, was not
	// created by register and holds something else.
	ErrConflict = errors.New("exists and was not created by meshrelay cluster register")
	// ErrNoCRDs is returned when the management cluster does not serve meshrelay's CRDs.
	ErrNoCRDs = errors.New("the management cluster has no meshrelay CRDs (install the meshrelay-server chart there first)")
)

// secrets are the relay token and CA bundle to copy.
type secrets struct {
	token []byte
	ca    []byte
}

// Register creates the KubernetesCluster in the management cluster and the Secrets in the
// workload cluster; running it again changes nothing (or repairs what differs). It reads
// everything first, then writes the workload cluster's Secrets, then the KubernetesCluster,
// so a cluster is registered only once its agent could connect.
func Register(ctx context.Context, mgmt, remote client.Client, cfg Config) ([]Change, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	sec, err := readSecrets(ctx, mgmt, cfg)
	if err != nil {
		return nil, err
	}
	var changes []Change
	ch, err := ensureNamespace(ctx, remote, cfg)
	if err != nil {
		return changes, err
	}
	changes = append(changes, ch)
	for _, s := range []struct {
		name, key string
		data      []byte
	}{{DefaultTokenSecret, DefaultTokenKey, sec.token}, {DefaultCASecret, DefaultCAKey, sec.ca}} {
		ch, err := ensureSecret(ctx, remote, cfg, s.name, map[string][]byte{s.key: s.data})
		if err != nil {
			return changes, err
		}
		changes = append(changes, ch)
	}
	ch, err = ensureCluster(ctx, mgmt, cfg)
	if err != nil {
		return changes, err
	}
	return append(changes, ch), nil
}

// Deregister deletes the KubernetesCluster and the workload cluster's Secrets that Register
// created, and nothing else. It does the management cluster first, so that a workload
// cluster that is gone can still be deregistered (its error is returned after).
func Deregister(ctx context.Context, mgmt, remote client.Client, cfg Config) ([]Change, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	var changes []Change
	kc := &kubev1alpha1.KubernetesCluster{}
	ch, err := deleteOwned(ctx, mgmt, cfg, "management", client.ObjectKey{Name: cfg.Cluster}, kc, "KubernetesCluster "+cfg.Cluster)
	if err != nil {
		if meta.IsNoMatchError(err) {
			err = fmt.Errorf("delete KubernetesCluster %s: %w", cfg.Cluster, ErrNoCRDs)
		}
		return nil, err
	}
	changes = append(changes, ch)
	if remote == nil {
		return changes, nil
	}
	for _, name := range []string{DefaultTokenSecret, DefaultCASecret} {
		key := client.ObjectKey{Namespace: cfg.Namespace, Name: name}
		ch, err := deleteOwned(ctx, remote, cfg, "workload", key, &corev1.Secret{}, "Secret "+key.String())
		if err != nil {
			return changes, err
		}
		changes = append(changes, ch)
	}
	return changes, nil
}

// owned reports whether register created an object for this cluster.
func owned(o client.Object, cluster string) bool {
	l := o.GetLabels()
	return l[LabelManagedBy] == ManagedBy && l[LabelCluster] == cluster
}

func labels(cluster string) map[string]string {
	return map[string]string{LabelManagedBy: ManagedBy, LabelCluster: cluster}
}

func deleteOwned(ctx context.Context, c client.Client, cfg Config, where string, key client.ObjectKey, obj client.Object, name string) (Change, error) {
	ch := Change{Where: where, Object: name}
	if err := c.Get(ctx, key, obj); err != nil {
		if apierrors.IsNotFound(err) {
			ch.Action = Absent
			return ch, nil
		}
		return ch, fmt.Errorf("get %s in the %s cluster: %w", name, where, err)
	}
	if !owned(obj, cfg.Cluster) {
		ch.Action = Kept
		return ch, nil
	}
	// Delete exactly the object read: never one re-created meanwhile by someone else.
	pre := client.Preconditions{UID: ptr(obj.GetUID()), ResourceVersion: ptr(obj.GetResourceVersion())}
	if err := c.Delete(ctx, obj, pre); err != nil {
		if apierrors.IsNotFound(err) {
			ch.Action = Absent
			return ch, nil
		}
		return ch, fmt.Errorf("delete %s in the %s cluster: %w", name, where, err)
	}
	ch.Action = Deleted
	return ch, nil
}

func ptr[T any](v T) *T { return &v }

// readSecrets reads the token and CA bundle from the files or the management cluster.
func readSecrets(ctx context.Context, mgmt client.Client, cfg Config) (secrets, error) {
	var s secrets
	var err error
	if cfg.TokenFile != "" {
		if s.token, err = os.ReadFile(cfg.TokenFile); err != nil {
			return s, fmt.Errorf("read --token-file: %w", err)
		}
	} else if s.token, err = secretKey(ctx, mgmt, cfg.MgmtNamespace, DefaultTokenSecret, DefaultTokenKey); err != nil {
		return s, fmt.Errorf("read the relay token: %w (or give --token-file)", err)
	}
	s.token = bytes.TrimSpace(s.token)
	if len(s.token) == 0 {
		return s, errors.New("the relay token is empty")
	}
	if cfg.RelayCAFile != "" {
		if s.ca, err = os.ReadFile(cfg.RelayCAFile); err != nil {
			return s, fmt.Errorf("read --relay-ca-file: %w", err)
		}
	} else if s.ca, err = secretKey(ctx, mgmt, cfg.MgmtNamespace, DefaultCASecret, DefaultCAKey); err != nil {
		return s, fmt.Errorf("read the relay CA bundle: %w (or give --relay-ca-file)", err)
	}
	if err := checkBundle(s.ca); err != nil {
		return s, fmt.Errorf("relay CA bundle: %w", err)
	}
	return s, nil
}

func secretKey(ctx context.Context, c client.Client, namespace, name, key string) ([]byte, error) {
	var sec corev1.Secret
	if err := c.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, &sec); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, fmt.Errorf("Secret %s/%s not found in the management cluster (is the meshrelay-server chart installed in namespace %s? else pass --mgmt-namespace)",
				namespace, name, namespace)
		}
		return nil, fmt.Errorf("get Secret %s/%s in the management cluster: %w", namespace, name, err)
	}
	v, ok := sec.Data[key]
	if !ok {
		return nil, fmt.Errorf("Secret %s/%s in the management cluster has no key %q", namespace, name, key)
	}
	return v, nil
}

// checkBundle accepts PEM certificates only: a private key must never travel to a workload
// cluster.
func checkBundle(b []byte) error {
	n := 0
	for rest := b; ; {
		var blk *pem.Block
		blk, rest = pem.Decode(rest)
		if blk == nil {
			if len(bytes.TrimSpace(rest)) > 0 {
				return errors.New("trailing data that is not PEM")
			}
			break
		}
		if blk.Type != "CERTIFICATE" {
			return fmt.Errorf("holds a %q PEM block: only CERTIFICATE blocks may be copied to a workload cluster", blk.Type)
		}
		if _, err := x509.ParseCertificate(blk.Bytes); err != nil {
			return fmt.Errorf("certificate %d: %w", n+1, err)
		}
		n++
	}
	if n == 0 {
		return errors.New("no PEM certificate")
	}
	return nil
}

func ensureNamespace(ctx context.Context, remote client.Client, cfg Config) (Change, error) {
	ch := Change{Where: "workload", Object: "Namespace " + cfg.Namespace}
	var ns corev1.Namespace
	err := remote.Get(ctx, client.ObjectKey{Name: cfg.Namespace}, &ns)
	switch {
	case err == nil:
		ch.Action = Unchanged
		return ch, nil
	case !apierrors.IsNotFound(err):
		return ch, fmt.Errorf("get namespace %s in the workload cluster: %w", cfg.Namespace, err)
	}
	ns = corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: cfg.Namespace}}
	if err := remote.Create(ctx, &ns); err != nil && !apierrors.IsAlreadyExists(err) {
		return ch, fmt.Errorf("create namespace %s in the workload cluster: %w", cfg.Namespace, err)
	}
	ch.Action = Created
	return ch, nil
}

func ensureSecret(ctx context.Context, remote client.Client, cfg Config, name string, data map[string][]byte) (Change, error) {
	key := client.ObjectKey{Namespace: cfg.Namespace, Name: name}
	ch := Change{Where: "workload", Object: "Secret " + key.String()}
	var cur corev1.Secret
	err := remote.Get(ctx, key, &cur)
	if apierrors.IsNotFound(err) {
		s := &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Namespace: cfg.Namespace, Name: name, Labels: labels(cfg.Cluster)},
			Type:       corev1.SecretTypeOpaque,
			Data:       data,
		}
		if err := remote.Create(ctx, s); err != nil {
			return ch, fmt.Errorf("create Secret %s in the workload cluster: %w", key, err)
		}
		ch.Action = Created
		return ch, nil
	}
	if err != nil {
		return ch, fmt.Errorf("get Secret %s in the workload cluster: %w", key, err)
	}
	same := len(cur.Data) >= len(data)
	for k, v := range data {
		same = same && bytes.Equal(cur.Data[k], v)
	}
	switch {
	case !owned(&cur, cfg.Cluster) && same:
		ch.Action = Kept
	case !owned(&cur, cfg.Cluster):
		return ch, fmt.Errorf("Secret %s in the workload cluster %w, and holds other data: delete it (kubectl -n %s delete secret %s) and register again",
			key, ErrConflict, key.Namespace, key.Name)
	case same:
		ch.Action = Unchanged
	default:
		cur.Data = data
		if err := remote.Update(ctx, &cur); err != nil {
			return ch, fmt.Errorf("update Secret %s in the workload cluster: %w", key, err)
		}
		ch.Action = Updated
	}
	return ch, nil
}

func ensureCluster(ctx context.Context, mgmt client.Client, cfg Config) (Change, error) {
	name := "KubernetesCluster " + cfg.Cluster
	ch := Change{Where: "management", Object: name}
	var cur kubev1alpha1.KubernetesCluster
	err := mgmt.Get(ctx, client.ObjectKey{Name: cfg.Cluster}, &cur)
	switch {
	case meta.IsNoMatchError(err):
		return ch, fmt.Errorf("get %s: %w", name, ErrNoCRDs)
	case apierrors.IsNotFound(err):
		kc := &kubev1alpha1.KubernetesCluster{ObjectMeta: metav1.ObjectMeta{Name: cfg.Cluster, Labels: labels(cfg.Cluster)}}
		kc.Spec.ClusterDomain = cfg.ClusterDomain
		if err := mgmt.Create(ctx, kc); err != nil {
			if meta.IsNoMatchError(err) {
				return ch, fmt.Errorf("create %s: %w", name, ErrNoCRDs)
			}
			return ch, fmt.Errorf("create %s in the management cluster: %w", name, err)
		}
		ch.Action = Created
		return ch, nil
	case err != nil:
		return ch, fmt.Errorf("get %s in the management cluster: %w", name, err)
	}
	switch {
	case !owned(&cur, cfg.Cluster):
		ch.Action = Kept
	case cur.Spec.ClusterDomain == cfg.ClusterDomain:
		ch.Action = Unchanged
	default:
		cur.Spec.ClusterDomain = cfg.ClusterDomain
		if err := mgmt.Update(ctx, &cur); err != nil {
			return ch, fmt.Errorf("update %s in the management cluster: %w", name, err)
		}
		ch.Action = Updated
	}
	return ch, nil
}

// NewClient returns a client of the cluster of a kubeconfig file and context (empty: the
// default loading rules, $KUBECONFIG or ~/.kube/config, and the current context), whose
// scheme knows client-go's kinds and meshrelay's custom resources. It does no I/O.
func NewClient(kubeconfig, kubeContext string) (client.Client, error) {
	rc, err := kubecfg.LoadFile(kubeconfig, kubeContext)
	if err != nil {
		return nil, err
	}
	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{clientgoscheme.AddToScheme, kubev1alpha1.AddToScheme} {
		if err := add(scheme); err != nil {
			return nil, fmt.Errorf("build scheme: %w", err)
		}
	}
	c, err := client.New(rc, client.Options{Scheme: scheme})
	if err != nil {
		return nil, fmt.Errorf("kubernetes client of %s: %w", rc.Host, err)
	}
	return c, nil
}
