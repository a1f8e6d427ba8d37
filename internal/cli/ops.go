package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/spf13/cobra"

	serverapp "github.com/meshrelay/meshrelay/internal/app/server"
	"github.com/meshrelay/meshrelay/internal/configapi"
	"github.com/meshrelay/meshrelay/internal/pki"
	"github.com/meshrelay/meshrelay/internal/plane"
	"github.com/meshrelay/meshrelay/internal/reconcile"
	"github.com/meshrelay/meshrelay/internal/relay"
	"github.com/meshrelay/meshrelay/internal/snapshot/redisstore"
	"github.com/meshrelay/meshrelay/internal/telemetry"
	"github.com/meshrelay/meshrelay/internal/translate"
)

// redisFlags are the ops commands' flags of the shared Redis: the servers' connection
// flags (one server, Sentinel or Cluster, TLS) and --redis-prefix.
type redisFlags struct {
	conn   serverapp.Config // only its Redis fields
	prefix string
}

func (r *redisFlags) register(cmd *cobra.Command, required bool) {
	usage := "host:port of the shared Redis (or --redis-sentinel-addresses or --redis-cluster-addresses, as given to the servers)"
	if required {
		usage += " (one of them required)"
	}
	r.conn.RegisterRedisFlags(cmd.Flags(), usage)
	cmd.Flags().StringVar(&r.prefix, "redis-prefix", "meshrelay", "prefix and hash tag of every Redis key (as given to the servers)")
}

// given reports whether any connection mode of Redis is given.
func (r *redisFlags) given() bool { return r.conn.RedisGiven() }

// dial returns a client of the shared Redis and its options; the caller closes it.
func (r *redisFlags) dial() (redis.UniversalClient, redisstore.Options, error) {
	if err := r.conn.ValidateRedis(); err != nil {
		return nil, redisstore.Options{}, err
	}
	opts, err := r.conn.RedisOptions(2 * time.Second)
	if err != nil {
		return nil, opts, err
	}
	rc, err := redisstore.Dial(opts)
	return rc, opts, err
}

func newSwitchActiveCmd() *cobra.Command {
	var rf redisFlags
	var name string
	cmd := &cobra.Command{
		Use:   "switch-active --mgmt-cluster-name NAME --redis-address ADDR",
		Short: "Move the global lock: make another management server the one that writes",
		Long: `Move the global lock in the shared Redis to the management cluster NAME, with a new, higher
epoch. From then on only that management server may write to Redis (every write is fenced by
the lock, so a former active server cannot overwrite anything, even before it notices), and
agents refuse outputs made under an older epoch. Switch back the same way.

The new epoch is above the lock's and the epoch counter's. If Redis lost its data, this
command cannot know the epochs agents hold and may give a lower one: the new active server
raises it above theirs as soon as its agents (or the other server) report them, and
'meshrelay check' shows any agent refusing meanwhile.

After a regional failover: switch the DNS record agents use to the new server, then run this
(and point your CI/CD at the new server if you write configuration to one server only).`,
		Example: "  meshrelay switch-active --mgmt-cluster-name mgmt-west --redis-address redis.example.com:6379\n" +
			"  meshrelay switch-active --mgmt-cluster-name mgmt-west --redis-sentinel-addresses s1:26379,s2:26379,s3:26379 --redis-master-name mymaster",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if name == "" || !rf.given() {
				return fmt.Errorf("--mgmt-cluster-name and --redis-address (or --redis-sentinel-addresses or --redis-cluster-addresses) are required")
			}
			rc, _, err := rf.dial()
			if err != nil {
				return err
			}
			defer rc.Close()
			st := redisstore.NewHA(rc, rf.prefix)
			ctx, cancel := context.WithTimeout(cmd.Context(), 5*time.Second)
			defer cancel()
			before, err := st.ReadLock(ctx)
			if err != nil {
				return err
			}
			after, err := st.SwitchLock(ctx, name)
			if err != nil && !errors.Is(err, redisstore.ErrNotReplicated) {
				return err
			}
			prev := before.Name
			if prev == "" {
				prev = "nobody"
			}
			// Without a replica's acknowledgement the lock did move, on the primary only.
			fmt.Fprintf(cmd.OutOrStdout(), "global lock moved from %s (epoch %d) to %s (epoch %d)\n", prev, before.Epoch, after.Name, after.Epoch)
			return err
		},
	}
	cmd.Flags().StringVar(&name, "mgmt-cluster-name", "", "management cluster that becomes active (required)")
	rf.register(cmd, true)
	return cmd
}

