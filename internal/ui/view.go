package ui

import (
	"cmp"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/meshrelay/meshrelay/api/v1alpha1"
	"github.com/meshrelay/meshrelay/internal/changelog"
	"github.com/meshrelay/meshrelay/internal/configapi"
	"github.com/meshrelay/meshrelay/internal/resource"
	"github.com/meshrelay/meshrelay/internal/snapshot"
)

// Inputs is everything the page is made of, read at one moment.
type Inputs struct {
	Now    time.Time
	Status configapi.ServerStatus
	// Config is the effective configuration; Inputs and Outputs the clusters' snapshots.
	Config  []resource.Object
	Inputs  map[string]*snapshot.Snapshot
	Outputs map[string]*snapshot.Snapshot
	// GatewayCerts are the expiries of the clusters' gateway identities (mesh certificates).
	GatewayCerts map[string]time.Time
	// AgentCertTTL is the lifetime of the relay certificates agents are issued.
	AgentCertTTL time.Duration
	Changes      []changelog.Entry
	// Telemetry is what the telemetry gateway reports of the gateways.
	Telemetry TelemetryView
}

// View is what the page shows.
type View struct {
	Now      time.Time
	Interval time.Duration
	Replica  string
	Clusters []ClusterView
	HA       HAView
	Health   []Check
	Failover []FailoverView
	Topology Topology
	Changes  []ChangeView
	Certs    []CertView
	Problems []string
	// Telemetry is the gateways' live state, request rates and health checks.
	Telemetry TelemetryView
}

// ClusterView is one registered (or connected) cluster.
type ClusterView struct {
	Name       string
	Conn       string // connected, partial (one stream stalled), disconnected
	Server     string // the replica serving it
	Since      time.Time
	Agent      string
	Sync       string // in sync, out of sync, NACK, epoch refused, no output
	SafeMode   bool
	Epoch      uint64
	Output     uint64
	Acked      uint64
	Resources  int
	Inputs     int
	Stale      float64
	Problems   []string
	Registered bool
}

// HAView is the management plane's roles.
type HAView struct {
	MgmtCluster string
	Active      bool
	Leader      bool
	LockName    string
	LockEpoch   uint64
	LockSince   time.Time
	LeaseHolder string
	Error       string
	PlaneError  string
	Servers     []ServerView
}

// ServerView is one management server and the agents it serves.
type ServerView struct {
	ID, MgmtCluster, Relay string
	Self                   bool
	Seen                   time.Time
	SafeMode               bool
	Clusters               []string
}

// Check is one line of the control plane's own health.
type Check struct {
	Name, Detail string
	OK           bool
}

// FailoverView is a failover scheme: the priorities of its targets and what the server
// knows of their clusters.
type FailoverView struct {
	Name       string
	Primary    string
	Priorities []Priority
}

// Priority is one priority group of a scheme (0 is the primary).
type Priority struct {
	Level    int
	Clusters []PriorityCluster
	Serving  bool // the lowest priority whose clusters are all connected
}

// PriorityCluster is a cluster in a priority group.
type PriorityCluster struct {
	Name      string
	Connected bool
}

// ChangeView is a timeline entry.
type ChangeView struct {
	changelog.Entry
	Pending []string // registered clusters that have not acknowledged it
	AckList []AckView
}

// AckView is one cluster's acknowledgement.
type AckView struct {
	Cluster string
	changelog.Ack
}

// CertView is one certificate the server holds or knows.
type CertView struct {
	Kind, Name string
	NotAfter   time.Time
	Left       time.Duration
	State      string // ok, soon (under 30 days), expired, unknown
	Note       string
}

// Build makes the view.
func Build(in Inputs) View {
	st := in.Status
	v := View{Now: in.Now.UTC(), Replica: st.HA.ReplicaID}
	v.Clusters = clusters(in)
	v.HA = haView(st)
	v.Health = health(in)
	v.Failover = failover(in.Config, v.Clusters)
	v.Topology = topology(in)
	v.Changes = changes(in.Changes, v.Clusters)
	v.Certs = certs(in)
	v.Telemetry = in.Telemetry
	v.Problems = append(v.Problems, st.TranslationErrors...)
	v.Problems = append(v.Problems, st.ConfigErrors...)
	keys := make([]string, 0, len(st.ResourceStatus))
	for k := range st.ResourceStatus {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		for _, p := range st.ResourceStatus[k] {
			v.Problems = append(v.Problems, k+": "+p)
		}
	}
	return v
}

