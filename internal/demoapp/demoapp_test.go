package demoapp_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/meshrelay/meshrelay/internal/demoapp"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func get(t *testing.T, c *http.Client, url string) (int, string) {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

func post(t *testing.T, c *http.Client, url string) int {
	t.Helper()
	resp, err := c.Post(url, "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func TestTextHealthAndSwitches(t *testing.T) {
	s, err := demoapp.New(demoapp.Config{Text: "blue-pod", BindAddress: "127.0.0.1"}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- s.Start(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("start: %v", err)
		}
	}()
	actx, acancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer acancel()
	addr, admin, err := s.Addresses(actx)
	if err != nil {
		t.Fatal(err)
	}
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}

	for _, path := range []string{"/", "/any/path?x=1"} {
		if code, body := get(t, c, "http://"+addr+path); code != 200 || body != "blue-pod\n" {
			t.Errorf("GET %s: %d %q, want the text without quotes and a newline", path, code, body)
		}
	}
	if code, body := get(t, c, "http://"+addr+"/health"); code != 200 || body != "ok\n" {
		t.Errorf("/health: %d %q", code, body)
	}
	if code := post(t, c, "http://"+admin+"/healthcheck/fail"); code != 200 {
		t.Errorf("POST /healthcheck/fail: %d", code)
	}
	if code, _ := get(t, c, "http://"+addr+"/health"); code != 503 {
		t.Errorf("/health after fail: %d", code)
	}
	if code, body := get(t, c, "http://"+addr+"/"); code != 200 || body != "blue-pod\n" {
		t.Errorf("GET / while failing health: %d %q (the app keeps serving)", code, body)
	}
	if code, _ := get(t, c, "http://"+admin+"/healthcheck/fail"); code != http.StatusMethodNotAllowed {
		t.Errorf("GET on a switch: %d, want 405", code)
	}
	post(t, c, "http://"+admin+"/healthcheck/ok")
	if code, _ := get(t, c, "http://"+addr+"/health"); code != 200 {
		t.Errorf("/health after ok: %d", code)
	}
	probes := s.Probes()
	if len(probes) != 3 || probes[0].Healthy != true || probes[1].Healthy != false || probes[2].Healthy != true {
		t.Errorf("probes %+v", probes)
	}
}

func TestConfigValidation(t *testing.T) {
	for _, cfg := range []demoapp.Config{
		{BindAddress: "127.0.0.1"},
		{Text: "x", BindAddress: "localhost"},
		{Text: "x", BindAddress: "127.0.0.1", Port: 70000},
	} {
		if _, err := demoapp.New(cfg, slog.New(slog.DiscardHandler)); err == nil {
			t.Errorf("config %+v accepted", cfg)
		}
	}
}
