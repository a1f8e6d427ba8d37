#!/usr/bin/env bash
# Regenerates the relay protocol's Go code from api/relay/v1/relay.proto with pinned tools.
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
