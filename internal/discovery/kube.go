package discovery

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"github.com/meshrelay/meshrelay/api/v1alpha1"
	"github.com/meshrelay/meshrelay/internal/resource"
)

// labelZoneLegacy is the zone label of nodes from before topology.kubernetes.io/zone.
const labelZoneLegacy = "failure-domain.beta.kubernetes.io/zone"

// KubeConfig configures a Kube source.
type KubeConfig struct {
	// Namespaces limits discovery to these namespaces; empty means every namespace.
	Namespaces []string
	// Debounce is how long Kube waits for a burst of changes to settle before it rebuilds the
	// set (default 100ms). Under a continuous stream of changes it rebuilds at least every ten
	// debounce periods.
	Debounce time.Duration
}

// Validate checks the configuration.
func (c KubeConfig) Validate() error {
	var errs []error
	seen := map[string]bool{}
	for _, ns := range c.Namespaces {
		if ns == "" {
			errs = append(errs, errors.New("discovery: empty namespace in namespace list"))
		}
		if seen[ns] {
			errs = append(errs, fmt.Errorf("discovery: namespace %q listed twice", ns))
		}
		seen[ns] = true
	}
	if c.Debounce < 0 {
		errs = append(errs, fmt.Errorf("discovery: negative debounce %s", c.Debounce))
	}
	return errors.Join(errs...)
}

// Kube is a Source that reads v1 Services and discovery.k8s.io/v1 EndpointSlices from a
// Kubernetes API server through shared informers, and Nodes for the zone of endpoints whose
// slice names none.
//
// It reports each object as the Kubernetes-shaped resource.Object that Dir would decode from
// a YAML manifest holding the fields discovery reads (api/v1alpha1's Service and
// EndpointSlice): metadata.name, namespace and labels; a Service's type, clusterIP, selector
// and ports; an EndpointSlice's addressType, ports and endpoints (addresses, conditions, zone,
// nodeName, hostname); and where other clusters reach a Service (see ServiceFromKube): the
// IPs and hostnames of status.loadBalancer.ingress, the annotation
// meshrelay.io/failover-address, and for NodePort and LoadBalancer Services without either
// the node addresses as meshrelay.io/node-addresses. Everything else — other annotations,
// targetRefs, hints, the rest of status, server-populated metadata — is left out, so that a
// universal-mode manifest written with those fields gives byte-identical objects, and changes
// translation never reads do not become new input snapshots. An endpoint without a zone gets
// the topology.kubernetes.io/zone label of its node (nodeName), when the node has one.
//
// EndpointSlices without the kubernetes.io/service-name label belong to no Service and are
// skipped.
type Kube struct {
	client kubernetes.Interface
	cfg    KubeConfig
	logger *slog.Logger

	mu   sync.Mutex // guards errs and appeared
	errs map[string]string
	// appeared counts errors that appeared or changed (ErrorsAppeared).
	appeared uint64
}

