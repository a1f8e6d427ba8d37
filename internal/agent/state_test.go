package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/meshrelay/meshrelay/internal/poll"
	"github.com/meshrelay/meshrelay/internal/snapshot"
)

// syncBuffer is a log destination safe for the store's background goroutine.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

type testStore struct {
	*stateStore
	logs *syncBuffer
}

// openStore opens the state store of dir as an agent starting there would.
func openStore(t *testing.T, dir string) (testStore, *snapshot.Snapshot) {
	t.Helper()
	logs := &syncBuffer{}
	s := newStateStore(dir, slog.New(slog.NewTextHandler(logs, nil)), newMetrics(nil))
	snap, err := s.open()
	if err != nil {
		t.Fatalf("open state store: %v", err)
	}
	t.Cleanup(func() { s.close() })
	return testStore{s, logs}, snap
}

// world is a sequence of output snapshots that differ by one or two resources each, the
// way a running agent receives them; every body is large, like the bench world's, so that
// a delta is much smaller than the snapshot.
func world(n int) []*snapshot.Snapshot {
	rs := map[string]snapshot.Resource{}
	for i := range 20 {
		k := fmt.Sprintf("ServiceEntry/default/svc-%02d", i)
		rs[k] = snapshot.NewResource(k, fmt.Appendf(nil, `{"host":"svc-%d","pad":%q}`, i, strings.Repeat("x", 1000)))
	}
	var out []*snapshot.Snapshot
	for v := 1; v <= n; v++ {
		k := fmt.Sprintf("ServiceEntry/default/svc-%02d", v%20)
		rs[k] = snapshot.NewResource(k, fmt.Appendf(nil, `{"host":"svc-%d","change":%d,"pad":%q}`, v%20, v, strings.Repeat("y", 200)))
		if v%3 == 0 {
			delete(rs, fmt.Sprintf("ServiceEntry/default/svc-%02d", (v+7)%20))
		}
		if v%5 == 0 {
			k := fmt.Sprintf("VirtualService/default/vs-%d", v)
			rs[k] = snapshot.NewResource(k, fmt.Appendf(nil, `{"route":%d}`, v))
		}
		m := make(map[string]snapshot.Resource, len(rs))
		for k, r := range rs {
			m[k] = r
		}
		epoch := uint64(1)
		if v > n/2 {
			epoch = 2 // a server failover midway: a new epoch
		}
		out = append(out, snapshot.FromMap(uint64(v), epoch, m))
	}
	return out
}

// saveAll saves snaps in order after prev (nil: nothing saved yet), each as the delta the
// server would send, and returns the last.
func saveAll(t *testing.T, s testStore, prev *snapshot.Snapshot, snaps ...*snapshot.Snapshot) *snapshot.Snapshot {
	t.Helper()
	for _, next := range snaps {
		var held map[string]string
		if prev != nil {
			held = prev.ResourceHashes()
		}
		d := snapshot.Diff(held, next)
		applied, err := snapshot.Apply(prev, d)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.save(applied, d); err != nil {
			t.Fatalf("save version %d: %v", next.Version, err)
		}
		prev = applied
	}
	return prev
}

func sameState(t *testing.T, what string, got, want *snapshot.Snapshot) {
	t.Helper()
	if got == nil || want == nil {
		if got != want {
			t.Fatalf("%s: got %v, want %v", what, got, want)
		}
		return
	}
	if got.Version != want.Version || got.Epoch != want.Epoch || got.Hash != want.Hash {
		t.Fatalf("%s: got version %d epoch %d hash %.12s, want version %d epoch %d hash %.12s",
			what, got.Version, got.Epoch, got.Hash, want.Version, want.Epoch, want.Hash)
	}
	for k, r := range want.Resources {
		if g, ok := got.Resources[k]; !ok || !bytes.Equal(g.Body, r.Body) || g.Hash != r.Hash {
			t.Fatalf("%s: resource %s differs", what, k)
		}
	}
	if len(got.Resources) != len(want.Resources) {
		t.Fatalf("%s: %d resources, want %d", what, len(got.Resources), len(want.Resources))
	}
	// What the agent would write as its base must read back as the same snapshot.
	b, err := json.Marshal(got)
	if err != nil {
		t.Fatal(err)
	}
	var back snapshot.Snapshot
	if err := json.Unmarshal(b, &back); err != nil || back.Hash != want.Hash {
		t.Fatalf("%s: state does not survive its JSON form: %v", what, err)
	}
}

