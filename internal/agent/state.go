package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/meshrelay/meshrelay/internal/atomicfile"
	"github.com/meshrelay/meshrelay/internal/snapshot"
)

// The files of the state directory that hold the last applied output; the package doc has
// their format and how they are saved, compacted and loaded.
const (
	baseFile  = "output.json"
	logPrefix = "output."
	logSuffix = ".log"
)

// stateStore persists the last applied output of an agent.
type stateStore struct {
	dir string
	log *slog.Logger
	m   *metrics

	// kick wakes run to sync the log and maybe compact it.
	kick chan struct{}

	// compactMu serialises the changes of the directory's files other than appends: log
	// rotation, base writes, log removal, syncing and closing a log.
	compactMu sync.Mutex

	mu sync.Mutex // guards everything below
	f  *os.File   // the active log; appends go here
	// seq is the active log's sequence number, size its length in bytes.
	seq  uint64
	size int64
	// cur is the state the active log leads to; hasBase says that the base holds an
	// output, baseSize is its size in bytes.
	cur      *snapshot.Snapshot
	hasBase  bool
	baseSize int64
	dirty    bool  // appended since the last sync
	broken   error // an append that could not be undone: no more appends
	// syncErr and compactErr are the latest background sync and compaction failures, nil
	// once one succeeds; problem reports them.
	syncErr, compactErr error
	// minCompact is the log size below which no compaction runs whatever the base weighs,
	// so that a tiny base (an empty output) is not rewritten after every delta for the
	// files and syncs a compaction costs.
	minCompact int64
}

// defaultMinCompact is stateStore.minCompact.
const defaultMinCompact = 4 << 10

func newStateStore(dir string, log *slog.Logger, m *metrics) *stateStore {
	return &stateStore{dir: dir, log: log, m: m, kick: make(chan struct{}, 1), minCompact: defaultMinCompact}
}

func (s *stateStore) basePath() string { return filepath.Join(s.dir, baseFile) }

func logPath(dir string, seq uint64) string {
	return filepath.Join(dir, logPrefix+strconv.FormatUint(seq, 10)+logSuffix)
}

// open loads the last applied output (nil when there is none), repairs what a crash left
// behind and prepares the store for appends. An unreadable base is logged and the agent
// starts empty, as before the log existed; only a failure to write the directory is an
// error.
func (s *stateStore) open() (*snapshot.Snapshot, error) {
	base, baseSize, err := readBase(s.basePath())
	if err != nil {
		s.log.Warn("last applied output unreadable; starting empty", "error", err)
		base, baseSize = nil, 0
	}
	// A base write cut by a crash leaves its temporary file behind.
	if tmps, _ := filepath.Glob(filepath.Join(s.dir, "."+baseFile+".tmp*")); len(tmps) > 0 {
		for _, tmp := range tmps {
			_ = os.Remove(tmp)
		}
	}
	seqs, err := listLogs(s.dir)
	if err != nil {
		return nil, err
	}
	r := replay(base, s.dir, seqs)
	if r.damage != nil {
		s.m.stateRepairs.Inc()
		s.log.Warn("state log damaged; starting from the last consistent state", "file", r.damagedFile, "offset", r.damageAt,
			"droppedLogs", len(r.dropped), "version", versionOf(r.state), "error", r.damage)
	}
	for _, seq := range r.superseded {
		s.log.Info("removing superseded state log", "file", logPath(s.dir, seq))
	}
	s.cur, s.hasBase, s.baseSize = r.state, base != nil, baseSize
	if len(seqs) > 0 {
		s.seq = seqs[len(seqs)-1]
	}
	if r.last != 0 && r.first == r.last && r.last == s.seq && len(r.superseded) == 0 && len(r.dropped) == 0 {
		// The usual case: one log continuing the base; keep appending to it, after the
		// end of its last complete record.
		f, err := os.OpenFile(logPath(s.dir, r.last), os.O_WRONLY, 0)
		if err != nil {
			return nil, fmt.Errorf("open state log: %w", err)
		}
		if err := f.Truncate(r.end); err != nil {
			f.Close()
			return nil, fmt.Errorf("truncate state log %s to its last complete record: %w", f.Name(), err)
		}
		if _, err := f.Seek(r.end, 0); err != nil {
			f.Close()
			return nil, fmt.Errorf("open state log: %w", err)
		}
		s.f, s.size = f, r.end
		s.m.stateLogBytes.Set(float64(s.size))
		return r.state, nil
	}
	// Anything else (no log yet, superseded or dropped logs, deltas beyond the base that
	// belong in the next log's base): start a new chain from the state reached.
	if err := s.compact(r.state != base); err != nil {
		return nil, err
	}
	return r.state, nil
}

