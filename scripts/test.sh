#!/usr/bin/env bash
# Runs every test of meshrelay — unit, integration with a real redis-server and a real
# kube-apiserver, and end-to-end with real processes — after installing what they need.
# Used by `make test` and CI.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-sentinel >/dev/null 2>&1; then
  echo "redis-server or redis-sentinel not found; installing them with apt-get (tests use a real Redis, Sentinel and Cluster)" >&2
  if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq redis-server redis-sentinel >/dev/null
fi
if ! command -v chromium >/dev/null 2>&1; then
  echo "chromium not found; installing it with apt-get (the UI's browser tests drive headless Chromium)" >&2
  if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
fi

if ! command -v promtool >/dev/null 2>&1; then
  echo "promtool not found; installing Debian's prometheus package with apt-get (tests check the alerting rules and dashboard with it)" >&2
  if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi

echo "== gofmt" >&2
unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
if [ -n "$unformatted" ]; then
  echo "gofmt would change:" >&2; echo "$unformatted" >&2; exit 1
fi
echo "== go vet" >&2
go vet ./...
echo "== kube-apiserver, etcd and helm for the Kubernetes tests" >&2
# Builds kube-apiserver from the Go module proxy (minutes the first time, then cached in
# .bin/envtest) and installs Debian's etcd-server when missing; internal/kubetest uses them.
# Installs helm (go.mod's version) into .bin/helm for the tests of `cluster register
# --install`, which runs it (internal/kubetest.UseHelm puts it on PATH).
scripts/kube-tools.sh kube-apiserver etcd helm
export KUBEBUILDER_ASSETS="$PWD/.bin/envtest"
echo "== istiod (pilot-discovery) for the Istio tests" >&2
# Builds pilot-discovery from the Go module proxy (~10 minutes the first time, then cached in
# .bin/istio); internal/istiotest runs it against kubetest's API server.
scripts/istio-tools.sh
echo "== generated deep copies and CRDs are up to date" >&2
scripts/generate.sh --check
echo "== meshrelay-collector (its own module) for the telemetry pipeline test" >&2
# The OpenTelemetry Collector's module graph is large: minutes the first time, then cached.
# Built here so that test/e2e's TestTelemetryPipeline does not spend its package's timeout on it.
(cd cmd/meshrelay-collector && go vet ./... && go build -o ../../.bin/meshrelay-collector .)
export MESHRELAY_COLLECTOR="$PWD/.bin/meshrelay-collector"
echo "== go test -race" >&2
go test -race -count=1 -timeout 40m "$@" ./...
echo "== fuzz: every target briefly (FUZZTIME=${FUZZTIME:-10s} each)" >&2
# Go's native fuzzing, one target at a time; a crash leaves its input in
# <package>/testdata/fuzz/<FuzzName>/ (commit it with the fix: go test then always runs it).
scripts/fuzz.sh
