#!/usr/bin/env bash
# Prepares the binaries of the Kubernetes tests, with pinned versions, idempotently:
#   .bin/envtest/kube-apiserver  built from the Go module proxy (hack/kubetools pins
#                                k8s.io/kubernetes and its staging modules)
#   .bin/envtest/etcd            Debian's etcd-server (installed with apt-get when missing)
#   .bin/controller-gen          sigs.k8s.io/controller-tools, for scripts/generate.sh
#   .bin/helm/helm               helm.sh/helm/v4/cmd/helm at the version go.mod requires, for
#                                the tests of `meshrelay cluster register --install` (which
#                                runs helm; internal/kubetest.UseHelm puts it on PATH)
# internal/kubetest (controller-runtime's envtest) starts kube-apiserver and etcd from
# .bin/envtest; KUBEBUILDER_ASSETS=$PWD/.bin/envtest works for any envtest user.
#
# Usage: scripts/kube-tools.sh [kube-apiserver|etcd|controller-gen|helm]...   (default: all four)
# A binary whose version stamp matches is kept; each step prints how long it took.
# From scratch (empty Go caches) building kube-apiserver downloads ~700 MB of modules and
# takes ~20 CPU-minutes (about 10 minutes on an idle 2-core machine, 21 on a loaded one);
# with warm Go caches it only relinks (~30 s); cached, the whole script takes under a second.
# hack/kubetools/README.md has the measurements.
set -euo pipefail
cd "$(dirname "$0")/.."

# Pinned versions. KUBERNETES_VERSION must match hack/kubetools/go.mod (checked below).
KUBERNETES_VERSION=v1.37.2
ETCD_VERSION=3.4.23
CONTROLLER_TOOLS_VERSION=v0.23.0
# helm: the version of helm.sh/helm/v4 in go.mod (the charts' tests render with its Go SDK).
HELM_VERSION=$(go list -m -f '{{.Version}}' helm.sh/helm/v4)

root=$(pwd)
bin="$root/.bin"
assets="$bin/envtest"
mkdir -p "$assets"

if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi

log() { echo "kube-tools: $*" >&2; }

# timed NAME CMD...: runs CMD and prints how long it took.
timed() {
  local name=$1 start end
  shift
  start=$(date +%s)
  "$@"
  end=$(date +%s)
  log "$name: $((end - start))s"
}

# shellcheck source=scripts/toolbuild.sh
. scripts/toolbuild.sh

step_kube_apiserver() {
  local minor=${KUBERNETES_VERSION#v1.}
  minor=${minor%%.*}
  local v=k8s.io/component-base/version
  toolbuild kube-apiserver hack/kubetools k8s.io/kubernetes "$KUBERNETES_VERSION" k8s.io/kubernetes/cmd/kube-apiserver "$assets/kube-apiserver" \
    -ldflags "-s -w -X $v.gitVersion=${KUBERNETES_VERSION} -X $v.gitMajor=1 -X $v.gitMinor=${minor} -X $v.gitTreeState=clean -X $v.buildDate=1970-01-01T00:00:00Z"
}

etcd_version() { "$1" --version 2>/dev/null | sed -n 's/^etcd Version: //p'; }

step_etcd() {
  local sys=/usr/bin/etcd
  if [ -x "$assets/etcd" ] && [ "$(etcd_version "$assets/etcd")" = "$ETCD_VERSION" ]; then
    log "etcd ${ETCD_VERSION}: cached in $assets"
    return 0
  fi
  if [ "$(etcd_version "$sys")" != "$ETCD_VERSION" ]; then
    log "etcd ${ETCD_VERSION}: installing Debian's etcd-server with apt-get"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends etcd-server >/dev/null
  fi
  local have
  have=$(etcd_version "$sys")
  if [ "$have" != "$ETCD_VERSION" ]; then
    log "etcd: $sys is version '${have}', want ${ETCD_VERSION} (Debian's etcd-server); update ETCD_VERSION after checking the tests"
    return 1
  fi
  ln -sfn "$sys" "$assets/etcd"
  log "etcd ${ETCD_VERSION}: linked $sys into $assets"
}

step_controller_gen() {
  if [ -x "$bin/controller-gen" ] && [ "$("$bin/controller-gen" --version 2>/dev/null)" = "Version: ${CONTROLLER_TOOLS_VERSION}" ]; then
    log "controller-gen ${CONTROLLER_TOOLS_VERSION}: cached in $bin"
    return 0
  fi
  log "controller-gen ${CONTROLLER_TOOLS_VERSION}: installing"
  GOBIN="$bin" go install "sigs.k8s.io/controller-tools/cmd/controller-gen@${CONTROLLER_TOOLS_VERSION}"
}

# helm's version is that of its module in the binary's build info (`helm version` says only
# v4.3 without release ldflags).
helm_version() { go version -m "$1" 2>/dev/null | awk '$1 == "mod" && $2 == "helm.sh/helm/v4" { print $3 }'; }

step_helm() {
  local out="$bin/helm/helm"
  if [ -x "$out" ] && [ "$(helm_version "$out")" = "$HELM_VERSION" ]; then
    log "helm ${HELM_VERSION}: cached in $bin/helm"
    return 0
  fi
  log "helm ${HELM_VERSION}: installing (a few minutes from scratch, seconds with warm Go caches)"
  mkdir -p "$bin/helm"
  GOBIN="$bin/helm" go install "helm.sh/helm/v4/cmd/helm@${HELM_VERSION}"
}

steps=("$@")
[ ${#steps[@]} -gt 0 ] || steps=(kube-apiserver etcd controller-gen helm)
total_start=$(date +%s)
for s in "${steps[@]}"; do
  case $s in
    kube-apiserver) timed "kube-apiserver" step_kube_apiserver ;;
    etcd) timed "etcd" step_etcd ;;
    controller-gen) timed "controller-gen" step_controller_gen ;;
    helm) timed "helm" step_helm ;;
    *) log "unknown step '$s': want kube-apiserver, etcd, controller-gen or helm"; exit 2 ;;
  esac
done
log "ready in $(($(date +%s) - total_start))s (KUBEBUILDER_ASSETS=$assets)"