// save persists next, the state reached by applying d to the previously saved state. A
// delta is appended to the log; a full output, or the first one, replaces the base.
func (s *stateStore) save(next *snapshot.Snapshot, d snapshot.Delta) error {
	s.mu.Lock()
	if d.Full || !s.hasBase {
		s.cur = next
		s.mu.Unlock()
		if err := s.compact(true); err != nil {
			// The base may not hold next: the next output replaces it again.
			s.mu.Lock()
			s.hasBase = false
			s.mu.Unlock()
			return err
		}
		return nil
	}
	if s.f == nil {
		s.mu.Unlock()
		return errors.New("state store not open")
	}
	if s.broken != nil {
		s.mu.Unlock()
		return fmt.Errorf("state log unusable since an earlier failure, until the next compaction: %w", s.broken)
	}
	rec := encodeDelta(d)
	n, err := s.f.Write(rec)
	if err != nil {
		if n > 0 {
			// Take the partial record back, so that the next append does not follow
			// bytes that replay would stop at.
			if terr := s.f.Truncate(s.size); terr != nil {
				s.broken = terr
			} else if _, serr := s.f.Seek(s.size, 0); serr != nil {
				s.broken = serr
			}
		}
		broken, name := s.broken != nil, s.f.Name()
		s.mu.Unlock()
		if broken { // a compaction starts a new log
			select {
			case s.kick <- struct{}{}:
			default:
			}
		}
		return fmt.Errorf("append to state log %s: %w", name, err)
	}
	s.size += int64(n)
	s.cur, s.dirty = next, true
	s.m.stateLogBytes.Set(float64(s.size))
	s.mu.Unlock()
	select {
	case s.kick <- struct{}{}:
	default:
	}
	return nil
}

// run syncs appended records to disk and compacts the log once it outweighs the base, until
// ctx ends. It is off the ACK path: a crash before the sync loses nothing (the kernel has
// the write); a power loss may lose the latest deltas, and the agent then starts from an
// older consistent state and tells the server so on reconnect.
func (s *stateStore) run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.kick:
		}
		err := s.sync()
		if err != nil {
			s.m.stateSyncFailures.Inc()
			s.log.Warn("syncing the state log failed", "error", err)
		}
		s.mu.Lock()
		s.syncErr = err
		due := s.size > max(s.baseSize, s.minCompact) || s.broken != nil
		s.mu.Unlock()
		if !due {
			continue
		}
		err = s.compact(true)
		if err != nil {
			s.m.stateCompactionFailures.Inc()
			s.log.Warn("state log compaction failed; the log keeps growing until one succeeds", "error", err)
		}
		s.mu.Lock()
		s.compactErr = err
		s.mu.Unlock()
	}
}

// problem says why the applied output is not being kept durably (a background sync or
// compaction of the state dir failed, and none succeeded since), or "" when it is. The
// agent reports it to the server, so that the server's status and `meshrelay check` show
// it.
func (s *stateStore) problem() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var parts []string
	if s.syncErr != nil {
		parts = append(parts, "sync failed: "+s.syncErr.Error())
	}
	if s.compactErr != nil {
		parts = append(parts, "compaction failed, the log keeps growing: "+s.compactErr.Error())
	}
	return strings.Join(parts, "; ")
}

// sync syncs the active log if records were appended since the last sync.
func (s *stateStore) sync() error {
	s.compactMu.Lock()
	defer s.compactMu.Unlock()
	s.mu.Lock()
	f, dirty := s.f, s.dirty
	s.dirty = false
	s.mu.Unlock()
	if f == nil || !dirty {
		return nil
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("sync state log %s: %w", f.Name(), err)
	}
	return nil
}

