# meshrelay — the README's commands.
.PHONY: test demo build generate bench

# Every test (installs redis-server when missing).
test:
	./scripts/test.sh

# The main job.
demo:
	go run ./cmd/meshrelay demo

build:
	go build -o bin/meshrelay ./cmd/meshrelay

# Regenerate the relay protocol's Go code, deepcopy functions and CRDs (pinned buf, plugins and controller-gen).
generate:
	./scripts/generate.sh
