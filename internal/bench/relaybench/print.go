package relaybench

import (
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/meshrelay/meshrelay/internal/bench"
)

// Print writes the report as a table.
func (r *Report) Print(w io.Writer) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	row := func(k, format string, args ...any) { fmt.Fprintf(tw, "%s\t%s\n", k, fmt.Sprintf(format, args...)) }
	o := r.Options
	store := "bolt (each server's --data-dir)"
	switch {
	case o.RedisAddress != "":
		store = "redis " + o.RedisAddress
	case o.MemoryStore:
		store = "memory (nothing durable)"
	}
	row("world", "%d agents × %d services (%d%% exported through VirtualDestinations), %d replica(s), store %s",
		o.World.Clusters, o.World.Services, o.World.ExportPercent, o.Replicas, store)
	row("machine", "%d CPUs (%s), %d GiB, %s", r.Machine.CPUs, r.Machine.Model, r.Machine.MemoryGiB, r.Machine.GoVersion)
	row("output per agent", "%.0f resources, %s (input %s)", r.Output.ResourcesPerAgent, bench.MiB(r.Output.BytesPerAgent), bench.MiB(r.Output.InputBytesPerAgent))
	g := r.Registration
	row("registration → both streams", "%s", g.Connected)
	row("registration + initial sync", "%s", g.Synced)
	row("  all agents synced", "%.2f s (%d/%d; first full translation %.2f s)", g.AllSyncedSeconds, g.SyncedAgents, g.Agents, g.FullTranslationSeconds)
	p := r.Propagation
	row("propagation to every agent", "%s", p.Latency)
	row("  last agent per change", "%s", p.LastAgent)
	row("  distribution (− translation)", "%s", p.Distribution)
	row("  server has every ACK", "%s", p.AllAcked)
	row("  apply request (HTTP)", "%s", p.ApplyMs)
	row("  per change", "translation %s, %s sent (%s per agent), CPU server %.2f s / agents %.2f s, %d missing",
		bench.Ms(p.TranslationMs), bench.MiB(p.BytesPerChange), bench.MiB(p.BytesPerAgentChange), p.CPUSecondsPerChange, p.AgentsCPUSecondsPerChange, p.Missing)
	c := r.OneCluster
	row("one-cluster change", "%s (translation %s)", c.Latency, bench.Ms(c.TranslationMs))
	row("  bytes to other agents", "%d (%d applies; server counted %.0f bytes)", c.OtherAgentsBytes, c.OtherAgentsApplies, c.ServerBytesOthers)
	s := r.Server
	row("server idle (no agents)", "heap %s, live %s, %0.f goroutines, RSS %s", bench.MiB(s.Idle.HeapInuseBytes), bench.MiB(s.Idle.HeapLiveBytes), s.Idle.Goroutines, bench.MiB(s.Idle.RSSBytes))
	row("server with agents, idle", "heap %s, live %s, %0.f goroutines, RSS %s, CPU %.3f s/s", bench.MiB(s.Connected.HeapInuseBytes), bench.MiB(s.Connected.HeapLiveBytes),
		s.Connected.Goroutines, bench.MiB(s.Connected.RSSBytes), s.IdleCPUPerSecond)
	row("  per connected agent", "heap %s, live %s, stacks %s, %.1f goroutines, RSS %s", bench.MiB(s.HeapInusePerAgent), bench.MiB(s.HeapLivePerAgent),
		bench.MiB(s.StackPerAgent), s.GoroutinesPerAgent, bench.MiB(s.RSSPerAgent))
	row("  per agent beyond snapshots", "heap %s, live %s, stacks %s (freed when the agents left)", bench.MiB(s.ConnectionHeapPerAgent),
		bench.MiB(s.ConnectionLivePerAgent), bench.MiB(s.ConnectionStackPerAgent))
	row("server totals", "CPU %.1f s, peak RSS %s", s.CPUSecondsTotal, bench.MiB(s.PeakRSSBytes))
	if ch := r.Churn; ch != nil {
		row("churn", "%.0f s window, %.0f input changes/s received, server CPU %.2f s/s, %.0f translations (mean %s), %s/s sent",
			ch.WindowSeconds, ch.InputsPerSecond, ch.CPUPerSecond, ch.Translations, bench.Ms(ch.TranslationMs), bench.MiB(ch.BytesPerSecond))
		row("  input lag", "%s", ch.InputLag)
		row("  marker under churn", "%s from the HTTP 200 (%d markers, %d missing)", ch.Marker, ch.Markers, ch.MarkerMissing)
		row("    from the request", "%s (apply request %s)", ch.MarkerFromSent, ch.ApplyMs)
		row("  keeps up", "%v: %s", ch.KeepsUp, ch.Verdict)
	}
	if b := r.Baseline; b != nil {
		row("baseline (go-control-plane)", "%d clients, %s payload, %s per change", b.Options.Clients, bench.MiB(b.PayloadBytes), bench.MiB(b.ChangeBytes))
		row("  initial sync", "%s (all in %.2f s)", b.Synced, b.AllSyncedSeconds)
		row("  change to every client", "%s (SetSnapshot ×N %s, CPU %.2f s)", b.Latency, bench.Ms(b.SetSnapshotMs), b.CPUSecondsPerChange)
	}
	if q := r.Ratio; q != nil {
		row("ours / baseline", "distribution p50 %.2f p99 %.2f max %.2f; whole path p50 %.2f p99 %.2f max %.2f; initial sync %.2f",
			q.DistributionP50, q.DistributionP99, q.DistributionMax, q.WholePathP50, q.WholePathP99, q.WholePathMax, q.InitialSyncAll)
	}
	row("simulated agents process", "CPU %.1f s, peak RSS %s", r.Sim.CPUSeconds, bench.MiB(float64(r.Sim.HWMBytes)))
	for _, n := range r.Notes {
		row("note", "%s", n)
	}
	tw.Flush()
}

