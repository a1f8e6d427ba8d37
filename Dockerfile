# syntax=docker/dockerfile:1
#
# meshrelay: one static binary (server, agent, gateway, CLI) on a distroless base, run as a
# non-root user. The Helm charts in charts/ run this image. The target collector builds
# meshrelay-collector (cmd/meshrelay-collector, its own Go module), the OpenTelemetry
# Collector distribution the charts run as the telemetry gateway and the collector agent.
#
#   docker build -t ghcr.io/meshrelay/meshrelay:0.1.0 --build-arg VERSION=0.1.0 .
#   docker build --target collector -t ghcr.io/meshrelay/meshrelay-collector:0.1.0 \
#     --build-arg VERSION=0.1.0 .
#   docker buildx build --platform linux/amd64,linux/arm64 -t ghcr.io/meshrelay/meshrelay:0.1.0 \
#     --build-arg VERSION=0.1.0 --push .
#
# Pin the base images by digest (name:tag@sha256:...) in release builds.

ARG GO_VERSION=1.26.8
# distroless static: CA certificates, tzdata and /etc/passwd with the nonroot user (65532),
# no shell, no package manager.
ARG BASE_IMAGE=gcr.io/distroless/static-debian12:nonroot

# The build runs on the builder's own platform and cross-compiles (no emulation).
FROM --platform=$BUILDPLATFORM golang:${GO_VERSION} AS build
ARG TARGETOS
ARG TARGETARCH
# Printed by `meshrelay version`; empty falls back to "dev".
ARG VERSION=""
WORKDIR /src
# Modules first, so that a source change does not download them again.
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod \
    go mod download
COPY . .
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=${TARGETOS:-linux} GOARCH=${TARGETARCH} \
    go build -trimpath -buildvcs=false \
      -ldflags "-s -w -X github.com/meshrelay/meshrelay/internal/cli.Version=${VERSION}" \
      -o /out/meshrelay ./cmd/meshrelay

# meshrelay-collector: its own module, so its modules are downloaded apart from meshrelay's.
FROM --platform=$BUILDPLATFORM golang:${GO_VERSION} AS collector-build
ARG TARGETOS
ARG TARGETARCH
ARG VERSION=""
WORKDIR /src/cmd/meshrelay-collector
COPY cmd/meshrelay-collector/go.mod cmd/meshrelay-collector/go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod \
    go mod download
COPY cmd/meshrelay-collector/ ./
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=${TARGETOS:-linux} GOARCH=${TARGETARCH} \
    go build -trimpath -buildvcs=false -ldflags "-s -w -X main.version=${VERSION}" \
      -o /out/meshrelay-collector .

FROM ${BASE_IMAGE} AS collector
ARG VERSION=""
LABEL org.opencontainers.image.title="meshrelay-collector" \
      org.opencontainers.image.description="OpenTelemetry Collector distribution of meshrelay's telemetry gateway and collector agents" \
      org.opencontainers.image.source="https://github.com/meshrelay/meshrelay" \
      org.opencontainers.image.version="${VERSION}"
COPY --from=collector-build /out/meshrelay-collector /usr/local/bin/meshrelay-collector
USER 65532:65532
# OTLP/gRPC, Prometheus exporter (the telemetry gateway's merged metrics)
EXPOSE 4317 9091
ENTRYPOINT ["/usr/local/bin/meshrelay-collector"]
CMD ["--help"]

# The default target (last): meshrelay.
FROM ${BASE_IMAGE} AS meshrelay
ARG VERSION=""
LABEL org.opencontainers.image.title="meshrelay" \
      org.opencontainers.image.description="Management plane for a service mesh spanning many clusters" \
      org.opencontainers.image.source="https://github.com/meshrelay/meshrelay" \
      org.opencontainers.image.version="${VERSION}"
COPY --from=build /out/meshrelay /usr/local/bin/meshrelay
USER 65532:65532
# relay (server), admin (server), admin (agent), xDS (agent)
EXPOSE 9900 9901 9977 18000
ENTRYPOINT ["/usr/local/bin/meshrelay"]
CMD ["--help"]