// NewKube returns a Source reading through client. It validates the configuration and does
// no I/O.
func NewKube(client kubernetes.Interface, cfg KubeConfig, logger *slog.Logger) (*Kube, error) {
	if client == nil {
		return nil, errors.New("discovery: nil Kubernetes client")
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Debounce == 0 {
		cfg.Debounce = 100 * time.Millisecond
	}
	cfg.Namespaces = append([]string(nil), cfg.Namespaces...)
	sort.Strings(cfg.Namespaces)
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Kube{client: client, cfg: cfg, logger: logger}, nil
}

// Errors returns the current conversion errors, sorted; each names its object. It is safe
// for concurrent use.
func (k *Kube) Errors() []string {
	k.mu.Lock()
	defer k.mu.Unlock()
	out := make([]string, 0, len(k.errs))
	for _, e := range k.errs {
		out = append(out, e)
	}
	sort.Strings(out)
	return out
}

// kubeListers are the caches one Start reads from.
type kubeListers struct {
	services []cache.Indexer // one per watched namespace, or one for all
	slices   []cache.Indexer
	nodes    cache.Indexer
}

// Start implements Source. It emits the full set once every informer cache has synced, then
// again after every change that alters it. It returns nil when ctx ends; it never gives up
// waiting for the API server (the informers retry with backoff and log through klog).
// Start must not run twice at the same time on one Kube. emit must not modify the objects it
// receives.
func (k *Kube) Start(ctx context.Context, emit func(objs []resource.Object)) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	changed := make(chan struct{}, 1)
	poke := func() {
		select {
		case changed <- struct{}{}:
		default:
		}
	}
	handler := cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { poke() },
		UpdateFunc: func(any, any) { poke() },
		DeleteFunc: func(any) { poke() },
	}
	nodeHandler := cache.ResourceEventHandlerFuncs{
		AddFunc: func(any) { poke() },
		UpdateFunc: func(oldObj, newObj any) {
			// Nodes change all the time; their zones and addresses rarely.
			if nodeZone(oldObj) != nodeZone(newObj) || nodeAddress(oldObj) != nodeAddress(newObj) {
				poke()
			}
		},
		DeleteFunc: func(any) { poke() },
	}

	namespaces := k.cfg.Namespaces
	if len(namespaces) == 0 {
		namespaces = []string{corev1.NamespaceAll}
	}
	var factories []informers.SharedInformerFactory
	var ls kubeListers
	var syncs []cache.InformerSynced
	for _, ns := range namespaces {
		f := informers.NewSharedInformerFactoryWithOptions(k.client, 0, informers.WithNamespace(ns), informers.WithTransform(trimObject))
		svc := f.Core().V1().Services().Informer()
		es := f.Discovery().V1().EndpointSlices().Informer()
		for _, inf := range []cache.SharedIndexInformer{svc, es} {
			if _, err := inf.AddEventHandler(handler); err != nil {
				return fmt.Errorf("discovery: watch namespace %q: %w", ns, err)
			}
			syncs = append(syncs, inf.HasSynced)
		}
		ls.services = append(ls.services, svc.GetIndexer())
		ls.slices = append(ls.slices, es.GetIndexer())
		factories = append(factories, f)
	}
	nf := informers.NewSharedInformerFactoryWithOptions(k.client, 0, informers.WithTransform(trimObject))
	nodes := nf.Core().V1().Nodes().Informer()
	if _, err := nodes.AddEventHandler(nodeHandler); err != nil {
		return fmt.Errorf("discovery: watch nodes: %w", err)
	}
	syncs = append(syncs, nodes.HasSynced)
	ls.nodes = nodes.GetIndexer()
	factories = append(factories, nf)

	for _, f := range factories {
		f.StartWithContext(ctx)
	}
	defer func() {
		cancel() // Shutdown waits for the informers, which stop when ctx ends
		for _, f := range factories {
			f.Shutdown()
		}
	}()

	if !k.waitForSync(ctx, syncs) {
		return nil // ctx ended
	}
	c := &kubeConverter{cache: map[string]cachedObject{}}
	last := k.build(c, ls)
	emit(last)
	k.logger.Info("kubernetes discovery synced", "namespaces", strings.Join(k.cfg.Namespaces, ","), "objects", len(last))

	deb := NewDebounce(k.cfg.Debounce)
	defer deb.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-changed:
			deb.Changed()
		case <-deb.C():
			deb.Fired()
			objs := k.build(c, ls)
			if !Equal(objs, last) {
				last = objs
				emit(objs)
				k.logger.Debug("kubernetes objects changed", "objects", len(objs))
			}
		}
	}
}

// waitForSync blocks until every informer has synced (true) or ctx ends (false), logging
// every 30 seconds while it waits.
func (k *Kube) waitForSync(ctx context.Context, syncs []cache.InformerSynced) bool {
	start := time.Now()
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	lastLog := start
	for {
		done := true
		for _, s := range syncs {
			done = done && s()
		}
		if done {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case now := <-t.C:
			if now.Sub(lastLog) >= 30*time.Second {
				lastLog = now
				k.logger.Warn("waiting for kubernetes informer caches to sync", "waited", now.Sub(start).Round(time.Second))
			}
		}
	}
}

