// Package resource decodes, validates and keys the YAML objects users write (meshrelay's
// resources) and agents discover (Kubernetes-shaped Services and EndpointSlices). Every
// object is kept as canonical JSON so that equal objects have equal bytes and hashes.
package resource

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strings"

	"github.com/meshrelay/meshrelay/api/v1alpha1"
	"github.com/meshrelay/meshrelay/internal/snapshot"
)

// Object is one decoded, validated resource.
type Object struct {
	APIVersion string
	Kind       string
	Name       string
	Namespace  string
	Labels     map[string]string
	// Raw is the canonical JSON of the whole object (keys sorted, no insignificant space).
	Raw []byte
	// Source says where the object was read, for messages: the file (as its reader named
	// it) or another origin such as a Kubernetes custom resource; empty for objects that
	// were applied through the API or decoded from a snapshot. It is not part of the
	// object's content.
	Source string
}

// Key identifies an object: "<Kind>/<namespace>/<name>"; cluster-scoped kinds have an empty
// namespace.
func (o Object) Key() string { return Key(o.Kind, o.Namespace, o.Name) }

// Key builds an object key.
func Key(kind, namespace, name string) string { return kind + "/" + namespace + "/" + name }

// ParseKey splits a key made by Key.
func ParseKey(key string) (kind, namespace, name string, err error) {
	parts := strings.SplitN(key, "/", 3)
	if len(parts) != 3 || parts[0] == "" || parts[2] == "" {
		return "", "", "", fmt.Errorf("invalid resource key %q: want KIND/NAMESPACE/NAME", key)
	}
	return parts[0], parts[1], parts[2], nil
}

// String names the object for messages: `Kind "namespace/name"`.
func (o Object) String() string {
	if o.Namespace == "" {
		return fmt.Sprintf("%s %q", o.Kind, o.Name)
	}
	return fmt.Sprintf("%s %q", o.Kind, o.Namespace+"/"+o.Name)
}

// Resource converts the object to a snapshot resource.
func (o Object) Resource() snapshot.Resource { return snapshot.NewResource(o.Key(), o.Raw) }

// Into decodes the object into a typed struct.
func (o Object) Into(v any) error { return json.Unmarshal(o.Raw, v) }

// FromResource decodes a snapshot resource back into an Object (without re-validating).
func FromResource(r snapshot.Resource) (Object, error) {
	var h header
	if err := json.Unmarshal(r.Body, &h); err != nil {
		return Object{}, fmt.Errorf("resource %s: %w", r.Key, err)
	}
	return Object{APIVersion: h.APIVersion, Kind: h.Kind, Name: h.Metadata.Name, Namespace: h.Metadata.Namespace, Labels: h.Metadata.Labels, Raw: r.Body}, nil
}

type header struct {
	APIVersion string              `json:"apiVersion"`
	Kind       string              `json:"kind"`
	Metadata   v1alpha1.ObjectMeta `json:"metadata"`
}

// FieldError says which field of which resource is wrong and why.
type FieldError struct {
	Resource string // e.g. `KubernetesCluster "local"`
	Field    string // e.g. "spec.skipWarming"
	Reason   string
}

func (e *FieldError) Error() string {
	var b strings.Builder
	if e.Resource != "" {
		b.WriteString(e.Resource)
		b.WriteString(": ")
	}
	if e.Field != "" {
		b.WriteString(e.Field)
		b.WriteString(": ")
	}
	b.WriteString(e.Reason)
	return b.String()
}

// ErrInvalid is wrapped by every validation error.
var ErrInvalid = errors.New("invalid resource")

// Is makes FieldError match ErrInvalid.
func (e *FieldError) Is(target error) bool { return target == ErrInvalid }

var dns1123 = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)
var dnsSubdomain = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)

// kindInfo describes how to validate one kind.
type kindInfo struct {
	apiVersions []string
	namespaced  bool
	// validate checks the typed content; nil means "spec must be an object".
	validate func(o Object) error
}

var kinds = map[string]kindInfo{
	v1alpha1.KindKubernetesCluster: {
		apiVersions: []string{v1alpha1.APIVersion, "admin.gloo.solo.io/v2"},
		validate:    validateKubernetesCluster,
	},
	v1alpha1.KindUpstream:               {apiVersions: []string{v1alpha1.APIVersion, "gloo.solo.io/v1"}, namespaced: true, validate: validateUpstream},
	v1alpha1.KindFailoverScheme:         {apiVersions: []string{v1alpha1.APIVersion, "fed.solo.io/v1"}, namespaced: true, validate: validateFailoverScheme},
	v1alpha1.KindGateway:                {apiVersions: []string{v1alpha1.APIVersion, "gateway.solo.io/v1"}, namespaced: true, validate: validateGateway},
	v1alpha1.KindRouteTable:             {apiVersions: []string{v1alpha1.APIVersion}, namespaced: true, validate: validateRouteTable},
	v1alpha1.KindVirtualDestination:     {apiVersions: []string{v1alpha1.APIVersion}, namespaced: true, validate: validateVirtualDestination},
	v1alpha1.KindFailoverPolicy:         {apiVersions: []string{v1alpha1.APIVersion}, namespaced: true, validate: validateFailoverPolicy},
	v1alpha1.KindOutlierDetectionPolicy: {apiVersions: []string{v1alpha1.APIVersion}, namespaced: true, validate: validateOutlierDetectionPolicy},
	v1alpha1.KindService:                {apiVersions: []string{"v1"}, namespaced: true, validate: validateService},
	v1alpha1.KindEndpointSlice:          {apiVersions: []string{"discovery.k8s.io/v1"}, namespaced: true, validate: validateEndpointSlice},
	v1alpha1.KindSecret:                 {apiVersions: []string{"v1"}, namespaced: true},
}

