# meshrelay — the README's commands.
.PHONY: test demo build generate bench

# Every test (installs redis-server when missing).
test:
	./scripts/test.sh

# The main job.
demo:
	go run ./cmd/meshrelay demo

# The version: the nearest tag (or the commit) and -dirty for uncommitted changes. Stamped
# with -ldflags because the toolchain's own VCS stamping is off with -buildvcs=false and in
# git worktrees; `meshrelay version` also prints the Go version and any VCS build info.
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null)

build:
	go build -ldflags "-X github.com/meshrelay/meshrelay/internal/cli.Version=$(VERSION)" -o bin/meshrelay ./cmd/meshrelay

# Regenerate the relay protocol's Go code, deepcopy functions and CRDs (pinned buf, plugins and controller-gen).
generate:
	./scripts/generate.sh