// build converts every cached Service and EndpointSlice into the current set.
func (k *Kube) build(c *kubeConverter, ls kubeListers) []resource.Object {
	zoneOf := func(node string) string {
		obj, ok, err := ls.nodes.GetByKey(node)
		if err != nil || !ok {
			return ""
		}
		return nodeZone(obj)
	}
	// The node addresses of NodePort and LoadBalancer Services, computed once per build.
	var nodeAddrs *string
	nodeAddresses := func() string {
		if nodeAddrs == nil {
			a := clusterNodeAddresses(ls.nodes.List())
			nodeAddrs = &a
		}
		return *nodeAddrs
	}
	var objs []resource.Object
	errs := map[string]string{}
	seen := map[string]bool{}
	add := func(key string, o resource.Object, err error) {
		seen[key] = true
		if err != nil {
			errs[key] = err.Error()
			return
		}
		objs = append(objs, o)
	}
	for _, idx := range ls.services {
		for _, item := range idx.List() {
			s, ok := item.(*corev1.Service)
			if !ok {
				continue
			}
			key := resource.Key(v1alpha1.KindService, s.Namespace, s.Name)
			o, err := c.service(key, s, nodeAddresses)
			add(key, o, err)
		}
	}
	for _, idx := range ls.slices {
		for _, item := range idx.List() {
			es, ok := item.(*discoveryv1.EndpointSlice)
			if !ok || es.Labels[v1alpha1.LabelServiceName] == "" {
				continue
			}
			key := resource.Key(v1alpha1.KindEndpointSlice, es.Namespace, es.Name)
			o, err := c.endpointSlice(key, es, zoneOf)
			add(key, o, err)
		}
	}
	c.prune(seen)
	k.setErrors(errs)
	return resource.Dedupe(objs)
}

// ErrorsAppeared returns how many conversion errors appeared (or changed) since the Kube
// was made. It is safe for concurrent use.
func (k *Kube) ErrorsAppeared() uint64 {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.appeared
}

// setErrors publishes the conversion errors, logging those that appeared or cleared.
func (k *Kube) setErrors(errs map[string]string) {
	k.mu.Lock()
	prev := k.errs
	k.errs = errs
	for key, e := range errs {
		if prev[key] != e {
			k.appeared++
		}
	}
	k.mu.Unlock()
	for key, e := range errs {
		if prev[key] != e {
			k.logger.Warn("kubernetes object not reported", "object", key, "error", e)
		}
	}
	for key := range prev {
		if _, ok := errs[key]; !ok {
			k.logger.Info("kubernetes object error cleared", "object", key)
		}
	}
}

// kubeConverter converts objects, reusing the result while an object's resourceVersion (and,
// for slices, the zones taken from nodes) stay the same. It is used by one goroutine.
type kubeConverter struct {
	cache map[string]cachedObject // object key → last conversion
}

type cachedObject struct {
	version string // resourceVersion plus whatever else the conversion read
	obj     resource.Object
	err     error
}

func (c *kubeConverter) service(key string, s *corev1.Service, nodeAddresses func() string) (resource.Object, error) {
	// The version covers the node addresses a NodePort or LoadBalancer Service reads.
	version, nodes := s.ResourceVersion, ""
	if needsNodeAddresses(s) {
		nodes = nodeAddresses()
		version += "\x00" + nodes
	}
	if e, ok := c.cache[key]; ok && e.version == version {
		return e.obj, e.err
	}
	o, err := decode(key, ServiceFromKube(s, nodes))
	c.cache[key] = cachedObject{version: version, obj: o, err: err}
	return o, err
}

func (c *kubeConverter) endpointSlice(key string, es *discoveryv1.EndpointSlice, zoneOf func(node string) string) (resource.Object, error) {
	// The version covers the zones read from nodes for endpoints that name none.
	var b strings.Builder
	b.WriteString(es.ResourceVersion)
	for _, e := range es.Endpoints {
		if (e.Zone == nil || *e.Zone == "") && e.NodeName != nil {
			b.WriteString("\x00")
			b.WriteString(zoneOf(*e.NodeName))
		}
	}
	version := b.String()
	if e, ok := c.cache[key]; ok && e.version == version {
		return e.obj, e.err
	}
	o, err := decode(key, EndpointSliceFromKube(es, zoneOf))
	c.cache[key] = cachedObject{version: version, obj: o, err: err}
	return o, err
}

// prune forgets the conversions of objects that are gone.
func (c *kubeConverter) prune(seen map[string]bool) {
	for key := range c.cache {
		if !seen[key] {
			delete(c.cache, key)
		}
	}
}

