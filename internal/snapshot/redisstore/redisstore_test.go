package redisstore_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
	"go.uber.org/goleak"

	"github.com/meshrelay/meshrelay/internal/snapshot"
	"github.com/meshrelay/meshrelay/internal/snapshot/redisstore"
	"github.com/meshrelay/meshrelay/internal/snapshot/redistest"
	"github.com/meshrelay/meshrelay/internal/snapshot/snapshottest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestConformance(t *testing.T) {
	srv := redistest.Start(t)
	testConformance(t, srv.Client(t))
}

func testConformance(t *testing.T, client redis.UniversalClient) {
	n := 0
	snapshottest.Run(t, func(*testing.T) snapshot.Store {
		n++ // a fresh prefix gives every subtest an empty store
		return redisstore.New(client, fmt.Sprintf("conformance%d", n))
	})
}

func TestKeysShareHashTag(t *testing.T) {
	srv := redistest.Start(t)
	client := srv.Client(t)
	s := redisstore.New(client, "")
	ctx := t.Context()
	snap := snapshot.New(1, 0, []snapshot.Resource{snapshot.NewResource("a", []byte(`{}`))})
	must(t, s.Put(ctx, snapshot.Input, "east", snap))
	must(t, s.Put(ctx, snapshot.Output, "west", snap))
	must(t, s.Put(ctx, snapshot.Output, "gone", snap))
	must(t, s.Delete(ctx, snapshot.Output, "gone"))
	must(t, s.PutConfig(ctx, snapshot.NewResource("cfg/a", []byte(`{"a":1}`))))
	must(t, s.PutConfig(ctx, snapshot.NewResource("cfg/b", []byte(`{"b":1}`))))
	must(t, s.DeleteConfig(ctx, "cfg/b"))

	keys, err := client.Keys(ctx, "*").Result()
	must(t, err)
	want := map[string]bool{
		"meshrelay:{meshrelay}:input:east":   true,
		"meshrelay:{meshrelay}:output:west":  true,
		"meshrelay:{meshrelay}:index:input":  true,
		"meshrelay:{meshrelay}:index:output": true,
		"meshrelay:{meshrelay}:config":       true,
		"meshrelay:{meshrelay}:config:rev":   true,
	}
	for _, k := range keys {
		if !strings.HasPrefix(k, "meshrelay:{meshrelay}:") {
			t.Errorf("key %q lacks the {meshrelay} hash tag", k)
		}
		delete(want, k)
	}
	for k := range want {
		t.Errorf("key %q was not written; keys: %q", k, keys)
	}
}