func logFiles(t *testing.T, dir string) []string {
	t.Helper()
	seqs, err := listLogs(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, seq := range seqs {
		out = append(out, logPath(dir, seq))
	}
	return out
}

func fileSize(t *testing.T, path string) int64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

// The first output becomes the base; every later one is one appended record the size of
// the change, and a restart replays them to the same state, as does ReadState.
func TestStateReplay(t *testing.T) {
	dir := t.TempDir()
	snaps := world(8)
	s, got := openStore(t, dir)
	if got != nil {
		t.Fatalf("fresh state dir loaded %v", got)
	}
	saveAll(t, s, nil, snaps[0])
	base := fileSize(t, filepath.Join(dir, baseFile))
	logs := logFiles(t, dir)
	if len(logs) != 1 {
		t.Fatalf("state logs %v, want one", logs)
	}
	for i := 1; i < len(snaps); i++ {
		before := fileSize(t, logs[0])
		saveAll(t, s, snaps[i-1], snaps[i])
		if grew := fileSize(t, logs[0]) - before; grew <= 0 || grew > base/4 {
			t.Fatalf("saving version %d grew the log by %d bytes; the base is %d: not proportional to the change", snaps[i].Version, grew, base)
		}
	}
	if fileSize(t, filepath.Join(dir, baseFile)) != base {
		t.Fatal("a delta rewrote the base")
	}
	want := snaps[len(snaps)-1]
	read, err := ReadState(dir)
	if err != nil {
		t.Fatal(err)
	}
	sameState(t, "ReadState while open", read, want)
	s.close()

	s2, got := openStore(t, dir)
	sameState(t, "after restart", got, want)
	if strings.Contains(s2.logs.String(), "level=WARN") {
		t.Fatalf("a clean state dir logged a warning:\n%s", s2.logs)
	}
	// The restarted store keeps appending to the same log.
	next := world(9)[8]
	saveAll(t, s2, want, next)
	s2.close()
	_, got = openStore(t, dir)
	sameState(t, "after a second restart", got, next)
}

// A state dir written before the log existed (only output.json, as json.Marshal of the
// snapshot) loads unchanged, and the agent carries on from it.
func TestStateOldDirLoads(t *testing.T) {
	dir := t.TempDir()
	snaps := world(3)
	old, err := json.Marshal(snaps[1])
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, baseFile), old, 0o600); err != nil {
		t.Fatal(err)
	}
	s, got := openStore(t, dir)
	sameState(t, "old state dir", got, snaps[1])
	if b, _ := os.ReadFile(filepath.Join(dir, baseFile)); !bytes.Equal(b, old) {
		t.Fatal("opening rewrote the old base")
	}
	saveAll(t, s, got, snaps[2])
	s.close()
	_, got = openStore(t, dir)
	sameState(t, "old state dir and a delta", got, snaps[2])
}

// buildDir saves snaps into a fresh state dir and returns it with the offsets where each
// record of its log starts (the last entry is the log's end).
func buildDir(t *testing.T, snaps []*snapshot.Snapshot) (dir, log string, offsets []int64) {
	t.Helper()
	dir = t.TempDir()
	s, _ := openStore(t, dir)
	saveAll(t, s, nil, snaps[0])
	log = logFiles(t, dir)[0]
	for i := 1; i < len(snaps); i++ {
		offsets = append(offsets, fileSize(t, log))
		saveAll(t, s, snaps[i-1], snaps[i])
	}
	offsets = append(offsets, fileSize(t, log))
	s.close()
	return dir, log, offsets
}

