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

# shellcheck source=scripts/toolbuild.sh
. scripts/toolbuild.sh

start=$(date +%s)
toolbuild pilot-discovery hack/istiotools istio.io/istio "$ISTIO_VERSION" istio.io/istio/pilot/cmd/pilot-discovery \
  "$dir/pilot-discovery" -trimpath -ldflags "-s -w"
log "ready in $(($(date +%s) - start))s (MESHRELAY_ISTIOD=$dir/pilot-discovery)"