// decode puts a converted object through the same decoder and validation as a manifest.
func decode(key string, v any) (resource.Object, error) {
	js, err := json.Marshal(v)
	if err != nil {
		return resource.Object{}, fmt.Errorf("%s: encode: %w", key, err)
	}
	o, err := resource.Decode(js)
	if err != nil {
		return resource.Object{}, fmt.Errorf("%s: %w", key, err)
	}
	return o, nil
}

// ServiceFromKube projects a Kubernetes Service on the fields discovery reports, including
// where other clusters reach it (v1alpha1.Service.ExternalReach): the IPs and hostnames of
// status.loadBalancer.ingress, the annotation v1alpha1.AnnotationFailoverAddress, and
// nodeAddresses (comma-separated) as v1alpha1.AnnotationNodeAddresses when the Service needs
// them (needsNodeAddresses) and they are not empty.
func ServiceFromKube(s *corev1.Service, nodeAddresses string) v1alpha1.Service {
	var ann map[string]string
	if v := s.Annotations[v1alpha1.AnnotationFailoverAddress]; v != "" {
		ann = map[string]string{v1alpha1.AnnotationFailoverAddress: v}
	}
	if nodeAddresses != "" && needsNodeAddresses(s) {
		ann = map[string]string{v1alpha1.AnnotationNodeAddresses: nodeAddresses}
	}
	out := v1alpha1.Service{
		TypeMeta: v1alpha1.TypeMeta{APIVersion: "v1", Kind: v1alpha1.KindService},
		Metadata: v1alpha1.ObjectMeta{Name: s.Name, Namespace: s.Namespace, Labels: copyLabels(s.Labels), Annotations: ann},
		Spec: v1alpha1.ServiceSpec{
			Type:      string(s.Spec.Type),
			ClusterIP: s.Spec.ClusterIP,
			Selector:  copyLabels(s.Spec.Selector),
		},
	}
	for _, p := range s.Spec.Ports {
		sp := v1alpha1.ServicePort{Name: p.Name, Protocol: string(p.Protocol), Port: p.Port, NodePort: p.NodePort}
		switch {
		case p.TargetPort.Type == intstr.String && p.TargetPort.StrVal != "":
			sp.TargetPort = p.TargetPort.StrVal
		case p.TargetPort.Type == intstr.Int && p.TargetPort.IntVal != 0:
			sp.TargetPort = p.TargetPort.IntVal
		}
		out.Spec.Ports = append(out.Spec.Ports, sp)
	}
	var ingress []v1alpha1.LoadBalancerIngress
	for _, in := range s.Status.LoadBalancer.Ingress {
		if in.IP != "" || in.Hostname != "" {
			ingress = append(ingress, v1alpha1.LoadBalancerIngress{IP: in.IP, Hostname: in.Hostname})
		}
	}
	if len(ingress) > 0 {
		out.Status = &v1alpha1.ServiceStatus{LoadBalancer: v1alpha1.LoadBalancerStatus{Ingress: ingress}}
	}
	return out
}

// needsNodeAddresses reports whether other clusters would reach s on its node ports: a
// NodePort or LoadBalancer Service with a nodePort whose load balancer has no IP and that has
// no explicitly configured address (see v1alpha1.Service.ExternalReach).
func needsNodeAddresses(s *corev1.Service) bool {
	if s.Spec.Type != corev1.ServiceTypeNodePort && s.Spec.Type != corev1.ServiceTypeLoadBalancer {
		return false
	}
	if s.Annotations[v1alpha1.AnnotationFailoverAddress] != "" {
		return false
	}
	for _, in := range s.Status.LoadBalancer.Ingress {
		if in.IP != "" {
			return false
		}
	}
	for _, p := range s.Spec.Ports {
		if p.NodePort != 0 {
			return true
		}
	}
	return false
}

// maxNodeAddresses bounds the node addresses reported for a Service.
const maxNodeAddresses = 16

// clusterNodeAddresses lists, comma-separated, the address of every node (its ExternalIP,
// else its InternalIP), sorted, at most maxNodeAddresses.
func clusterNodeAddresses(nodes []any) string {
	var out []string
	for _, n := range nodes {
		if a := nodeAddress(n); a != "" {
			out = append(out, a)
		}
	}
	sort.Strings(out)
	out = slices.Compact(out)
	if len(out) > maxNodeAddresses {
		out = out[:maxNodeAddresses]
	}
	return strings.Join(out, ",")
}

