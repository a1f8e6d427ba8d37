#!/usr/bin/env bash
# Runs every Go fuzz target (func FuzzXxx(f *testing.F) in a *_test.go file) for a short
# time each, one after the other: `go test -fuzz` takes one target per package run.
#
# Usage: scripts/fuzz.sh [PACKAGE...]     (default: every package that has a fuzz target)
#   FUZZTIME=10s   time per target (any -fuzztime value: 1m, 5000x)
#
# Targets are discovered: the packages whose test files declare a Fuzz function are listed
# with `go test -list '^Fuzz'`. A failing input is written to
# <package>/testdata/fuzz/<FuzzName>/<hash>; commit it with the fix, and every `go test` runs
# it again as a regression case. Inputs that only add coverage stay in the Go build cache.
# New inputs are not minimized (-fuzzminimizetime 0): Go's default minimizes every new
# interesting input for up to 60 s, which leaves a short run almost no time to fuzz (FuzzPush
# ran 300 inputs in 20 s instead of 40,000). A crash input is saved unminimized; running the
# target with plain `go test -fuzz` minimizes it.
set -euo pipefail
cd "$(dirname "$0")/.."

fuzztime=${FUZZTIME:-10s}
if [ $# -gt 0 ]; then
  pkgs=("$@")
else
  mapfile -t pkgs < <(git grep --untracked -lE '^func Fuzz[A-Za-z0-9_]*\(f \*testing\.F\)' -- '*_test.go' \
    | xargs -r -n1 dirname | sort -u | sed 's|^|./|')
fi
if [ ${#pkgs[@]} -eq 0 ]; then
  echo "no fuzz targets found" >&2
  exit 1
fi

# `go test -list` prints a package's matching names, then "ok <package> <time>".
targets=()
names=()
while read -r first second _; do
  case "$first" in
    Fuzz*) names+=("$first") ;;
    ok)
      for n in "${names[@]}"; do targets+=("$second $n"); done
      names=()
      ;;
  esac
done < <(go test -list '^Fuzz' "${pkgs[@]}")
if [ ${#targets[@]} -eq 0 ]; then
  echo "no fuzz targets found in ${pkgs[*]}" >&2
  exit 1
fi

start=$SECONDS
for t in "${targets[@]}"; do
  pkg=${t% *}
  name=${t#* }
  echo "-- $name ($pkg, $fuzztime)" >&2
  t0=$SECONDS
  go test -run '^$' -fuzz "^${name}\$" -fuzztime "$fuzztime" -fuzzminimizetime 0 "$pkg"
  echo "   $name: $((SECONDS - t0)) s" >&2
done
echo "fuzzed ${#targets[@]} targets in $((SECONDS - start)) s" >&2
