#!/usr/bin/env bash
# Regenerates, with pinned tools, the relay protocol's Go code from api/relay/v1/relay.proto,
# the deep copies of the resource types (api/v1alpha1, api/kube/v1alpha1) and the CRDs in
# charts/meshrelay-server/crds.
#
# Usage: scripts/generate.sh            regenerate in place (make generate)
#        scripts/generate.sh --check    regenerate the deep copies and CRDs in a copy of the
#                                       tree and fail, showing the diff, if the committed ones
#                                       differ (scripts/test.sh runs it; the protobuf code is
#                                       not checked there, to keep buf out of CI)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

# kube_generate DIR: deep copies and CRDs of the tree in DIR, with the controller-gen pinned
# in scripts/kube-tools.sh.
kube_generate() {
  local cg="$root/.bin/controller-gen"
  (
    cd "$1"
    # api/v1alpha1's TCPDestination.ForwardSNIClusterName is a *struct{}: controller-gen writes
    # the right code for it (new(struct{})) but reports "name requested for invalid type:
    # struct{}" and exits 1. Tolerate exactly that report; go build below checks what was written.
    if ! out=$("$cg" object paths=./api/v1alpha1/... 2>&1); then
      if printf '%s\n' "$out" | grep -v -e 'name requested for invalid type: struct{}' \
        -e '^Error: not all generators ran successfully' -e '^run `controller-gen' | grep -q .; then
        printf '%s\n' "$out" >&2
        exit 1
      fi
    fi
    "$cg" object paths=./api/kube/...
    local crds=charts/meshrelay-server/crds
    mkdir -p "$crds"
    rm -f "$crds"/meshrelay.io_*.yaml
    "$cg" crd:crdVersions=v1 paths=./api/kube/... output:crd:dir="$crds"
    go build ./api/...
  )
}

if [ "${1:-}" = "--check" ]; then
  scripts/kube-tools.sh controller-gen
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  git ls-files -z --cached --others --exclude-standard | tar --null --ignore-failed-read -T - -cf - 2>/dev/null | tar -xf - -C "$tmp"
  kube_generate "$tmp"
  if ! diff -ru api "$tmp/api" || ! diff -ru charts/meshrelay-server/crds "$tmp/charts/meshrelay-server/crds"; then
    echo "generated deep copies or CRDs are stale: run 'make generate' and commit the result" >&2
    exit 1
  fi
  echo "generated deep copies and CRDs are up to date" >&2
  exit 0
fi
BUF_VERSION=v1.50.0
PROTOC_GEN_GO_VERSION=v1.36.6
PROTOC_GEN_GO_GRPC_VERSION=v1.5.1
bin="$root/.bin"
mkdir -p "$bin"
GOBIN="$bin" go install "github.com/bufbuild/buf/cmd/buf@${BUF_VERSION}"
GOBIN="$bin" go install "google.golang.org/protobuf/cmd/protoc-gen-go@${PROTOC_GEN_GO_VERSION}"
GOBIN="$bin" go install "google.golang.org/grpc/cmd/protoc-gen-go-grpc@${PROTOC_GEN_GO_GRPC_VERSION}"
export PATH="$bin:$PATH"
buf lint
buf generate

scripts/kube-tools.sh controller-gen
kube_generate "$root"