func clusters(in Inputs) []ClusterView {
	st := in.Status
	byName := map[string]*ClusterView{}
	var out []*ClusterView
	get := func(name string) *ClusterView {
		if c := byName[name]; c != nil {
			return c
		}
		c := &ClusterView{Name: name, Conn: "disconnected", Sync: "no output"}
		byName[name] = c
		out = append(out, c)
		return c
	}
	for _, cs := range st.Clusters {
		c := get(cs.Name)
		c.Registered = true
		c.Output, c.Acked, c.Resources, c.Inputs, c.Stale = cs.OutputVersion, cs.AckedVersion, cs.OutputResource, cs.InputResources, cs.StaleSeconds
		switch {
		case cs.EpochRefusal != nil:
			c.Sync = "epoch refused"
			c.Problems = append(c.Problems, fmt.Sprintf("agent refuses epoch %d: it holds epoch %d", cs.EpochRefusal.Refused, cs.EpochRefusal.Held))
		case cs.LastNack != "":
			c.Sync = "NACK"
			c.Problems = append(c.Problems, "NACK: "+cs.LastNack)
		case cs.InSync:
			c.Sync = "in sync"
		case cs.OutputVersion > 0:
			c.Sync = "out of sync"
		}
		for _, r := range cs.RefusedObjects {
			c.Problems = append(c.Problems, fmt.Sprintf("refused %v", r))
		}
	}
	for _, s := range st.Plane.Servers {
		for _, pc := range s.Clusters {
			c := get(pc.Name)
			at, ok, partial := st.Plane.Find(pc.Name)
			switch {
			case ok:
				c.Conn, c.Server, c.Since, c.SafeMode = "connected", at.Server.ID, at.Cluster.Connection.Since, at.Server.SafeMode.Active
				c.Agent = strings.TrimSpace(at.Cluster.Connection.Instance + " " + at.Cluster.Connection.Version)
				if r := at.Cluster.Connection.Report; r != nil {
					if r.DiscoveryError != "" {
						c.Problems = append(c.Problems, "discovery: "+r.DiscoveryError)
					}
					for _, p := range r.DataPlane {
						c.Problems = append(c.Problems, fmt.Sprintf("gateway %s refused %s: %s", p.Node, p.TypeURL, p.Error))
					}
				}
			case len(partial) > 0:
				c.Conn, c.Server = "partial", partial[0].Server.ID
				c.Problems = append(c.Problems, fmt.Sprintf("stalled: only %d push / %d pull streams open on %s", partial[0].Cluster.Connection.Push, partial[0].Cluster.Connection.Pull, partial[0].Server.ID))
			}
		}
	}
	for _, c := range out {
		if c.Conn != "connected" && c.Sync == "in sync" {
			c.Sync = "last in sync" // what its agent acknowledged before it left
		}
	}
	if st.SafeMode.Active {
		for _, c := range out {
			c.SafeMode = true
		}
	}
	if st.HA.Lock != nil {
		for _, c := range out {
			c.Epoch = st.HA.Lock.Epoch
		}
	}
	res := make([]ClusterView, len(out))
	for i, c := range out {
		res[i] = *c
	}
	slices.SortFunc(res, func(a, b ClusterView) int { return cmp.Compare(a.Name, b.Name) })
	return res
}

func haView(st configapi.ServerStatus) HAView {
	h := HAView{MgmtCluster: st.HA.MgmtCluster, Active: st.HA.Active, Leader: st.HA.Leader, Error: st.HA.Error, PlaneError: st.Plane.Error}
	if l := st.HA.Lock; l != nil {
		h.LockName, h.LockEpoch, h.LockSince = l.Name, l.Epoch, l.Since
	}
	if l := st.HA.Lease; l != nil {
		h.LeaseHolder = l.Holder
	}
	for i, s := range st.Plane.Servers {
		sv := ServerView{ID: s.ID, MgmtCluster: s.MgmtCluster, Relay: s.Relay, Self: i == 0, Seen: s.At, SafeMode: s.SafeMode.Active}
		for _, c := range s.Clusters {
			if c.Connected() {
				sv.Clusters = append(sv.Clusters, c.Name)
			}
		}
		h.Servers = append(h.Servers, sv)
	}
	if len(h.Servers) == 0 {
		h.Servers = []ServerView{{ID: st.HA.ReplicaID, MgmtCluster: st.HA.MgmtCluster, Relay: st.Relay, Self: true}}
	}
	return h
}

