# Sourced by scripts/kube-tools.sh and scripts/istio-tools.sh: builds a binary from a tools
# module under hack/ (which pins it, outside meshrelay's own module), cached with a stamp.
#
# toolbuild NAME MODDIR MODULE VERSION PACKAGE OUT [GO BUILD FLAGS...]
#   checks that MODDIR requires MODULE at VERSION, then keeps OUT when OUT.version holds the
#   stamp of the pinned version, the Go toolchain and MODDIR's go.mod and go.sum; otherwise
#   builds PACKAGE into OUT (atomically) and writes the stamp. Needs a log function.
toolbuild() {
  local name=$1 moddir=$2 module=$3 version=$4 pkg=$5 out=$6 want have tmp
  shift 6
  have=$(cd "$moddir" && go list -m -f '{{.Version}}' "$module")
  if [ "$have" != "$version" ]; then
    log "$moddir requires $module ${have}, the script pins ${version}; update both together"
    return 1
  fi
  want="$module $version $(go env GOVERSION) $(cat "$moddir/go.mod" "$moddir/go.sum" | sha256sum | cut -c1-16)"
  have=$(cat "$out.version" 2>/dev/null || true)
  if [ -x "$out" ] && [ "$have" = "$want" ]; then
    log "$name $version: cached in $(dirname "$out")"
    return 0
  fi
  log "$name $version: building from the Go module proxy (about 10 minutes from scratch, seconds with warm Go caches)"
  tmp="$out.tmp.$$"
  (cd "$moddir" && go build "$@" -o "$tmp" "$pkg")
  mv -f "$tmp" "$out"
  echo "$want" >"$out.version"
}