// A crash cut the last append at any byte: the agent starts from the state before it, says
// so in a warning, cuts the torn bytes off and appends after the last complete record.
func TestStateTornTail(t *testing.T) {
	snaps := world(4)
	dir, log, offs := buildDir(t, snaps)
	full, err := os.ReadFile(log)
	if err != nil {
		t.Fatal(err)
	}
	start, end := offs[len(offs)-2], offs[len(offs)-1]
	for cut := start; cut < end; cut++ {
		if err := os.WriteFile(log, full[:cut], 0o600); err != nil {
			t.Fatal(err)
		}
		s, got := openStore(t, dir)
		sameState(t, fmt.Sprintf("cut at %d of %d..%d", cut, start, end), got, snaps[2])
		if warned := strings.Contains(s.logs.String(), "state log damaged"); warned != (cut > start) {
			t.Fatalf("cut at %d: warning logged %v, want %v:\n%s", cut, warned, cut > start, s.logs)
		}
		if size := fileSize(t, log); size != start {
			t.Fatalf("cut at %d: log is %d bytes after open, want it cut back to %d", cut, size, start)
		}
		saveAll(t, s, got, snaps[3])
		s.close()
		_, again := openStore(t, dir)
		sameState(t, fmt.Sprintf("cut at %d, then the change saved again", cut), again, snaps[3])
	}
}

// A record whose checksum does not match ends the replay there, wherever it is: the agent
// starts from the state before it and drops the rest.
func TestStateCorruptRecord(t *testing.T) {
	snaps := world(5)
	for i := 1; i < len(snaps); i++ { // record i leads to snaps[i]
		t.Run(fmt.Sprintf("record %d", i), func(t *testing.T) {
			dir, log, offs := buildDir(t, snaps)
			b, err := os.ReadFile(log)
			if err != nil {
				t.Fatal(err)
			}
			b[offs[i-1]+frameHeaderLen+5] ^= 0x40 // a bit of the payload
			if err := os.WriteFile(log, b, 0o600); err != nil {
				t.Fatal(err)
			}
			s, got := openStore(t, dir)
			sameState(t, "corrupt record", got, snaps[i-1])
			if !strings.Contains(s.logs.String(), "state log damaged") || !strings.Contains(s.logs.String(), "checksum") {
				t.Fatalf("no warning naming the checksum:\n%s", s.logs)
			}
			saveAll(t, s, got, snaps[len(snaps)-1])
			s.close()
			_, again := openStore(t, dir)
			sameState(t, "after the repair", again, snaps[len(snaps)-1])
		})
	}
}

