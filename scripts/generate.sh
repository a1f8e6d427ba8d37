#!/usr/bin/env bash
# Regenerates, with pinned tools, the relay protocol's Go code from api/relay/v1/relay.proto,
# the deep copies of the resource types (api/v1alpha1, api/kube/v1alpha1) and the CRDs in
# charts/meshrelay-server/crds.
set -euo pipefail
cd "$(dirname "$0")/.."
BUF_VERSION=v1.50.0
PROTOC_GEN_GO_VERSION=v1.36.6
PROTOC_GEN_GO_GRPC_VERSION=v1.5.1
bin="$(pwd)/.bin"
mkdir -p "$bin"
GOBIN="$bin" go install "github.com/bufbuild/buf/cmd/buf@${BUF_VERSION}"
GOBIN="$bin" go install "google.golang.org/protobuf/cmd/protoc-gen-go@${PROTOC_GEN_GO_VERSION}"
GOBIN="$bin" go install "google.golang.org/grpc/cmd/protoc-gen-go-grpc@${PROTOC_GEN_GO_GRPC_VERSION}"
export PATH="$bin:$PATH"
buf lint
buf generate

# Deep copies and CRDs, with the controller-gen pinned in scripts/kube-tools.sh.
scripts/kube-tools.sh controller-gen
# api/v1alpha1's TCPDestination.ForwardSNIClusterName is a *struct{}: controller-gen writes the
# right code for it (new(struct{})) but reports "name requested for invalid type: struct{}"
# and exits 1. Tolerate exactly that report; go build below checks what was written.
if ! out=$(controller-gen object paths=./api/v1alpha1/... 2>&1); then
  if printf '%s\n' "$out" | grep -v -e 'name requested for invalid type: struct{}' \
    -e '^Error: not all generators ran successfully' -e '^run `controller-gen' | grep -q .; then
    printf '%s\n' "$out" >&2
    exit 1
  fi
fi
controller-gen object paths=./api/kube/...
crds=charts/meshrelay-server/crds
mkdir -p "$crds"
rm -f "$crds"/meshrelay.io_*.yaml
controller-gen crd:crdVersions=v1 paths=./api/kube/... output:crd:dir="$crds"
go build ./api/...