// Kinds lists the kinds this package understands, sorted.
func Kinds() []string {
	out := make([]string, 0, len(kinds))
	for k := range kinds {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// CanonicalKind matches a kind case-insensitively, also in plural form ("kubernetesclusters"),
// for the CLI.
func CanonicalKind(s string) (string, bool) {
	l := strings.ToLower(s)
	for k := range kinds {
		kl := strings.ToLower(k)
		if l == kl || l == kl+"s" || l == kl+"es" || (strings.HasSuffix(kl, "y") && l == strings.TrimSuffix(kl, "y")+"ies") {
			return k, true
		}
	}
	return "", false
}

// Decode parses and validates one object from JSON or YAML-converted JSON.
func Decode(js []byte) (Object, error) {
	var generic map[string]any
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.UseNumber()
	if err := dec.Decode(&generic); err != nil {
		return Object{}, &FieldError{Reason: "not an object: " + err.Error()}
	}
	if err := checkHeaderSpelling(generic); err != nil {
		return Object{}, err
	}
	var h header
	if err := json.Unmarshal(js, &h); err != nil {
		return Object{}, &FieldError{Field: "metadata", Reason: jsonReason(err)}
	}
	res := h.Kind
	if h.Metadata.Name != "" {
		res = Object{Kind: h.Kind, Name: h.Metadata.Name, Namespace: h.Metadata.Namespace}.String()
	}
	if h.Kind == "" {
		return Object{}, &FieldError{Resource: res, Field: "kind", Reason: "is required"}
	}
	info, ok := kinds[h.Kind]
	if !ok {
		return Object{}, &FieldError{Resource: res, Field: "kind", Reason: fmt.Sprintf("unknown kind %q (known: %s)", h.Kind, strings.Join(Kinds(), ", "))}
	}
	if !contains(info.apiVersions, h.APIVersion) {
		return Object{}, &FieldError{Resource: res, Field: "apiVersion", Reason: fmt.Sprintf("%q is not served for %s (use %s)", h.APIVersion, h.Kind, strings.Join(info.apiVersions, " or "))}
	}
	if h.Metadata.Name == "" {
		return Object{}, &FieldError{Resource: h.Kind, Field: "metadata.name", Reason: "is required"}
	}
	if !dnsSubdomain.MatchString(h.Metadata.Name) || len(h.Metadata.Name) > 253 {
		return Object{}, &FieldError{Resource: res, Field: "metadata.name", Reason: "must be a lowercase DNS name (a-z, 0-9, '-', '.')"}
	}
	meta, _ := generic["metadata"].(map[string]any)
	if info.namespaced {
		if h.Metadata.Namespace == "" {
			h.Metadata.Namespace = "default"
			meta["namespace"] = "default"
		}
		if !dns1123.MatchString(h.Metadata.Namespace) || len(h.Metadata.Namespace) > 63 {
			return Object{}, &FieldError{Resource: res, Field: "metadata.namespace", Reason: "must be a lowercase DNS label"}
		}
	} else if h.Metadata.Namespace != "" {
		// Cluster-scoped: the seeds write KubernetesCluster with a namespace; ignore it.
		delete(meta, "namespace")
		h.Metadata.Namespace = ""
	}
	// Drop server-populated metadata so that equal specs give equal bytes.
	for _, f := range []string{"resourceVersion", "uid", "creationTimestamp", "generation", "managedFields"} {
		delete(meta, f)
	}
	if st := serviceStatus(h.Kind, generic["status"]); st != nil {
		generic["status"] = st
	} else {
		delete(generic, "status")
	}
	raw, err := json.Marshal(generic)
	if err != nil {
		return Object{}, fmt.Errorf("%s: canonical encoding: %w", res, err)
	}
	o := Object{APIVersion: h.APIVersion, Kind: h.Kind, Name: h.Metadata.Name, Namespace: h.Metadata.Namespace, Labels: h.Metadata.Labels, Raw: raw}
	if info.validate != nil {
		if err := info.validate(o); err != nil {
			fillResource(err, o.String()) // every FieldError, also those joined
			return Object{}, err
		}
	} else if s, ok := generic["spec"]; ok {
		if _, isObj := s.(map[string]any); !isObj {
			return Object{}, &FieldError{Resource: o.String(), Field: "spec", Reason: "must be an object"}
		}
	}
	return o, nil
}

// headerFields are the fields an object's identity is read from: the top level's and
// metadata's.
var headerFields = [2][]string{{"apiVersion", "kind", "metadata"}, {"name", "namespace", "labels", "annotations"}}

// checkHeaderSpelling refuses a key spelled like a header field in another case ("Metadata",
// "nAme"): encoding/json matches field names ignoring case, so the object's key would be
// read from it while its canonical JSON keeps it as another field.
func checkHeaderSpelling(generic map[string]any) error {
	meta, _ := generic["metadata"].(map[string]any)
	for i, m := range []map[string]any{generic, meta} {
		for _, k := range sortedKeys(m) {
			for _, f := range headerFields[i] {
				if k != f && strings.EqualFold(k, f) {
					field := k
					if i == 1 {
						field = "metadata." + k
					}
					return &FieldError{Field: field, Reason: fmt.Sprintf("unknown field (did you mean %q?)", f)}
				}
			}
		}
	}
	return nil
}

// serviceStatus keeps of a Service's status only the IPs and hostnames of
// status.loadBalancer.ingress (where other clusters reach it); nil when there are none or
// kind is not a Service. Status is otherwise dropped: it is not part of what users declare.
func serviceStatus(kind string, status any) any {
	if kind != v1alpha1.KindService {
		return nil
	}
	st, _ := status.(map[string]any)
	lb, _ := st["loadBalancer"].(map[string]any)
	ingress, _ := lb["ingress"].([]any)
	var kept []any
	for _, in := range ingress {
		m, _ := in.(map[string]any)
		k := map[string]any{}
		for _, f := range []string{"ip", "hostname"} {
			if v, ok := m[f].(string); ok && v != "" {
				k[f] = v
			}
		}
		if len(k) > 0 {
			kept = append(kept, k)
		}
	}
	if len(kept) == 0 {
		return nil
	}
	return map[string]any{"loadBalancer": map[string]any{"ingress": kept}}
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// strict decodes o into v rejecting unknown fields, turning JSON errors into FieldErrors.
func strict(o Object, v any) error {
	dec := json.NewDecoder(bytes.NewReader(o.Raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return &FieldError{Resource: o.String(), Field: te.Field, Reason: fmt.Sprintf("expected %s, got %s", typeName(te.Type.String()), te.Value)}
		}
		return &FieldError{Resource: o.String(), Reason: jsonReason(err)}
	}
	return nil
}

func typeName(t string) string {
	switch {
	case strings.HasPrefix(t, "int"), strings.HasPrefix(t, "uint"):
		return "an integer"
	case t == "bool":
		return "a boolean"
	case t == "string":
		return "a string"
	case strings.HasPrefix(t, "[]"):
		return "a list"
	case strings.HasPrefix(t, "map["), strings.Contains(t, "."):
		return "an object"
	}
	return t
}

func jsonReason(err error) string {
	return strings.TrimPrefix(err.Error(), "json: ")
}

func validateKubernetesCluster(o Object) error {
	var kc v1alpha1.KubernetesCluster
	if err := strict(o, &kc); err != nil {
		return err
	}
	if len(o.Name) > 63 || !dns1123.MatchString(o.Name) {
		return &FieldError{Field: "metadata.name", Reason: "a cluster name must be a DNS label (lowercase a-z, 0-9, '-', at most 63)"}
	}
	if d := kc.Spec.ClusterDomain; d != "" && !dnsSubdomain.MatchString(d) {
		return &FieldError{Field: "spec.clusterDomain", Reason: fmt.Sprintf("%q is not a DNS name", d)}
	}
	return nil
}

func validateService(o Object) error {
	var s v1alpha1.Service
	if err := json.Unmarshal(o.Raw, &s); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return &FieldError{Field: te.Field, Reason: fmt.Sprintf("expected %s, got %s", typeName(te.Type.String()), te.Value)}
		}
		return &FieldError{Reason: jsonReason(err)}
	}
	for i, p := range s.Spec.Ports {
		if p.Port < 1 || p.Port > 65535 {
			return &FieldError{Field: fmt.Sprintf("spec.ports[%d].port", i), Reason: fmt.Sprintf("%d is not a port number (1-65535)", p.Port)}
		}
	}
	return nil
}

func validateEndpointSlice(o Object) error {
	var s v1alpha1.EndpointSlice
	if err := json.Unmarshal(o.Raw, &s); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return &FieldError{Field: te.Field, Reason: fmt.Sprintf("expected %s, got %s", typeName(te.Type.String()), te.Value)}
		}
		return &FieldError{Reason: jsonReason(err)}
	}
	if s.Metadata.Labels[v1alpha1.LabelServiceName] == "" {
		return &FieldError{Field: "metadata.labels[" + v1alpha1.LabelServiceName + "]", Reason: "is required: it names the Service of these endpoints"}
	}
	for i, p := range s.Ports {
		if p.Port < 1 || p.Port > 65535 {
			return &FieldError{Field: fmt.Sprintf("ports[%d].port", i), Reason: fmt.Sprintf("%d is not a port number (1-65535)", p.Port)}
		}
	}
	return nil
}
