package e2e

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/base64"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/chromedp"

	"github.com/meshrelay/meshrelay/internal/poll"
)

var updateDocsScreenshot = flag.Bool("update-docs-screenshot", false, "write the UI test's light-mode screenshot to docs/ui.png")

// screenshotDir is where browser tests keep their screenshots: $MESHRELAY_SCREENSHOTS, or
// testdata/screenshots (ignored by git). t.TempDir would delete them with the test.
func screenshotDir(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("MESHRELAY_SCREENSHOTS")
	if dir == "" {
		dir = filepath.Join("testdata", "screenshots")
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// browser starts headless Chromium (Debian's package chromium) trusting only the admin API
// certificate at admin (by its public key), and returns a tab's context.
func browser(t *testing.T, admin string) context.Context {
	t.Helper()
	path, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatalf("the browser tests need headless Chromium: install the Debian package chromium (apt-get install chromium): %v", err)
	}
	conn, err := tls.Dial("tcp", admin, &tls.Config{InsecureSkipVerify: true}) // only to learn the key to pin below
	if err != nil {
		t.Fatal(err)
	}
	spki := sha256.Sum256(conn.ConnectionState().PeerCertificates[0].RawSubjectPublicKeyInfo)
	conn.Close()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.Flag("headless", true),
		chromedp.NoSandbox, // tests run as root in CI
		chromedp.DisableGPU,
		chromedp.Flag("ignore-certificate-errors-spki-list", base64.StdEncoding.EncodeToString(spki[:])),
		// Loopback only: no name resolves, and nothing phones home.
		chromedp.Flag("host-resolver-rules", "MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("no-proxy-server", true),
		chromedp.WindowSize(1280, 1600),
	)
	actx, cancel := chromedp.NewExecAllocator(t.Context(), opts...)
	t.Cleanup(cancel)
	ctx, cancel := chromedp.NewContext(actx, chromedp.WithLogf(t.Logf))
	t.Cleanup(cancel)
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	return ctx
}

// uiText is the text of the first element matching sel, or "" when there is none.
func uiText(ctx context.Context, sel string) (string, error) {
	js := fmt.Sprintf(`(() => { const e = document.querySelector(%q); return e ? e.textContent.trim() : ""; })()`, sel)
	return chromedp.Run(ctx, chromedp.Evaluate[string](js))
}

// waitUI polls the page (never reloading it) until sel's text contains want.
func waitUI(t *testing.T, ctx context.Context, sel, want string, timeout time.Duration) {
	t.Helper()
	poll.Every(t, timeout, 200*time.Millisecond, fmt.Sprintf("the UI's %s shows %q", sel, want), func() error {
		s, err := uiText(ctx, sel)
		if err != nil {
			return err
		}
		if !strings.Contains(s, want) {
			return fmt.Errorf("it shows %q", s)
		}
		return nil
	})
}

func screenshot(t *testing.T, ctx context.Context, dark bool, name string) string {
	t.Helper()
	scheme := "light"
	if dark {
		scheme = "dark"
	}
	if err := chromedp.Do(ctx, chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		_, err := cdp.Call(ctx, tg, emulation.SetEmulatedMedia, emulation.SetEmulatedMediaParams{
			Features: []*emulation.MediaFeature{{Name: "prefers-color-scheme", Value: scheme}}})
		return err
	})); err != nil {
		t.Fatal(err)
	}
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100)) // quality 100: PNG
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(screenshotDir(t), name)
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s", path)
	return path
}

// The UI in a real browser: logging in with the admin token, it shows both clusters
// connected; a config change applied with the CLI appears in the timeline with both
// clusters' ACKs; when local's agent is killed, the page (never reloaded) shows local
// disconnected and its failover scheme served by the next priority.
func TestUIBrowser(t *testing.T) {
	w := newSeedWorld(t, nil, nil, nil)
	admin := w.server.admin
	ctx := browser(t, admin)

	// Without the cookie, /ui sends the browser to the login form; a wrong token is refused.
	if err := chromedp.Do(ctx, chromedp.Navigate("https://"+admin+"/ui"), chromedp.WaitVisible(chromedp.ID("token"))); err != nil {
		t.Fatal(err)
	}
	loc, err := chromedp.Run(ctx, chromedp.Location())
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(loc, "/ui/login") {
		t.Fatalf("/ui without a session went to %s, want the login form", loc)
	}
	if err := chromedp.Do(ctx, chromedp.SendKeys(chromedp.ID("token"), "not-the-token"), chromedp.Submit(chromedp.ID("token")),
		chromedp.WaitVisible(chromedp.ID("login-error"))); err != nil {
		t.Fatal(err)
	}
	if err := chromedp.Do(ctx, chromedp.SendKeys(chromedp.ID("token"), adminToken), // a new, empty form
		chromedp.Submit(chromedp.ID("token")), chromedp.WaitVisible(chromedp.ID("clusters"))); err != nil {
		t.Fatal(err)
	}
	// A mark on the window: it is gone if the page reloads, so what follows is live.
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[int](`window.uiTestMark = 1`)); err != nil {
		t.Fatal(err)
	}
	waitUI(t, ctx, "#live", "live", 10*time.Second)
	for _, c := range []string{"local", "remote"} {
		waitUI(t, ctx, "#cluster-"+c+" .conn", "connected", 30*time.Second)
		waitUI(t, ctx, "#cluster-"+c+" .sync", "in sync", 30*time.Second)
	}
	waitUI(t, ctx, "#failover li.serving", "priority 0", 10*time.Second)

	// A change through the config API: the timeline names it and both clusters' ACKs.
	vd := filepath.Join(w.h.dir, "ui-vd.yaml")
	writeFile(t, vd, extraVD("ui-extra", "service-ui"))
	if out, errOut, err := cli(t, "apply", "-f", vd, "--server", admin); err != nil {
		t.Fatalf("apply: %v\n%s%s", err, out, errOut)
	}
	entry := `#timeline li[data-path="apply"]`
	waitUI(t, ctx, entry, "VirtualDestination/default/ui-extra", 15*time.Second)
	waitUI(t, ctx, entry+` .ack[data-cluster="local"]`, "local", 30*time.Second)
	waitUI(t, ctx, entry+` .ack[data-cluster="remote"]`, "remote", 30*time.Second)
	screenshot(t, ctx, false, "ui-connected-light.png")
	screenshot(t, ctx, true, "ui-connected-dark.png")
	if *updateDocsScreenshot {
		b, err := os.ReadFile(screenshot(t, ctx, false, "ui-docs.png"))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join("..", "..", "docs", "ui.png"), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}

	// local's agent dies: the page shows it disconnected and the next priority serving.
	w.local.p.Kill()
	waitUI(t, ctx, "#cluster-local .conn", "disconnected", 30*time.Second)
	waitUI(t, ctx, "#cluster-local .sync", "last in sync", time.Second)
	waitUI(t, ctx, "#cluster-remote .conn", "connected", time.Second)
	waitUI(t, ctx, "#failover li.serving", "priority 1", 10*time.Second)
	if mark, err := chromedp.Run(ctx, chromedp.Evaluate[int](`window.uiTestMark || 0`)); err != nil || mark != 1 {
		t.Fatalf("the page reloaded (mark %d, %v): the update was not live", mark, err)
	}
	screenshot(t, ctx, false, "ui-local-disconnected.png")
}