// shortClient fails fast when the server is down: one dial attempt, no command retries.
func shortClient(t *testing.T, addr string) *redis.Client {
	c := redis.NewClient(&redis.Options{
		Addr:                     addr,
		DialTimeout:              500 * time.Millisecond,
		ReadTimeout:              500 * time.Millisecond,
		WriteTimeout:             500 * time.Millisecond,
		MaxRetries:               -1, // 0 would mean the default of 3
		DialerRetries:            1,
		MaintNotificationsConfig: &maintnotifications.Config{Mode: maintnotifications.ModeDisabled},
	})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func TestUnavailableAndRestart(t *testing.T) {
	srv := redistest.Start(t, redistest.WithPersistence())
	s := redisstore.New(shortClient(t, srv.Addr()), "")
	ctx := t.Context()
	in := snapshot.New(3, 0, []snapshot.Resource{snapshot.NewResource("svc/a", []byte(`{"port": 80}`))})
	out := snapshot.New(4, 2, []snapshot.Resource{snapshot.NewResource("route/a", []byte(`{"to":"a&b"}`))})
	cfg := snapshot.NewResource("cfg/a", []byte(`{"x": [1, 2]}`))
	must(t, s.Put(ctx, snapshot.Input, "east", in))
	must(t, s.Put(ctx, snapshot.Output, "east", out))
	must(t, s.PutConfig(ctx, cfg))
	_, rev, err := s.ListConfig(ctx)
	must(t, err)

	srv.Stop()
	srv.Stop() // a second Stop is a no-op
	start := time.Now()
	calls := map[string]func(context.Context) error{
		"Get": func(ctx context.Context) error { _, err := s.Get(ctx, snapshot.Input, "east"); return err },
		"Put": func(ctx context.Context) error { return s.Put(ctx, snapshot.Input, "east", in) },
		"Delete": func(ctx context.Context) error {
			return s.Delete(ctx, snapshot.Output, "east")
		},
		"List":      func(ctx context.Context) error { _, err := s.List(ctx, snapshot.Input); return err },
		"PutConfig": func(ctx context.Context) error { return s.PutConfig(ctx, cfg) },
		"DeleteConfig": func(ctx context.Context) error {
			return s.DeleteConfig(ctx, cfg.Key)
		},
		"ListConfig": func(ctx context.Context) error { _, _, err := s.ListConfig(ctx); return err },
		"ConfigRevision": func(ctx context.Context) error {
			_, err := s.ConfigRevision(ctx)
			return err
		},
		"Ping": s.Ping,
	}
	for name, call := range calls {
		err := call(ctx)
		if !errors.Is(err, snapshot.ErrUnavailable) {
			t.Errorf("%s with redis down = %v, want ErrUnavailable", name, err)
			continue
		}
		if !errors.Is(err, syscall.ECONNREFUSED) {
			t.Errorf("%s with redis down = %v, want the connection error in the chain", name, err)
		}
		if errors.Is(err, snapshot.ErrNotFound) {
			t.Errorf("%s with redis down = %v, must not be ErrNotFound", name, err)
		}
	}
	t.Logf("%d calls failed in %v", len(calls), time.Since(start))

	srv.Restart(t)
	// After failed dials the client probes the server about once a second.
	deadline := time.Now().Add(5 * time.Second)
	for err := s.Ping(ctx); err != nil; err = s.Ping(ctx) {
		if time.Now().After(deadline) {
			t.Fatalf("Ping after Restart: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	got, err := s.Get(ctx, snapshot.Input, "east")
	must(t, err)
	if got.Version != in.Version || got.Hash != in.Hash {
		t.Errorf("input after restart: version %d hash %s, want %d %s", got.Version, got.Hash, in.Version, in.Hash)
	}
	outs, err := s.List(ctx, snapshot.Output)
	must(t, err)
	if o := outs["east"]; o == nil || o.Hash != out.Hash || o.Epoch != out.Epoch {
		t.Errorf("outputs after restart = %v, want east with hash %s epoch %d", outs, out.Hash, out.Epoch)
	}
	res, rev2, err := s.ListConfig(ctx)
	must(t, err)
	if len(res) != 1 || string(res[0].Body) != string(cfg.Body) || rev2 != rev {
		t.Errorf("config after restart = %v rev %d, want [%s] rev %d", res, rev2, cfg.Key, rev)
	}
}

func TestCorruptValueIsNotUnavailable(t *testing.T) {
	srv := redistest.Start(t)
	client := srv.Client(t)
	s := redisstore.New(client, "")
	must(t, client.Set(t.Context(), "meshrelay:{meshrelay}:input:bad", "{not json", 0).Err())
	_, err := s.Get(t.Context(), snapshot.Input, "bad")
	if err == nil || errors.Is(err, snapshot.ErrUnavailable) || errors.Is(err, snapshot.ErrNotFound) {
		t.Fatalf("Get of a corrupt value = %v, want a decode error", err)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// loadingError is what Redis answers while it loads its data set.
type loadingError struct{}

func (loadingError) Error() string { return "LOADING Redis is loading the dataset in memory" }
func (loadingError) RedisError()   {}

// failPipelines makes every pipeline and transaction fail before any command has a reply.
type failPipelines struct{}

func (failPipelines) DialHook(next redis.DialHook) redis.DialHook          { return next }
func (failPipelines) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }
func (failPipelines) ProcessPipelineHook(redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(context.Context, []redis.Cmder) error { return loadingError{} }
}

// TestPipelineErrorIsUnavailable checks that an error of a whole pipeline is not mistaken
// for empty replies.
func TestPipelineErrorIsUnavailable(t *testing.T) {
	srv := redistest.Start(t)
	client := srv.Client(t)
	s := redisstore.New(client, "")
	ctx := t.Context()
	snap := snapshot.New(1, 0, []snapshot.Resource{snapshot.NewResource("a", []byte(`{}`))})
	must(t, s.Put(ctx, snapshot.Input, "east", snap))
	must(t, s.PutConfig(ctx, snapshot.NewResource("cfg/a", []byte(`{}`))))
	client.AddHook(failPipelines{})

	if got, err := s.List(ctx, snapshot.Input); !errors.Is(err, snapshot.ErrUnavailable) || !errors.Is(err, loadingError{}) {
		t.Errorf("List = %v, %v; want ErrUnavailable", got, err)
	}
	if got, rev, err := s.ListConfig(ctx); !errors.Is(err, snapshot.ErrUnavailable) {
		t.Errorf("ListConfig = %v, %d, %v; want ErrUnavailable", got, rev, err)
	}
	// Put and Delete are single Lua scripts, not pipelines; a stopped server covers them
	// (TestUnavailable).
}
