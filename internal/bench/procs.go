package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/meshrelay/meshrelay/internal/proc"
	"github.com/meshrelay/meshrelay/internal/promtext"
)

// RaiseFileLimit raises the soft limit of open files to the hard limit: a thousand
// agents are a thousand connections on each side.
func RaiseFileLimit() uint64 {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return 0
	}
	if l.Cur < l.Max {
		l.Cur = l.Max
		_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l)
	}
	_ = syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l)
	return l.Cur
}

// ProcStats are a process's counters from /proc.
type ProcStats struct {
	CPUSeconds float64 `json:"cpuSeconds"`
	RSSBytes   int64   `json:"rssBytes"`
	HWMBytes   int64   `json:"peakRSSBytes"`
	Threads    int     `json:"threads"`
	// CPUsAllowed is the process's CPU affinity (Cpus_allowed_list, e.g. "0" or "0-1").
	CPUsAllowed string `json:"cpusAllowed,omitempty"`
}

// clockTicks is USER_HZ, 100 on every Linux this runs on.
const clockTicks = 100

// ReadProcStats reads CPU time (utime+stime), memory and CPU affinity of pid.
func ReadProcStats(pid int) (ProcStats, error) {
	var st ProcStats
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return st, err
	}
	// Fields after the command name (which may hold spaces) start after the last ')'.
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	if len(f) < 18 {
		return st, fmt.Errorf("short /proc/%d/stat", pid)
	}
	ut, _ := strconv.ParseFloat(f[11], 64)
	stt, _ := strconv.ParseFloat(f[12], 64)
	st.CPUSeconds = (ut + stt) / clockTicks
	st.Threads, _ = strconv.Atoi(f[17])
	s, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return st, err
	}
	for _, line := range strings.Split(string(s), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		kb := func() int64 {
			n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return n * 1024
		}
		switch k {
		case "VmRSS":
			st.RSSBytes = kb()
		case "VmHWM":
			st.HWMBytes = kb()
		case "Cpus_allowed_list":
			st.CPUsAllowed = strings.TrimSpace(v)
		}
	}
	return st, nil
}

// ScrapeMetrics reads /metrics of an admin address.
func ScrapeMetrics(ctx context.Context, admin string) (promtext.Samples, error) {
	b, err := HTTPGet(ctx, "http://"+admin+"/metrics")
	if err != nil {
		return nil, err
	}
	return promtext.Parse(bytes.NewReader(b))
}

var httpClient = &http.Client{Timeout: 60 * time.Second}

func HTTPGet(ctx context.Context, url string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s: %s", url, resp.Status, bytes.TrimSpace(b))
	}
	return b, nil
}

func GetJSON(ctx context.Context, url string, v any) error {
	b, err := HTTPGet(ctx, url)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}

func PostJSON(ctx context.Context, url string, body []byte, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("POST %s: %s: %s", url, resp.Status, bytes.TrimSpace(b))
	}
	if v != nil {
		return json.Unmarshal(b, v)
	}
	return nil
}

// Child is a process the benchmark started, with its log.
type Child struct {
	*proc.Process
	// Args are the arguments it was started with.
	Args []string
}

// Procs starts and stops the benchmark's child processes.
type Procs struct {
	bin  string
	dir  string
	list []*Child
}

// NewProcs returns the starter of the child processes of bin, which log into dir.
func NewProcs(bin, dir string) *Procs { return &Procs{bin: bin, dir: dir} }

// Start starts bin with args as the child name, logging to <dir>/<name>.log.
func (p *Procs) Start(name string, args ...string) (*Child, error) {
	return p.StartBinary(p.bin, name, args...)
}

// StartOn starts bin with args as the child name on the CPUs listed in cpus (taskset's
// list form, e.g. "0" or "0-1"); an empty cpus starts it unpinned. taskset sets the
// affinity before it execs the child, so every thread the child starts inherits it.
func (p *Procs) StartOn(cpus, name string, args ...string) (*Child, error) {
	if cpus == "" {
		return p.Start(name, args...)
	}
	taskset, err := exec.LookPath("taskset")
	if err != nil {
		return nil, fmt.Errorf("pin %s to CPUs %s: %w (taskset is in util-linux)", name, cpus, err)
	}
	c, err := p.StartBinary(taskset, name, append([]string{"-c", cpus, p.bin}, args...)...)
	if err != nil {
		return nil, err
	}
	c.Args = args
	return c, nil
}

// StartBinary starts another executable as the child name, stopped with the others.
func (p *Procs) StartBinary(bin, name string, args ...string) (*Child, error) {
	pr, err := proc.Start(name, bin, filepath.Join(p.dir, name+".log"), args...)
	if err != nil {
		return nil, err
	}
	c := &Child{Process: pr, Args: args}
	p.list = append(p.list, c)
	return c, nil
}

// StopAll stops every child still running, the last started first.
func (p *Procs) StopAll() {
	for i := len(p.list) - 1; i >= 0; i-- {
		_ = p.list[i].Stop(10 * time.Second)
	}
}

// LogTail returns the end of a child's log, for error messages.
func LogTail(c *Child, n int) string {
	b, _ := os.ReadFile(c.LogPath)
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

func Loopback() (string, error) {
	p, err := proc.FreePort()
	if err != nil {
		return "", err
	}
	return "127.0.0.1:" + strconv.Itoa(p), nil
}

// WaitFor polls f every interval until it returns true, ctx ends or timeout passes.
func WaitFor(ctx context.Context, timeout, interval time.Duration, f func() (bool, error)) error {
	deadline := time.Now().Add(timeout)
	var last error
	for {
		ok, err := f()
		if ok {
			return nil
		}
		if err != nil {
			last = err
		}
		if time.Now().After(deadline) {
			if last != nil {
				return fmt.Errorf("not done within %s (last error: %w)", timeout, last)
			}
			return fmt.Errorf("not done within %s", timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(interval):
		}
	}
}

// ProductCommand is the hidden command of meshrelay-bench that is meshrelay's own command
// tree: the benchmarks run `meshrelay-bench meshrelay server ...` as the measured server.
const ProductCommand = "meshrelay"

// PrepareRun readies a benchmark run: binary defaults to this executable, the process may
// open enough files for thousands of connections, and dir is workDir (created if needed) or
// a temporary directory that cleanup removes.
func PrepareRun(binary *string, workDir, name string) (dir string, cleanup func(), err error) {
	if *binary == "" {
		exe, err := os.Executable()
		if err != nil {
			return "", nil, fmt.Errorf("find meshrelay-bench executable: %w", err)
		}
		*binary = exe
	}
	RaiseFileLimit()
	if workDir != "" {
		if err := os.MkdirAll(workDir, 0o755); err != nil {
			return "", nil, err
		}
		return workDir, func() {}, nil
	}
	d, err := os.MkdirTemp("", "meshrelay-bench-"+name+"-")
	if err != nil {
		return "", nil, err
	}
	return d, func() { os.RemoveAll(d) }, nil
}