func health(in Inputs) []Check {
	st := in.Status
	var out []Check
	add := func(name string, ok bool, detail string) {
		out = append(out, Check{Name: name, OK: ok, Detail: detail})
	}
	add("ready", st.Ready, map[bool]string{true: "configuration and store loaded", false: "still loading configuration or the store"}[st.Ready])
	if st.StoreError != "" {
		add("store", false, st.StoreError)
	} else {
		add("store", true, st.Store)
	}
	if st.SafeMode.Active {
		add("safe mode", false, fmt.Sprintf("translation held since %s: %s %v", st.SafeMode.Since.UTC().Format(time.RFC3339), st.SafeMode.Reason, st.SafeMode.Missing))
	} else {
		add("safe mode", true, "off")
	}
	last := "never"
	if !st.LastTranslation.IsZero() {
		last = in.Now.Sub(st.LastTranslation).Round(time.Second).String() + " ago"
	}
	add("translation", len(st.TranslationErrors) == 0, fmt.Sprintf("%d translations, last %s, %d errors", st.Translations, last, len(st.TranslationErrors)))
	var stale, stalled []string
	for _, s := range st.Plane.Servers {
		for _, c := range s.Clusters {
			if !c.Connected() {
				stalled = append(stalled, fmt.Sprintf("%s on %s", c.Name, s.ID))
			}
		}
	}
	for _, c := range st.Clusters {
		if c.StaleSeconds > 0 {
			stale = append(stale, fmt.Sprintf("%s %.0fs", c.Name, c.StaleSeconds))
		}
	}
	var down []string
	for _, c := range clusters(in) {
		if c.Registered && c.Conn != "connected" {
			down = append(down, c.Name+" "+c.Conn)
		}
	}
	add("clusters connected", len(down) == 0, orNone(down))
	add("agent staleness", len(stale) == 0, orNone(stale))
	add("stalled streams", len(stalled) == 0, orNone(stalled))
	add("management plane view", st.Plane.Error == "", cmp.Or(st.Plane.Error, fmt.Sprintf("%d servers", len(st.Plane.Servers))))
	add("relay CA rotation", st.RelayCA.Phase == "" || st.RelayCA.Phase == "idle", fmt.Sprintf("phase %s, pending %s", cmp.Or(st.RelayCA.Phase, "idle"), orNone(st.RelayCA.Pending)))
	add("mesh CA rotation", st.MeshCA.Phase == "" || st.MeshCA.Ready, fmt.Sprintf("phase %s", cmp.Or(st.MeshCA.Phase, "none")))
	if tl := st.Telemetry; tl != nil {
		add("telemetry gateway", tl.Error == "", cmp.Or(tl.Error, "read "+tl.URL))
	}
	if len(st.RateLimited) > 0 {
		add("relay rate limit", false, fmt.Sprintf("%d sources refused for too many attempts", len(st.RateLimited)))
	}
	return out
}

func orNone(s []string) string {
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, ", ")
}

func failover(config []resource.Object, cs []ClusterView) []FailoverView {
	conn := map[string]bool{}
	for _, c := range cs {
		conn[c.Name] = c.Conn == "connected"
	}
	var out []FailoverView
	for _, o := range config {
		if o.Kind != "FailoverScheme" {
			continue
		}
		var fs v1alpha1.FailoverScheme
		if err := o.Into(&fs); err != nil {
			continue // validated on the way in
		}
		f := FailoverView{Name: o.Namespace + "/" + o.Name, Primary: fs.Spec.Primary.ClusterName + "/" + fs.Spec.Primary.Name}
		levels := [][]string{{fs.Spec.Primary.ClusterName}}
		for _, g := range fs.Spec.FailoverGroups {
			var l []string
			for _, t := range g.PriorityGroup {
				l = append(l, t.Cluster)
			}
			levels = append(levels, l)
		}
		serving := -1
		for i, l := range levels {
			p := Priority{Level: i}
			all := len(l) > 0
			for _, c := range l {
				p.Clusters = append(p.Clusters, PriorityCluster{Name: c, Connected: conn[c]})
				all = all && conn[c]
			}
			if all && serving < 0 {
				serving, p.Serving = i, true
			}
			f.Priorities = append(f.Priorities, p)
		}
		out = append(out, f)
	}
	return out
}

