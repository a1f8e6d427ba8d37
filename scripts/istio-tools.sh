#!/usr/bin/env bash
# Prepares istiod (pilot-discovery) for the Istio tests, with a pinned version, idempotently:
#   .bin/istio/pilot-discovery   built from the Go module proxy (hack/istiotools pins
#                                istio.io/istio)
# internal/istiotest runs it against the kube-apiserver of internal/kubetest;
# MESHRELAY_ISTIOD names another binary.
#
# Usage: scripts/istio-tools.sh
# A binary whose version stamp matches is kept; the script prints how long it took.
# From scratch (empty Go caches) it downloads the modules of istio.io/istio and builds
# pilot-discovery in about 10 minutes on a 2-core machine; with warm Go caches it only
# relinks; cached, it takes under a second. hack/istiotools/README.md has the measurements.
set -euo pipefail
cd "$(dirname "$0")/.."

# Pinned version. It must match hack/istiotools/go.mod (checked below).
ISTIO_VERSION=v0.0.0-20260827124520-eed52ebb66ad

root=$(pwd)
dir="$root/.bin/istio"
mkdir -p "$dir"

log() { echo "istio-tools: $*" >&2; }

build_pilot_discovery() {
  local want have out
  have=$(cd hack/istiotools && go list -m -f '{{.Version}}' istio.io/istio)
  if [ "$have" != "$ISTIO_VERSION" ]; then
    log "hack/istiotools requires istio.io/istio ${have}, this script pins ${ISTIO_VERSION}; update both together"
    return 1
  fi
  # The stamp covers the pinned version, the Go toolchain and the tools module.
  want="istio.io/istio ${ISTIO_VERSION} $(go env GOVERSION) $(cat hack/istiotools/go.mod hack/istiotools/go.sum | sha256sum | cut -c1-16)"
  have=$(cat "$dir/pilot-discovery.version" 2>/dev/null || true)
  if [ -x "$dir/pilot-discovery" ] && [ "$have" = "$want" ]; then
    log "pilot-discovery ${ISTIO_VERSION}: cached in $dir"
    return 0
  fi
  log "pilot-discovery ${ISTIO_VERSION}: building from the Go module proxy (~10 minutes from scratch)"
  out="$dir/pilot-discovery.tmp.$$"
  (cd hack/istiotools && go build -trimpath -ldflags "-s -w" -o "$out" istio.io/istio/pilot/cmd/pilot-discovery)
  mv -f "$out" "$dir/pilot-discovery"
  echo "$want" >"$dir/pilot-discovery.version"
}

start=$(date +%s)
build_pilot_discovery
log "ready in $(($(date +%s) - start))s (MESHRELAY_ISTIOD=$dir/pilot-discovery)"