// nodeAddress is the address other clusters reach a node at: its first ExternalIP, else its
// first InternalIP.
func nodeAddress(obj any) string {
	if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = d.Obj
	}
	n, ok := obj.(*corev1.Node)
	if !ok {
		return ""
	}
	internal := ""
	for _, a := range n.Status.Addresses {
		switch {
		case a.Type == corev1.NodeExternalIP:
			return a.Address
		case a.Type == corev1.NodeInternalIP && internal == "":
			internal = a.Address
		}
	}
	return internal
}

// EndpointSliceFromKube projects a Kubernetes EndpointSlice on the fields discovery reports.
// zoneOf gives the zone of a node; it fills in the zone of endpoints that name none. Ports
// without a number (meaning "all ports") are left out: discovery then uses the Service's
// target port.
func EndpointSliceFromKube(es *discoveryv1.EndpointSlice, zoneOf func(node string) string) v1alpha1.EndpointSlice {
	out := v1alpha1.EndpointSlice{
		TypeMeta:    v1alpha1.TypeMeta{APIVersion: "discovery.k8s.io/v1", Kind: v1alpha1.KindEndpointSlice},
		Metadata:    v1alpha1.ObjectMeta{Name: es.Name, Namespace: es.Namespace, Labels: copyLabels(es.Labels)},
		AddressType: string(es.AddressType),
	}
	for _, e := range es.Endpoints {
		ep := v1alpha1.Endpoint{
			Addresses: append([]string{}, e.Addresses...),
			Conditions: v1alpha1.EndpointConditions{
				Ready:       copyBool(e.Conditions.Ready),
				Serving:     copyBool(e.Conditions.Serving),
				Terminating: copyBool(e.Conditions.Terminating),
			},
			Zone:     deref(e.Zone),
			NodeName: deref(e.NodeName),
			Hostname: deref(e.Hostname),
		}
		if ep.Zone == "" && ep.NodeName != "" && zoneOf != nil {
			ep.Zone = zoneOf(ep.NodeName)
		}
		out.Endpoints = append(out.Endpoints, ep)
	}
	for _, p := range es.Ports {
		if p.Port == nil {
			continue
		}
		ep := v1alpha1.EndpointPort{Name: deref(p.Name), Port: *p.Port, AppProtocol: deref(p.AppProtocol)}
		if p.Protocol != nil {
			ep.Protocol = string(*p.Protocol)
		}
		out.Ports = append(out.Ports, ep)
	}
	return out
}

// nodeZone is the zone label of a node (or of the node a DeletedFinalStateUnknown holds).
func nodeZone(obj any) string {
	if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = d.Obj
	}
	n, ok := obj.(*corev1.Node)
	if !ok {
		return ""
	}
	if z := n.Labels[v1alpha1.LabelZone]; z != "" {
		return z
	}
	return n.Labels[labelZoneLegacy]
}

// trimObject drops what discovery never reads before an object enters an informer cache:
// managed fields, annotations (but a Service's v1alpha1.AnnotationFailoverAddress), and all
// of a node but its name, labels and addresses.
func trimObject(obj any) (any, error) {
	if n, ok := obj.(*corev1.Node); ok {
		n.Spec = corev1.NodeSpec{}
		n.Status = corev1.NodeStatus{Addresses: n.Status.Addresses}
	}
	if m, err := meta.Accessor(obj); err == nil {
		m.SetManagedFields(nil)
		var keep map[string]string
		if _, ok := obj.(*corev1.Service); ok {
			if v := m.GetAnnotations()[v1alpha1.AnnotationFailoverAddress]; v != "" {
				keep = map[string]string{v1alpha1.AnnotationFailoverAddress: v}
			}
		}
		m.SetAnnotations(keep)
	}
	return obj, nil
}

func copyLabels(m map[string]string) map[string]string {
	if len(m) == 0 {
		return nil
	}
	return maps.Clone(m)
}

func copyBool(b *bool) *bool {
	if b == nil {
		return nil
	}
	v := *b
	return &v
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}