// close syncs and closes the active log.
func (s *stateStore) close() error {
	err := s.sync()
	s.compactMu.Lock()
	defer s.compactMu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.f != nil {
		if cerr := s.f.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("close state log: %w", cerr)
		}
		s.f = nil
	}
	return err
}

// compactSteps are the steps of a compaction, in order; tests stop between them to play a
// crash.
type compactSteps struct {
	rotate    func() (state *snapshot.Snapshot, err error)
	writeBase func(state *snapshot.Snapshot) error
	removeOld func() error
}

// compact starts a new log from the current state, writes that state as the base when
// writeBase is set (and there is a state), then removes every older log.
func (s *stateStore) compact(writeBase bool) error {
	s.compactMu.Lock()
	defer s.compactMu.Unlock()
	st := s.compactSteps()
	cur, err := st.rotate()
	if err != nil {
		return err
	}
	if writeBase && cur != nil {
		if err := st.writeBase(cur); err != nil {
			return err
		}
	}
	if err := st.removeOld(); err != nil {
		return err
	}
	s.m.stateCompactions.Inc()
	s.log.Debug("state log compacted", "version", versionOf(cur), "baseWritten", writeBase && cur != nil)
	return nil
}

// compactSteps returns the steps of a compaction; the caller holds compactMu.
func (s *stateStore) compactSteps() compactSteps {
	var newSeq uint64
	return compactSteps{
		rotate: func() (*snapshot.Snapshot, error) {
			s.mu.Lock()
			defer s.mu.Unlock()
			seq := s.seq + 1
			f, err := os.OpenFile(logPath(s.dir, seq), os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
			if err != nil {
				return nil, fmt.Errorf("create state log: %w", err)
			}
			head := append([]byte(logMagic), encodeHeader(headerOf(s.cur))...)
			if _, err := f.Write(head); err != nil {
				f.Close()
				os.Remove(f.Name())
				return nil, fmt.Errorf("write state log %s: %w", f.Name(), err)
			}
			if old := s.f; old != nil {
				// Its records are all in the state the new log starts from; a failure to
				// sync or close it loses nothing that the next steps need.
				_ = old.Sync()
				_ = old.Close()
			}
			s.f, s.seq, s.size, s.dirty, s.broken = f, seq, int64(len(head)), true, nil
			s.m.stateLogBytes.Set(float64(s.size))
			newSeq = seq
			return s.cur, nil
		},
		writeBase: func(state *snapshot.Snapshot) error {
			b, err := json.Marshal(state)
			if err != nil {
				return fmt.Errorf("encode state: %w", err)
			}
			if err := atomicfile.Write(s.basePath(), b, 0o600); err != nil {
				return fmt.Errorf("write state base: %w", err)
			}
			if err := atomicfile.SyncDir(s.dir); err != nil {
				return fmt.Errorf("state dir: %w", err)
			}
			s.mu.Lock()
			s.hasBase, s.baseSize = true, int64(len(b))
			s.mu.Unlock()
			return nil
		},
		removeOld: func() error {
			seqs, err := listLogs(s.dir)
			if err != nil {
				return err
			}
			for _, seq := range seqs {
				if seq < newSeq {
					if err := os.Remove(logPath(s.dir, seq)); err != nil && !errors.Is(err, fs.ErrNotExist) {
						return fmt.Errorf("remove superseded state log: %w", err)
					}
				}
			}
			return nil
		},
	}
}

// ReadState reads the last applied output an agent keeps in its state directory (nil when
// it has none) without changing the directory, so it may run while the agent does. It
// stops at the last complete record of the log.
func ReadState(dir string) (*snapshot.Snapshot, error) {
	var last error
	for range 20 { // a compaction running meanwhile changes the files: read again
		before, err := listLogs(dir)
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil
		}
		if err != nil {
			return nil, err
		}
		base, _, err := readBase(filepath.Join(dir, baseFile))
		if err != nil {
			return nil, err
		}
		r := replay(base, dir, before)
		after, err := listLogs(dir)
		if err != nil {
			return nil, err
		}
		if slices.Equal(before, after) && !r.vanished {
			return r.state, nil
		}
		last = fmt.Errorf("state dir %s kept changing while read", dir)
	}
	return nil, last
}