func changes(entries []changelog.Entry, cs []ClusterView) []ChangeView {
	out := make([]ChangeView, 0, len(entries))
	for _, e := range entries {
		cv := ChangeView{Entry: e}
		for _, c := range cs {
			if !c.Registered {
				continue
			}
			if a, ok := e.Acks[c.Name]; ok {
				cv.AckList = append(cv.AckList, AckView{Cluster: c.Name, Ack: a})
			} else {
				cv.Pending = append(cv.Pending, c.Name)
			}
		}
		out = append(out, cv)
	}
	return out
}

func certs(in Inputs) []CertView {
	st := in.Status
	var out []CertView
	// soon is 30 days for certificates someone must renew; identities the server renews
	// itself (at two thirds of their life) are only flagged once expired.
	soon := 30 * 24 * time.Hour
	add := func(kind, name string, notAfter time.Time, note string) {
		c := CertView{Kind: kind, Name: name, NotAfter: notAfter.UTC(), Note: note, State: "unknown"}
		if !notAfter.IsZero() {
			c.Left = notAfter.Sub(in.Now).Round(time.Minute)
			switch {
			case c.Left <= 0:
				c.State = "expired"
			case c.Left < soon:
				c.State = "soon"
			default:
				c.State = "ok"
			}
		}
		out = append(out, c)
	}
	add("relay CA", "current "+short(st.RelayCA.Current), cmp.Or(st.RelayCA.CurrentNotAfter, st.RelayCANotAfter), "")
	if st.RelayCA.Next != "" {
		add("relay CA", "next "+short(st.RelayCA.Next), st.RelayCA.NextNotAfter, "rotation "+st.RelayCA.Phase)
	}
	add("relay serving", st.Relay, st.RelayCertNotAfter, "")
	if !st.AdminCertNotAfter.IsZero() || st.AdminCertError != "" {
		add("admin API", "serving certificate", st.AdminCertNotAfter, st.AdminCertError)
	}
	add("mesh CA", "signer "+st.MeshCA.Signer.Subject, st.MeshCA.Signer.NotAfter, "")
	for _, t := range st.MeshCA.Trusted {
		if t.Fingerprint != st.MeshCA.Signer.Fingerprint {
			add("mesh CA", "trusted "+t.Subject, t.NotAfter, "")
		}
	}
	names := make([]string, 0, len(in.GatewayCerts))
	for n := range in.GatewayCerts {
		names = append(names, n)
	}
	sort.Strings(names)
	soon = 0
	for _, n := range names {
		add("gateway identity", n, in.GatewayCerts[n], "mesh certificate; the server renews it")
	}
	// Agents' client certificates as their servers saw them at the handshake; an agent
	// renews at two thirds of the lifetime, so under a third left means renewal is overdue.
	agents := map[string]time.Time{}
	for _, sv := range st.Plane.Servers {
		for _, c := range sv.Clusters {
			if na := c.Connection.CertificateNotAfter; na.After(agents[c.Name]) {
				agents[c.Name] = na
			}
		}
	}
	for name, c := range st.Connections {
		if c.CertificateNotAfter.After(agents[name]) {
			agents[name] = c.CertificateNotAfter
		}
	}
	soon = in.AgentCertTTL / 3
	for _, n := range slices.Sorted(maps.Keys(agents)) {
		add("agent certificate", n, agents[n], "client certificate at the agent's last handshake; the agent renews it at two thirds of its life")
	}
	if in.AgentCertTTL > 0 {
		var missing []string
		for _, c := range st.Clusters {
			if _, ok := agents[c.Name]; !ok {
				missing = append(missing, c.Name)
			}
		}
		if len(missing) > 0 || len(st.Clusters) == 0 {
			// The server keeps no copy of the relay certificates it issues agents: it
			// sees one only while its agent is connected.
			add("agent certificate", orNone(missing), time.Time{}, fmt.Sprintf("no agent connected (or tls mode): issued for %s at registration and renewed by each agent; its /status shows the expiry", in.AgentCertTTL))
		}
	}
	return out
}

func short(fp string) string {
	if len(fp) > 16 {
		return fp[:16] + "…"
	}
	return fp
}
