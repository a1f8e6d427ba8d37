package relaybench

import (
	"context"
	"fmt"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/meshrelay/meshrelay/internal/bench"
	"github.com/meshrelay/meshrelay/internal/bench/sim"
	"github.com/meshrelay/meshrelay/internal/configapi"
	"github.com/meshrelay/meshrelay/internal/promtext"
	"github.com/meshrelay/meshrelay/internal/tokenfile"
)

// The measured phases of `meshrelay-bench relay`: changes to every cluster, changes to one cluster,
// and churn.

func (r *relayRun) apply(ctx context.Context, yaml string) (sent, accepted time.Time, err error) {
	token, err := tokenfile.Read(filepath.Join(r.servers[0].data, configapi.TokenFileName))
	if err != nil {
		return sent, accepted, err
	}
	c, err := configapi.NewClient("http://"+r.servers[0].admin, token, "") // --admin-plaintext
	if err != nil {
		return sent, accepted, err
	}
	sent = time.Now()
	res, err := c.Apply(ctx, "bench", []byte(yaml))
	accepted = time.Now()
	if err == nil && len(res.Errors) > 0 {
		err = fmt.Errorf("apply refused: %s", strings.Join(res.Errors, "; "))
	}
	return sent, accepted, err
}

// awaitMarker waits until every agent (or the named ones) applied marker id and returns
// the apply times by cluster.
func (r *relayRun) awaitMarker(ctx context.Context, id string, want int, timeout time.Duration) (map[string]int64, error) {
	var got map[string]int64
	err := bench.WaitFor(ctx, timeout, 20*time.Millisecond, func() (bool, error) {
		if err := r.aliveErr(); err != nil {
			return false, err
		}
		got = nil
		if err := bench.GetJSON(ctx, "http://"+r.simAPI+"/markers?id="+id, &got); err != nil {
			return false, err
		}
		return len(got) >= want, nil
	})
	return got, err
}

// propagation applies changes that reach every cluster, one at a time.
func (r *relayRun) propagation(ctx context.Context) {
	n := r.o.World.Clusters
	rep := &r.rep.Propagation
	rep.Changes = r.o.Changes
	var lat, dist, last, acked, applyMs []float64
	var trans, bytes, cpu, simCPU float64
	for k := 1; k <= r.o.Changes; k++ {
		sim0, _ := bench.ReadProcStats(r.sim.Pid())
		m0, cpu0, err := r.serverMetrics(ctx, windowStart)
		if err != nil {
			rep.Error = err.Error()
			return
		}
		id := fmt.Sprintf("p%d", k)
		sent, acc, err := r.apply(ctx, sim.MarkerRouteTable("bench-marker", id))
		if err != nil {
			rep.Error = err.Error()
			return
		}
		applyMs = append(applyMs, float64(acc.Sub(sent))/1e6)
		got, err := r.awaitMarker(ctx, id, n, 2*time.Minute)
		if err != nil {
			rep.Missing += n - len(got)
			r.note("propagation change %d: %d/%d agents: %v", k, len(got), n, err)
		}
		ackErr := bench.WaitFor(ctx, time.Minute, 200*time.Millisecond, func() (bool, error) {
			c, _, err := r.inSync(ctx)
			return c == n, err
		})
		ackAt := time.Now()
		m1, cpu1, _ := r.serverMetrics(ctx, windowEnd)
		sim1, _ := bench.ReadProcStats(r.sim.Pid())
		simCPU += sim1.CPUSeconds - sim0.CPUSeconds
		tr := m1.Sum("meshrelay_translation_duration_seconds_sum") - m0.Sum("meshrelay_translation_duration_seconds_sum")
		trans += tr
		bytes += m1.Sum("meshrelay_relay_pull_bytes_sent_total") - m0.Sum("meshrelay_relay_pull_bytes_sent_total")
		cpu += cpu1 - cpu0
		worst := 0.0
		for _, at := range got {
			l := float64(at-acc.UnixNano()) / 1e6
			lat = append(lat, l)
			dist = append(dist, max(0, l-tr*1000))
			worst = max(worst, l)
		}
		last = append(last, worst)
		if ackErr == nil {
			acked = append(acked, float64(ackAt.Sub(acc))/1e6)
		}
		r.logf("propagation %d/%d: last agent %s, translation %s", k, r.o.Changes, bench.Ms(worst), bench.Ms(tr*1000))
		time.Sleep(300 * time.Millisecond)
	}
	rep.Latency, rep.Distribution, rep.LastAgent, rep.AllAcked, rep.ApplyMs = bench.NewDist(lat), bench.NewDist(dist), bench.NewDist(last), bench.NewDist(acked), bench.NewDist(applyMs)
	k := float64(r.o.Changes)
	rep.TranslationMs, rep.BytesPerChange, rep.CPUSecondsPerChange, rep.AgentsCPUSecondsPerChange = trans/k*1000, bytes/k, cpu/k, simCPU/k
	rep.BytesPerAgentChange = rep.BytesPerChange / float64(n)
}