// A record that decodes and passes its checksum but does not lead to the hash it records
// (a log that does not belong to this base) is not applied.
func TestStateRecordHashChecked(t *testing.T) {
	snaps := world(3)
	dir, log, _ := buildDir(t, snaps)
	// Append a delta recorded as leading to snaps[2]'s hash while it removes a resource.
	d := snapshot.Delta{Version: 9, Epoch: snaps[2].Epoch, Hash: snaps[2].Hash, Removals: []string{snaps[2].Keys()[0]}}
	f, err := os.OpenFile(log, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(encodeDelta(d)); err != nil {
		t.Fatal(err)
	}
	f.Close()
	s, got := openStore(t, dir)
	sameState(t, "after a record with a wrong hash", got, snaps[2])
	if !strings.Contains(s.logs.String(), "hash mismatch") {
		t.Fatalf("no warning naming the hash mismatch:\n%s", s.logs)
	}
}

// A compaction stopped after any of its steps (a crash), with deltas appended to the new
// log meanwhile, leaves a directory that loads to the last saved state; the next start
// leaves one base and one log.
func TestStateCompactionCrashPoints(t *testing.T) {
	snaps := world(8)
	steps := []string{"rotate", "write base", "remove old logs"}
	for done := 0; done <= len(steps); done++ {
		for _, tornTmp := range []bool{false, true} {
			t.Run(fmt.Sprintf("after %d steps, stray temp file %v", done, tornTmp), func(t *testing.T) {
				dir := t.TempDir()
				s, _ := openStore(t, dir)
				prev := saveAll(t, s, nil, snaps[:4]...)
				s.compactMu.Lock()
				st := s.compactSteps()
				if done >= 1 {
					cur, err := st.rotate()
					if err != nil {
						t.Fatal(err)
					}
					sameState(t, "rotated state", cur, prev)
					prev = saveAll(t, s, prev, snaps[4:6]...) // appended while the base is written
					if done >= 2 {
						if err := st.writeBase(cur); err != nil {
							t.Fatal(err)
						}
					}
					if done >= 3 {
						if err := st.removeOld(); err != nil {
							t.Fatal(err)
						}
					}
				}
				s.compactMu.Unlock()
				if tornTmp {
					if err := os.WriteFile(filepath.Join(dir, "."+baseFile+".tmp123"), []byte(`{"vers`), 0o600); err != nil {
						t.Fatal(err)
					}
				}
				s.f.Close() // the crash: nothing else runs
				s.f = nil

				s2, got := openStore(t, dir)
				sameState(t, "after the crash", got, prev)
				if strings.Contains(s2.logs.String(), "level=WARN") {
					t.Fatalf("a compaction stopped between steps looks like damage:\n%s", s2.logs)
				}
				entries, _ := os.ReadDir(dir)
				var names []string
				for _, e := range entries {
					names = append(names, e.Name())
				}
				if len(logFiles(t, dir)) != 1 || len(names) != 2 {
					t.Fatalf("state dir holds %v after the start, want the base and one log", names)
				}
				prev = saveAll(t, s2, prev, snaps[6:]...)
				s2.close()
				_, got = openStore(t, dir)
				sameState(t, "after more deltas and another restart", got, prev)
			})
		}
	}
}

// A new log cut before its header was complete (a crash while rotating) is not part of
// the state: the previous log still is.
func TestStateTornLogHeader(t *testing.T) {
	snaps := world(3)
	dir, _, _ := buildDir(t, snaps)
	head := append([]byte(logMagic), encodeHeader(headerOf(snaps[2]))...)
	for cut := range len(head) {
		if err := os.WriteFile(logPath(dir, 99), head[:cut], 0o600); err != nil {
			t.Fatal(err)
		}
		_, got, err := openOnce(dir)
		if err != nil {
			t.Fatal(err)
		}
		sameState(t, fmt.Sprintf("header cut at %d", cut), got, snaps[2])
	}
}

func openOnce(dir string) (*stateStore, *snapshot.Snapshot, error) {
	s := newStateStore(dir, slog.New(slog.DiscardHandler), newMetrics(nil))
	snap, err := s.open()
	if err == nil {
		err = s.close()
	}
	return s, snap, err
}

// runLoop runs the store's background loop until ctx ends; done closes when it returned.
func runLoop(ctx context.Context, s testStore) (done chan struct{}) {
	done = make(chan struct{})
	go func() {
		defer close(done)
		s.run(ctx)
	}()
	return done
}

// runStore runs the store's background loop until stop, which waits for it (the test's
// end stops it too).
func runStore(t *testing.T, s testStore) (stop func()) {
	ctx, cancel := context.WithCancel(t.Context())
	done := runLoop(ctx, s)
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); <-done }) }
	t.Cleanup(stop)
	return stop
}

// The background loop compacts once the log outweighs the base: the base then holds the
// latest state, older logs are gone, and the loop ends with its context.
func TestStateBackgroundCompaction(t *testing.T) {
	dir := t.TempDir()
	snaps := world(150)
	s, _ := openStore(t, dir)
	s.minCompact = 0
	ctx, cancel := context.WithCancel(t.Context())
	done := runLoop(ctx, s)
	prev := saveAll(t, s, nil, snaps...)
	poll.Eventually(t, 10*time.Second, "a compaction", func() error {
		base, _, err := readBase(filepath.Join(dir, baseFile))
		if err != nil {
			return err
		}
		if base.Version == snaps[0].Version {
			return fmt.Errorf("base still at version %d", base.Version)
		}
		if logs := logFiles(t, dir); len(logs) != 1 {
			return fmt.Errorf("logs %v", logs)
		}
		return nil
	})
	cancel()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the store's loop did not end with its context")
	}
	s.close()
	_, got := openStore(t, dir)
	sameState(t, "after compactions", got, prev)
}

// An unreadable base is reported and the agent starts empty, as before the log existed;
// its next output replaces the base.
func TestStateUnreadableBase(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, baseFile), []byte(`{"version":`), 0o600); err != nil {
		t.Fatal(err)
	}
	s, got := openStore(t, dir)
	if got != nil || !strings.Contains(s.logs.String(), "last applied output unreadable") {
		t.Fatalf("got %v, log:\n%s", got, s.logs)
	}
	snaps := world(2)
	prev := saveAll(t, s, nil, snaps...)
	s.close()
	_, got = openStore(t, dir)
	sameState(t, "after the base was replaced", got, prev)
}