// readBase reads the base snapshot (nil when there is none) and its size.
func readBase(path string) (*snapshot.Snapshot, int64, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, fmt.Errorf("read %s: %w", path, err)
	}
	var s snapshot.Snapshot
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, 0, fmt.Errorf("decode %s: %w", path, err)
	}
	return &s, int64(len(b)), nil
}

// listLogs returns the sequence numbers of the state logs in dir, ascending.
func listLogs(dir string) ([]uint64, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("list state dir: %w", err)
	}
	var seqs []uint64
	for _, e := range entries {
		name := e.Name()
		if !strings.HasPrefix(name, logPrefix) || !strings.HasSuffix(name, logSuffix) {
			continue
		}
		seq, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimPrefix(name, logPrefix), logSuffix), 10, 64)
		if err != nil || seq == 0 {
			continue
		}
		seqs = append(seqs, seq)
	}
	slices.Sort(seqs)
	return seqs, nil
}

// replayed is what replaying the logs over a base gave.
type replayed struct {
	state *snapshot.Snapshot
	// first and last are the logs the chain started and ended in (0: none), end the offset
	// after its last complete record.
	first, last uint64
	end         int64
	// superseded are logs before the chain's first one: older than the base.
	superseded []uint64
	// dropped are logs after the point where the chain stopped.
	dropped []uint64
	// damage says why the chain stopped before the end of the files, at damageAt in
	// damagedFile.
	damage      error
	damagedFile string
	damageAt    int64
	// vanished is set when a listed log could not be found (ReadState reads again).
	vanished bool
}

// replay applies the logs seqs of dir over base. The chain starts at the first log whose
// header is base and continues through every log whose header is the state reached; every
// delta's result is checked against its recorded hash (snapshot.Apply).
func replay(base *snapshot.Snapshot, dir string, seqs []uint64) replayed {
	r := replayed{state: base}
	for i, seq := range seqs {
		path := logPath(dir, seq)
		b, err := os.ReadFile(path)
		if errors.Is(err, fs.ErrNotExist) {
			r.vanished = true
			continue
		}
		stop := func(off int64, err error) replayed {
			r.damage, r.damagedFile, r.damageAt = err, path, off
			r.dropped = append(r.dropped, seqs[i+1:]...)
			return r
		}
		if err != nil {
			if r.last == 0 {
				r.superseded = append(r.superseded, seq)
				continue
			}
			return stop(0, err)
		}
		h, off, err := readLogHeader(b)
		switch {
		case err != nil && r.last == 0:
			// A log cut before its header was complete, or not a log: nothing of the chain.
			r.superseded = append(r.superseded, seq)
			continue
		case err != nil:
			return stop(0, err)
		case !h.follows(r.state) && r.last == 0:
			r.superseded = append(r.superseded, seq)
			continue
		case !h.follows(r.state):
			return stop(0, fmt.Errorf("log starts from version %d hash %.12s, not from the state reached", h.Version, h.Hash))
		}
		if r.first == 0 {
			r.first = seq
		}
		r.last, r.end = seq, int64(off)
		for off < len(b) {
			p, n, err := nextFrame(b[off:])
			if err == nil {
				var d snapshot.Delta
				if d, err = decodeDelta(p); err == nil {
					var next *snapshot.Snapshot
					if next, err = snapshot.Apply(r.state, d); err == nil {
						r.state = next
						off += n
						r.end = int64(off)
						continue
					}
				}
			}
			return stop(int64(off), err)
		}
	}
	return r
}

// readLogHeader checks the magic and reads the header record; off is where the deltas start.
func readLogHeader(b []byte) (h logHeader, off int, err error) {
	if !strings.HasPrefix(string(b[:min(len(b), len(logMagic))]), logMagic) {
		if len(b) < len(logMagic) && strings.HasPrefix(logMagic, string(b)) {
			return h, 0, errTorn
		}
		return h, 0, errors.New("not a state log")
	}
	p, n, err := nextFrame(b[len(logMagic):])
	if err != nil {
		return h, 0, err
	}
	h, err = decodeHeader(p)
	return h, len(logMagic) + n, err
}

func versionOf(s *snapshot.Snapshot) uint64 {
	if s == nil {
		return 0
	}
	return s.Version
}