// oneCluster changes a route table of one cluster and checks nobody else hears of it.
func (r *relayRun) oneCluster(ctx context.Context) {
	rep := &r.rep.OneCluster
	rep.Changes = r.o.Changes
	var lat []float64
	var trans float64
	for k := 1; k <= r.o.Changes; k++ {
		target := bench.ClusterName(0) // always the same: moving the table would change the previous target too
		m0, _, err := r.serverMetrics(ctx, windowStart)
		if err != nil {
			rep.Error = err.Error()
			return
		}
		id := fmt.Sprintf("o%d", k)
		sent, acc, err := r.apply(ctx, sim.MarkerRouteTable("bench-one", id, target))
		if err != nil {
			rep.Error = err.Error()
			return
		}
		got, err := r.awaitMarker(ctx, id, 1, time.Minute)
		if err != nil {
			rep.Error = err.Error()
			return
		}
		at := got[target]
		lat = append(lat, float64(at-acc.UnixNano())/1e6)
		r.pause(time.Second)
		var ev map[string][]sim.ApplyEvent
		if err := bench.GetJSON(ctx, fmt.Sprintf("http://%s/events?from=%d&to=%d", r.simAPI, sent.UnixNano(), time.Now().UnixNano()), &ev); err != nil {
			rep.Error = err.Error()
			return
		}
		for c, es := range ev {
			if c == target {
				continue
			}
			for _, e := range es {
				rep.OtherAgentsBytes += e.Bytes
				rep.OtherAgentsApplies++
			}
		}
		m1, _, _ := r.serverMetrics(ctx, windowEnd)
		b0, b1 := m0.By("meshrelay_relay_pull_bytes_sent_total", "cluster"), m1.By("meshrelay_relay_pull_bytes_sent_total", "cluster")
		for c, v := range b1 {
			if c != target {
				rep.ServerBytesOthers += v - b0[c]
			}
		}
		trans += m1.Sum("meshrelay_translation_duration_seconds_sum") - m0.Sum("meshrelay_translation_duration_seconds_sum")
		r.logf("one-cluster %d/%d (%s): %s, others received %d bytes", k, r.o.Changes, target, bench.Ms(lat[len(lat)-1]), rep.OtherAgentsBytes)
	}
	rep.Latency = bench.NewDist(lat)
	rep.TranslationMs = trans / float64(r.o.Changes) * 1000
}