// A compaction that fails is not silent: it is logged, counted and reported (problem, which
// the agent sends to the server for `meshrelay check`) until one succeeds, and the applied
// output is kept meanwhile.
func TestStateCompactionFailureReported(t *testing.T) {
	dir := t.TempDir()
	snaps := world(300)
	s, _ := openStore(t, dir)
	s.minCompact = 0
	stop := runStore(t, s)
	prev := saveAll(t, s, nil, snaps[0]) // the first output is the base

	// A directory where the next log would be created: creating it fails, even for root.
	s.mu.Lock()
	blocked := logPath(dir, s.seq+1)
	s.mu.Unlock()
	if err := os.Mkdir(blocked, 0o700); err != nil {
		t.Fatal(err)
	}
	prev = saveAll(t, s, prev, snaps[1:150]...)
	poll.Eventually(t, 10*time.Second, "the failed compaction reported", func() error {
		if p := s.problem(); !strings.Contains(p, "compaction failed") || !strings.Contains(p, blocked) {
			return fmt.Errorf("problem %q", p)
		}
		return nil
	})
	var failures dto.Metric
	if err := s.m.stateCompactionFailures.Write(&failures); err != nil || failures.GetCounter().GetValue() < 1 {
		t.Errorf("meshrelay_agent_state_compaction_failures_total = %v (%v)", failures.GetCounter().GetValue(), err)
	}
	if !strings.Contains(s.logs.String(), "state log compaction failed") {
		t.Errorf("no log line; log:\n%s", s.logs)
	}

	if err := os.Remove(blocked); err != nil {
		t.Fatal(err)
	}
	prev = saveAll(t, s, prev, snaps[150:]...)
	poll.Eventually(t, 10*time.Second, "the problem cleared by a compaction", func() error {
		if p := s.problem(); p != "" {
			return fmt.Errorf("problem %q", p)
		}
		return nil
	})
	stop()
	s.close()
	_, got := openStore(t, dir)
	sameState(t, "after the failed and the good compactions", got, prev)
}

// Binary bodies (Envoy resources as protobuf) are saved in the log and in the base and come
// back byte for byte; a state written by a previous version, whose Envoy bodies are JSON
// envelopes, still loads and carries on with binary ones.
func TestStateBinaryBodies(t *testing.T) {
	dir := t.TempDir()
	envoyJSON := snapshot.NewResource("EnvoyCluster//web", []byte(`{"apiVersion":"xds.meshrelay.io/v1","kind":"EnvoyCluster","metadata":{"name":"web"},"spec":{"name":"web"}}`))
	se := snapshot.NewResource("ServiceEntry/ns/web", []byte(`{"host":"web"}`))
	v1 := snapshot.New(1, 1, []snapshot.Resource{envoyJSON, se})
	old, err := json.Marshal(v1) // what a previous version wrote as its base
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, baseFile), old, 0o600); err != nil {
		t.Fatal(err)
	}
	s, got := openStore(t, dir)
	sameState(t, "state of a previous version", got, v1)
	v2 := snapshot.New(2, 1, []snapshot.Resource{se,
		snapshot.NewBinaryResource("EnvoyCluster//web", []byte("\n5type.googleapis.com/envoy.config.cluster.v3.Cluster\x12\x05\n\x03web")),
		snapshot.NewBinaryResource("EnvoyCluster//odd", []byte(" [1, 2] ")), // JSON with white space, yet binary
	})
	saveAll(t, s, v1, v2) // a log record
	s.close()
	s, got = openStore(t, dir)
	sameState(t, "binary bodies replayed from the log", got, v2)
	if err := s.compact(true); err != nil { // the base now holds them
		t.Fatal(err)
	}
	base, _, err := readBase(filepath.Join(dir, baseFile))
	if err != nil {
		t.Fatal(err)
	}
	sameState(t, "binary bodies in the base", base, v2)
	s.close()
	_, got = openStore(t, dir)
	sameState(t, "binary bodies after compaction", got, v2)
	if !got.Resources["EnvoyCluster//odd"].Binary() {
		t.Fatal("a binary body read back from the base is not binary")
	}
}