// Print writes the baseline report as a table.
func (b *BaselineReport) Print(w io.Writer) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	row := func(k, format string, args ...any) { fmt.Fprintf(tw, "%s\t%s\n", k, fmt.Sprintf(format, args...)) }
	row("baseline", "go-control-plane SnapshotCache, ADS state of the world over mTLS, %d clients", b.Options.Clients)
	row("machine", "%d CPUs (%s), %s", b.Machine.CPUs, b.Machine.Model, b.Machine.GoVersion)
	row("payload per client", "%s (change %s)", bench.MiB(b.PayloadBytes), bench.MiB(b.ChangeBytes))
	row("initial sync", "%s (all in %.2f s)", b.Synced, b.AllSyncedSeconds)
	row("change to every client", "%s", b.Latency)
	row("  last client per change", "%s", b.LastAgent)
	row("  per change", "SetSnapshot ×N %s, server CPU %.2f s, %d missing", bench.Ms(b.SetSnapshotMs), b.CPUSecondsPerChange, b.Missing)
	row("server", "CPU %.1f s, peak RSS %s", b.Server.CPUSeconds, bench.MiB(float64(b.Server.HWMBytes)))
	tw.Flush()
}

// Plot returns the distributions the README plots: a change that reaches every agent,
// from the admin API's answer to each agent applying it, and without the translation, beside
// go-control-plane serving the same clients the same change (with --baseline).
func (r *Report) Plot() (title string, series []bench.Series) {
	title = fmt.Sprintf("A change to every cluster, %d agents", r.Options.World.Clusters)
	if r.Options.ServerCPUs != "" {
		title += " (server and agents on their own cores)"
	}
	series = []bench.Series{
		{Name: "meshrelay: admin API answer to each agent applying it", Dist: r.Propagation.Latency},
		{Name: "meshrelay: the same, less the translation", Dist: r.Propagation.Distribution},
	}
	if r.Baseline != nil {
		series = append(series, bench.Series{Name: "go-control-plane: SetSnapshot to each client receiving it", Dist: r.Baseline.Latency})
	}
	return title, series
}