// churn runs endpoint churn in every cluster and measures whether the server keeps up.
func (r *relayRun) churn(ctx context.Context) {
	n := r.o.World.Clusters
	rep := &ChurnReport{}
	r.rep.Churn = rep
	if err := bench.PostJSON(ctx, "http://"+r.simAPI+"/churn?interval="+r.o.ChurnInterval.String(), nil, nil); err != nil {
		r.note("churn: %v", err)
		return
	}
	defer func() {
		if err := bench.PostJSON(context.WithoutCancel(ctx), "http://"+r.simAPI+"/churn?interval=0s", nil, nil); err != nil {
			r.note("stop churn: %v", err)
		}
	}()
	r.logf("churn: every cluster changes an endpoint every %s; warming up", r.o.ChurnInterval)
	r.pause(3 * time.Second)
	m0, cpu0, _ := r.serverMetrics(ctx, windowStart)
	start := time.Now()
	end := start.Add(r.o.ChurnWindow)
	var mu sync.Mutex // guards the samples and the window's end figures
	var lags, marker, fromSent, applyMs []float64
	var samples []ChurnSample
	var m1 promtext.Samples
	var cpu1, elapsed float64
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // samples of input lag and staleness; the window's figures at its end
		defer wg.Done()
		defer func() {
			m, c, _ := r.serverMetrics(ctx, windowEnd)
			mu.Lock()
			m1, cpu1, elapsed = m, c, time.Since(start).Seconds()
			mu.Unlock()
		}()
		for time.Now().Before(end) && ctx.Err() == nil {
			t0 := time.Now()
			l, stale, statusTook, err := r.inputLag(ctx)
			if err != nil {
				r.note("churn sample: %v", err)
			}
			d := bench.NewDist(l)
			mu.Lock()
			lags = append(lags, l...)
			samples = append(samples, ChurnSample{AtSeconds: time.Since(start).Seconds(), StatusMs: float64(statusTook) / 1e6,
				LagP99Ms: d.P99, LagMaxMs: d.Max, StaleMaxS: stale})
			mu.Unlock()
			time.Sleep(min(max(0, time.Second-time.Since(t0)), max(0, time.Until(end))))
		}
	}()
	for k := 1; time.Now().Before(end) && ctx.Err() == nil; k++ {
		t0 := time.Now()
		id := fmt.Sprintf("c%d", k)
		sent, acc, err := r.apply(ctx, sim.MarkerRouteTable("bench-churn-marker", id))
		if err != nil {
			r.note("churn marker: %v", err)
			break
		}
		rep.Markers++
		got, err := r.awaitMarker(ctx, id, n, time.Until(end)+60*time.Second)
		if err != nil {
			rep.MarkerMissing += n - len(got)
		}
		mu.Lock()
		applyMs = append(applyMs, float64(acc.Sub(sent))/1e6)
		for _, at := range got {
			marker = append(marker, float64(at-acc.UnixNano())/1e6)
			fromSent = append(fromSent, float64(at-sent.UnixNano())/1e6)
		}
		mu.Unlock()
		time.Sleep(max(0, 2*time.Second-time.Since(t0)))
	}
	wg.Wait()
	rep.WindowSeconds = elapsed
	rep.InputsPerSecond = (m1.Sum("meshrelay_relay_push_snapshots_total") - m0.Sum("meshrelay_relay_push_snapshots_total")) / elapsed
	rep.SentPerSecond = float64(n) / r.o.ChurnInterval.Seconds()
	rep.CPUPerSecond = (cpu1 - cpu0) / elapsed
	rep.Translations = m1.Sum("meshrelay_translation_total") - m0.Sum("meshrelay_translation_total")
	if rep.Translations > 0 {
		rep.TranslationMs = (m1.Sum("meshrelay_translation_duration_seconds_sum") - m0.Sum("meshrelay_translation_duration_seconds_sum")) / rep.Translations * 1000
	}
	rep.BytesPerSecond = (m1.Sum("meshrelay_relay_pull_bytes_sent_total") - m0.Sum("meshrelay_relay_pull_bytes_sent_total")) / elapsed
	rep.InputLag, rep.Samples = bench.NewDist(lags), samples
	rep.Marker, rep.MarkerFromSent, rep.ApplyMs = bench.NewDist(marker), bench.NewDist(fromSent), bench.NewDist(applyMs)
	// Keeping up: the server takes (nearly) every input, the lag stays under 2 s and does
	// not grow over the window, and a change still reaches every agent within 2 s. Growth
	// compares the medians of the window's first and last thirds of samples: one sample
	// taken while a round is being delivered says nothing about a trend.
	growing := false
	trend := "-"
	if n := len(samples) / 3; n > 0 {
		first, last := samples[:n], samples[len(samples)-n:]
		median := func(ss []ChurnSample, f func(ChurnSample) float64) float64 {
			v := make([]float64, len(ss))
			for i, s := range ss {
				v[i] = f(s)
			}
			return bench.NewDist(v).P50
		}
		lag := func(s ChurnSample) float64 { return s.LagP99Ms }
		stale := func(s ChurnSample) float64 { return s.StaleMaxS }
		lag0, lag1, stale0, stale1 := median(first, lag), median(last, lag), median(first, stale), median(last, stale)
		growing = lag1 > lag0+1000 || stale1 > stale0+1
		trend = fmt.Sprintf("median lag p99 %s in the first %.0f s → %s in the last %.0f s, staleness %.1f s → %.1f s",
			bench.Ms(lag0), first[n-1].AtSeconds, bench.Ms(lag1), samples[len(samples)-1].AtSeconds-last[0].AtSeconds, stale0, stale1)
	}
	rep.KeepsUp = !growing && rep.MarkerMissing == 0 && rep.InputsPerSecond >= 0.9*rep.SentPerSecond &&
		rep.InputLag.P99 < 2000 && rep.MarkerFromSent.P99 < 2000
	rep.Verdict = fmt.Sprintf("inputs taken %.0f/s of %.0f/s; %s (%d samples); marker p99 %s from the request",
		rep.InputsPerSecond, rep.SentPerSecond, trend, len(samples), bench.Ms(rep.MarkerFromSent.P99))
	r.logf("churn: %s", rep.Verdict)
}

// inputLag compares each agent's input history with the server's input hash: the lag is
// how long ago the agent emitted the first input the server does not have yet.
func (r *relayRun) inputLag(ctx context.Context) ([]float64, float64, time.Duration, error) {
	// The server first: what it holds can then only be older than the agents' histories.
	server := map[string]string{}
	stale := 0.0
	t0 := time.Now()
	for _, s := range r.servers {
		var st configapi.ServerStatus
		if err := bench.GetJSON(ctx, "http://"+s.admin+"/status", &st); err != nil {
			return nil, 0, 0, err
		}
		for _, c := range st.Clusters {
			stale = max(stale, c.StaleSeconds)
			if c.InputHash != "" {
				server[c.Name] = c.InputHash
			}
		}
	}
	took := time.Since(t0)
	var inputs map[string][]sim.InputRecord
	if err := bench.GetJSON(ctx, "http://"+r.simAPI+"/inputs", &inputs); err != nil {
		return nil, 0, took, err
	}
	now := time.Now().UnixNano()
	var lags []float64
	for c, hist := range inputs {
		if len(hist) == 0 {
			continue
		}
		h := server[c]
		j := -1
		for i := len(hist) - 1; i >= 0; i-- {
			if hist[i].Hash == h {
				j = i
				break
			}
		}
		switch {
		case j == len(hist)-1:
			lags = append(lags, 0)
		case j >= 0:
			lags = append(lags, float64(now-hist[j+1].At)/1e6)
		default:
			lags = append(lags, float64(now-hist[0].At)/1e6) // older than the history: at least this
		}
	}
	sort.Float64s(lags)
	return lags, stale, took, nil
}