// checkResult is one line of `meshrelay check`.
type checkResult struct {
	Check  string `json:"check"`
	OK     bool   `json:"ok"`
	Detail string `json:"detail"`
}

func newCheckCmd() *cobra.Command {
	var target adminTarget
	var output string
	var rf redisFlags
	cmd := &cobra.Command{
		Use:   "check",
		Short: "Check the management plane's health (like meshctl check)",
		Long: `Check that the management server and its store are reachable, which management cluster is
active and which replica leads, whether the shared Redis can fail over (with --redis-address,
--redis-sentinel-addresses or --redis-cluster-addresses: the primary that holds the store's
keys must have a replica in sync; with Sentinel, at least a quorum of the sentinels must answer
and none may flag the primary down; with Cluster, cluster_state must be ok; a single server
without replicas passes, as it never fails over), that every registered cluster has its push
and pull streams connected and is in sync (and for how long it has not been), whether safe
mode holds translation and why, when the relay certificates expire, whether OTLP export
(--otlp-endpoint) fails, the server's own and each agent's ("off" when not configured), and
the last translation errors.
Exits non-zero when anything is wrong.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := target.clientWith("") // /status and /readyz need no admin token
			if err != nil {
				return err
			}
			results := runChecks(cmd.Context(), c, rf)
			failed := 0
			for _, r := range results {
				if !r.OK {
					failed++
				}
			}
			switch output {
			case "json":
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				if err := enc.Encode(map[string]any{"ok": failed == 0, "checks": results}); err != nil {
					return err
				}
			default:
				for _, r := range results {
					mark := "✓"
					if !r.OK {
						mark = "✗"
					}
					fmt.Fprintf(cmd.OutOrStdout(), "%s %-28s %s\n", mark, r.Check, r.Detail)
				}
			}
			if failed > 0 {
				return fmt.Errorf("%d of %d checks failed", failed, len(results))
			}
			return nil
		},
	}
	serverFlags(cmd, &target)
	rf.register(cmd, false)
	cmd.Flags().StringVarP(&output, "output", "o", "table", "table or json")
	return cmd
}

// redisChecks check the shared Redis: reachable, the active management cluster, and
// whether it can fail over (redisstore.Inspect).
func redisChecks(ctx context.Context, rf redisFlags) []checkResult {
	var out []checkResult
	add := func(check string, ok bool, format string, args ...any) {
		out = append(out, checkResult{Check: check, OK: ok, Detail: fmt.Sprintf(format, args...)})
	}
	rc, opts, err := rf.dial()
	if err != nil {
		add("redis reachable", false, "%v", err)
		return out
	}
	defer rc.Close()
	cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	if err := redisstore.New(rc, rf.prefix).Ping(cctx); err != nil {
		add("redis reachable", false, "%s: %v", opts, err)
	} else {
		add("redis reachable", true, "%s", strings.TrimPrefix(opts.String(), "redis "))
		if l, err := redisstore.NewHA(rc, rf.prefix).ReadLock(cctx); err == nil && l.Name != "" {
			add("active management cluster", true, "%s (epoch %d, since %s)", l.Name, l.Epoch, l.Since.Format(time.RFC3339))
		}
	}
	top := redisstore.Inspect(cctx, opts, rc, rf.prefix)
	add("redis failover", len(top.Problems) == 0, "%s", top)
	return out
}

func runChecks(ctx context.Context, c *configapi.Client, rf redisFlags) []checkResult {
	var out []checkResult
	add := func(check string, ok bool, format string, args ...any) {
		out = append(out, checkResult{Check: check, OK: ok, Detail: fmt.Sprintf(format, args...)})
	}
	if rf.given() {
		out = append(out, redisChecks(ctx, rf)...)
	}
	var st configapi.ServerStatus
	if err := c.Status(ctx, &st); err != nil {
		add("server reachable", false, "%v", err)
		return out
	}
	add("server reachable", true, "%s (relay %s, store %s)", c.Base, st.Relay, st.Store)
	if err := c.Ready(ctx); err != nil {
		add("server ready", false, "%v", err)
	} else {
		add("server ready", true, "ok")
	}
	add("store", st.StoreError == "", "%s", orText(st.StoreError, "reachable"))
	if st.StoreReplication != "" {
		add("store replication", false, "%s; bring a replica back (or check replication on the redis primary)", st.StoreReplication)
	}
	if st.HA.Lock != nil {
		add("this server's role", true, "management cluster %s is %s; lock held by %s at epoch %d", st.HA.MgmtCluster, activeWord(st.HA.Active), st.HA.Lock.Name, st.HA.Lock.Epoch)
	}
	if st.HA.LeaderElected {
		holder := "none"
		if st.HA.Lease != nil {
			holder = fmt.Sprintf("%s (epoch %d)", st.HA.Lease.Holder, st.HA.Lease.Epoch)
		}
		add("leader", st.HA.Lease != nil, "%s; this replica %s leads: %v", holder, st.HA.ReplicaID, st.HA.Leader)
	}
	if len(st.HA.Replicas) > 0 {
		var ids []string
		for _, r := range st.HA.Replicas {
			ids = append(ids, r.ID+"@"+r.Address)
		}
		add("replicas", true, "%s", strings.Join(ids, ", "))
	}
	pl := st.Plane
	if len(pl.Servers) == 0 { // a server that does not share the plane's view: itself only
		pl.Servers = []plane.Server{plane.Local(st.HA.ReplicaID, st.HA.MgmtCluster, st.Relay, st.Status, st.Connections, time.Now())}
	}
	if len(pl.Servers) > 1 || pl.Error != "" {
		var servers []string
		for _, s := range pl.Servers {
			servers = append(servers, fmt.Sprintf("%s@%s (%d agents)", s.ID, s.Relay, len(s.Clusters)))
		}
		detail := strings.Join(servers, ", ")
		if pl.Error != "" {
			detail += "; other servers' views unknown: " + pl.Error
		}
		add("plane", pl.Error == "", "%s", detail)
	}
	for i, s := range pl.Servers {
		name := "safe mode"
		if i > 0 {
			name = "safe mode on " + s.ID
		} else if !s.SafeMode.Active {
			add(name, true, "translation not held")
		}
		if s.SafeMode.Active {
			add(name, false, "%s", safeModeText(s.SafeMode))
		}
	}
	for _, cl := range st.Clusters {
		ok, detail := clusterCheck(pl, cl.Name, st.SafeMode)
		add("cluster "+cl.Name, ok, "%s", detail)
		if r := cl.EpochRefusal; r != nil {
			add("epoch", false, "cluster %s refuses epoch %d: it holds epoch %d (since %s)", cl.Name, r.Refused, r.Held, r.Since.Format(time.RFC3339))
		}
		for _, srv := range pl.Servers {
			for _, pc := range srv.Clusters {
				if r := pc.Connection.Refused; pc.Name == cl.Name && r != nil {
					// Shown for relay.RefusalMemory after the last refusal.
					add("duplicate agent "+cl.Name, false, "a second agent of %s (peer %s, instance %s, version %s) was refused by %s, last at %s (%d streams refused); the cluster stays with the agent at %s (instance %s) since %s; stop the second agent or give it its own --cluster",
						cl.Name, r.Peer, r.Instance, r.Version, srv.ID, r.At.Format(time.RFC3339), r.Count, r.Holder.Peer, r.Holder.Instance, r.Holder.Since.Format(time.RFC3339))
				}
			}
		}
	}
	// Objects a cluster refused while the rest of its output was applied (issue 12, case 10).
	for _, cl := range st.Clusters {
		for _, o := range cl.RefusedObjects {
			add("cluster "+cl.Name+" object "+o.Key, false, "refused by the cluster: %s", o.Reason)
		}
	}
	for _, r := range st.RateLimited {
		add("relay rate limit", false, "%s: %d attempts refused from %s to %s (too many failed attempts or registrations; a misconfigured agent or a flood)",
			r.Source, r.Refused, r.First.Format(time.RFC3339), r.Last.Format(time.RFC3339))
	}
	left := time.Until(st.RelayCertNotAfter)
	add("relay certificate", left > 24*time.Hour, "expires %s (in %s); CA expires %s", st.RelayCertNotAfter.Format(time.RFC3339), left.Round(time.Hour), st.RelayCANotAfter.Format(time.RFC3339))
	if r := st.RelayCA; r.Phase == relay.PhaseTrustBoth {
		detail := fmt.Sprintf("rotation in phase %s since %s: old and new relay CA trusted", r.Phase, r.Since.Format(time.RFC3339))
		if len(r.Pending) > 0 {
			detail += "; agents still on the old CA: " + strings.Join(r.Pending, ", ")
		}
		add("relay CA rotation", false, "%s; finish it with meshrelay ca rotate relay", detail)
	}
	if m := st.MeshCA; m.Signer.Subject != "" {
		if m.Phase == pki.PhaseNone {
			add("mesh CA", true, "%s expires %s", m.Signer.Subject, m.Signer.NotAfter.Format(time.RFC3339))
		} else {
			var waits []string
			for _, c := range m.Clusters {
				if !c.Done {
					waits = append(waits, c.Name+": "+c.Waiting)
				}
			}
			detail := fmt.Sprintf("rotation in phase %s since %s (both CAs trusted); run `meshrelay ca rotate mesh` to finish it", m.Phase, m.Since.Format(time.RFC3339))
			if len(waits) > 0 {
				detail += "; waiting for " + strings.Join(waits, "; ")
			}
			add("mesh CA", false, "%s", detail)
		}
		if m.IstioCAError != "" {
			add("istio CA (cacerts)", false, "%s", m.IstioCAError)
		}
	}
	if !st.AdminCertNotAfter.IsZero() { // zero: plain HTTP on loopback (--admin-plaintext)
		left := time.Until(st.AdminCertNotAfter)
		detail := fmt.Sprintf("expires %s (in %s)", st.AdminCertNotAfter.Format(time.RFC3339), left.Round(time.Hour))
		if st.AdminCertError != "" {
			detail += "; " + st.AdminCertError
		}
		add("admin certificate", left > 24*time.Hour && st.AdminCertError == "", "%s", detail)
	}
	add("telemetry export", st.OTLPExport.Problem() == "", "%s", telemetryText(st.OTLPExport))
	for _, cl := range st.Clusters {
		if at, found, _ := pl.Find(cl.Name); found && at.Cluster.Connection.Report != nil && at.Cluster.Connection.Report.TelemetryError != "" {
			add("telemetry export "+cl.Name, false, "agent: %s", at.Cluster.Connection.Report.TelemetryError)
		}
	}
	if tl := st.Telemetry; tl != nil {
		if tl.Error != "" {
			add("telemetry gateway", false, "the UI cannot read %s since %s: %s", tl.URL, tl.ErrorSince.Format(time.RFC3339), tl.Error)
		} else {
			add("telemetry gateway", true, "%s read at %s", tl.URL, tl.LastRead.Format(time.RFC3339))
		}
	}
	if len(st.TranslationErrors) > 0 || len(st.ConfigErrors) > 0 {
		all := append(append([]string{}, st.ConfigErrors...), st.TranslationErrors...)
		add("translation", false, "%d errors: %s", len(all), strings.Join(all, "; "))
	} else {
		add("translation", true, "%d translations, no errors", st.Translations)
	}
	var keys []string
	for k := range st.ResourceStatus {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		msgs := st.ResourceStatus[k]
		// Notes (a documented fallback, an ignored part) are shown but are not failures.
		add("resource "+k, !translate.HasProblem(msgs), "%s", strings.Join(msgs, "; "))
	}
	return out
}

// clusterCheck judges a registered cluster on the whole plane: it must be connected (push
// and pull) to some server and in sync there, and its agent must report nothing wrong.
// local is the safe mode of the server asked.
func clusterCheck(pl plane.Status, cluster string, local reconcile.SafeModeStatus) (bool, string) {
	at, found, partial := pl.Find(cluster)
	if !found {
		detail := "registered but connected to no server"
		if len(pl.Servers) == 1 {
			detail = "registered but not connected"
		}
		for _, p := range partial {
			detail += fmt.Sprintf("; %d push and %d pull streams on %s", p.Cluster.Connection.Push, p.Cluster.Connection.Pull, p.Server.ID)
		}
		if slices.Contains(local.Missing, cluster) {
			detail += "; safe mode waits for its input"
		}
		return false, detail
	}
	ok := true
	var parts []string
	if len(pl.Servers) > 1 {
		parts = append(parts, fmt.Sprintf("connected to %s (%s)", at.Server.ID, at.Server.Relay))
	} else {
		parts = append(parts, "connected")
	}
	sync := at.Cluster.Sync
	switch {
	case !sync.InSync && at.Server.SafeMode.Active:
		ok = false
		parts = append(parts, safeModeText(at.Server.SafeMode))
	case !sync.InSync:
		ok = false
		parts = append(parts, strings.TrimSpace(fmt.Sprintf("out of sync for %.0fs: desired v%d, acked v%d %s", sync.StaleSeconds, sync.OutputVersion, sync.AckedVersion, sync.LastNack)))
	default:
		parts = append(parts, fmt.Sprintf("in sync at v%d", sync.OutputVersion))
	}
	if r := at.Cluster.Connection.Report; r != nil {
		if r.DiscoveryError != "" {
			ok = false
			parts = append(parts, "discovery fails: "+r.DiscoveryError)
		}
		for _, p := range r.DataPlane {
			ok = false
			if p.TypeURL == "" { // the agent's xDS server itself (docs/adr/0007)
				parts = append(parts, fmt.Sprintf("%s: %s", p.Node, p.Error))
				continue
			}
			parts = append(parts, fmt.Sprintf("gateway %s refuses %s: %s", p.Node, shortTypeURL(p.TypeURL), p.Error))
		}
	}
	return ok, strings.Join(parts, "; ")
}

// telemetryText says where the server's OTLP export goes and how it fares: off, the
// failures in a row with the last error, or the last success.
func telemetryText(t telemetry.Status) string {
	switch {
	case t.Endpoint == "":
		return "off"
	case t.Failed > 0:
		return fmt.Sprintf("%s (%d exports failed in a row, the last at %s)", t.Problem(), t.Failed, t.LastErrorAt.Format(time.RFC3339))
	case t.LastSuccess.IsZero():
		return fmt.Sprintf("to %s, nothing exported yet", t.Endpoint)
	default:
		return fmt.Sprintf("to %s, last export at %s", t.Endpoint, t.LastSuccess.Format(time.RFC3339))
	}
}

// safeModeText says what safe mode waits for.
func safeModeText(sm reconcile.SafeModeStatus) string {
	if len(sm.Missing) == 0 {
		return sm.Reason
	}
	if !strings.HasPrefix(sm.Reason, "safe mode") {
		return fmt.Sprintf("%s; missing the input of %s", sm.Reason, strings.Join(sm.Missing, ", "))
	}
	return fmt.Sprintf("safe mode: waiting for the input of %s (held since %s)", strings.Join(sm.Missing, ", "), sm.Since.Format(time.RFC3339))
}

// shortTypeURL is an xDS type URL's message name (Listener, Cluster, ...).
func shortTypeURL(t string) string {
	if i := strings.LastIndexByte(t, '.'); i >= 0 {
		return t[i+1:]
	}
	return t
}

func orText(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func activeWord(a bool) string {
	if a {
		return "active"
	}
	return "passive"
}
