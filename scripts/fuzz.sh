#!/usr/bin/env bash
# Runs every Go fuzz target (func FuzzXxx(f *testing.F) in a *_test.go file) for a short
# time each, one after the other: `go test -fuzz` takes one target per package run.
#
# Usage: scripts/fuzz.sh [PACKAGE_DIR...]   (default: every package that has a fuzz target)
#   FUZZTIME=10s   time per target (any -fuzztime value: 1m, 5000x)
#
# Targets are discovered: every Fuzz function declared in a package's test files. A failing
# input is written to
# <package>/testdata/fuzz/<FuzzName>/<hash>; commit it with the fix, and every `go test` runs
# it again as a regression case. Inputs that only add coverage stay in the Go build cache.
# New inputs are not minimized (-fuzzminimizetime 0): Go's default minimizes every new
# interesting input for up to 60 s, which leaves a short run almost no time to fuzz (FuzzPush
# ran 300 inputs in 20 s instead of 40,000). A crash input is saved unminimized; running the
# target with plain `go test -fuzz` minimizes it.
set -euo pipefail
cd "$(dirname "$0")/.."

fuzztime=${FUZZTIME:-10s}
pattern='^func Fuzz[A-Za-z0-9_]*\(f \*testing\.F\)'
if [ $# -gt 0 ]; then
  dirs=("$@")
else
  mapfile -t dirs < <(git grep --untracked -lE "$pattern" -- '*_test.go' | xargs -r -n1 dirname | sort -u | sed 's|^|./|')
fi

# One "package target" line per fuzz function, read from the test files (cheaper than
# building every test binary for `go test -list`).
targets=()
for d in "${dirs[@]}"; do
  while read -r name; do
    targets+=("$d $name")
  done < <(grep -hoE "$pattern" "$d"/*_test.go | sed -E 's/^func (Fuzz[A-Za-z0-9_]*).*/\1/')
done
if [ ${#targets[@]} -eq 0 ]; then
  echo "no fuzz targets found in ${dirs[*]:-the repository}" >&2
  exit 1
fi

# Each package's test binary is built once with the fuzzing instrumentation and run for each
# of its targets (go test would link it again for every target), from the package directory
# and with go test's corpus cache.
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cache=$(go env GOCACHE)/fuzz
start=$SECONDS
built=
# inputs counts the committed inputs of a target (its failing inputs end up there).
inputs() { if [ -d "$1" ]; then ls "$1" | wc -l; else echo 0; fi; }
for t in "${targets[@]}"; do
  pkg=${t% *}
  name=${t#* }
  bin=$tmp/$(echo "$pkg" | tr '/.' '__').test
  if [ "$built" != "$pkg" ]; then
    go test -c -fuzz '^Fuzz' -o "$bin" "$pkg"
    built=$pkg
  fi
  echo "-- $name ($pkg, $fuzztime)" >&2
  t0=$SECONDS
  for attempt in 1 2; do
    crashers=$(inputs "$pkg/testdata/fuzz/$name")
    if (cd "$pkg" && "$bin" -test.run '^$' -test.fuzz "^${name}\$" -test.fuzztime "$fuzztime" \
      -test.fuzzminimizetime 0 -test.fuzzcachedir "$cache/$(go list .)") 2>&1 | tee "$tmp/out"; then
      break
    fi
    # Go before 1.27 can fail a target at the -fuzztime boundary with a bare "context deadline
    # exceeded" and no failing input written (a race in its fuzzing coordinator,
    # go.dev/issue/75804). That alone is retried once; a written input or any other failure
    # fails at once.
    if [ "$attempt" = 1 ] && [ "$(inputs "$pkg/testdata/fuzz/$name")" = "$crashers" ] &&
      tail -n 3 "$tmp/out" | grep -q '^    context deadline exceeded$'; then
      echo "   $name: Go's fuzzing coordinator stopped at the deadline without a failing input (go.dev/issue/75804); once more" >&2
      continue
    fi
    exit 1
  done
  echo "   $name: $((SECONDS - t0)) s" >&2
done
echo "fuzzed ${#targets[@]} targets in $((SECONDS - start)) s" >&2
