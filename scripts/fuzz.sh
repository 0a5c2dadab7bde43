#!/usr/bin/env bash
# Builds the libFuzzer targets in fuzz/ with clang (-fsanitize=fuzzer,address,undefined) in build-fuzz and
# runs each for a bounded time on a copy of its seed corpus (fuzz/corpus/<target>), so the repository is
# not written. Exits non-zero when a target crashes or breaks an invariant; the input is kept in
# build-fuzz/crashes/ and the target's log is printed.
#   scripts/fuzz.sh            60 s per target
#   scripts/fuzz.sh 30         30 s per target
#   scripts/fuzz.sh 30 storage_fuzz     only the targets named
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
# shellcheck source=scripts/deps.sh
source scripts/deps.sh
ferry_install_deps "${ferry_fuzz_packages[@]}"

seconds=${1:-60}
shift || true
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=(envelope_fuzz ferryd_fuzz storage_fuzz)
build=${FERRY_FUZZ_BUILD_DIR:-build-fuzz}

launcher=()
command -v ccache >/dev/null 2>&1 && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
CC=clang CXX=clang++ cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DFERRY_FUZZ=ON \
  -DFERRY_SANITIZE=address,undefined -DFERRY_BUILD_TESTS=OFF -DFERRY_BUILD_EXAMPLES=OFF \
  -DFERRY_BUILD_BENCH=OFF -DFERRY_WARNINGS_AS_ERRORS=ON "${launcher[@]}" >/dev/null
cmake --build "$build" -j2 --target "${targets[@]}"

# The targets' own files (temp data directories, ferryd's socket) go to tmpfs when there is one: recovery
# and ferryd sync their directories on every input.
work=$(mktemp -d "${TMPDIR:-/tmp}/ferry-fuzz.XXXXXX")
trap 'rm -rf "$work"' EXIT
scratch="$work"
[ -d /dev/shm ] && [ -w /dev/shm ] && scratch=$(mktemp -d /dev/shm/ferry-fuzz.XXXXXX) &&
  trap 'rm -rf "$work" "$scratch"' EXIT
mkdir -p "$build/crashes"

export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=0:detect_stack_use_after_return=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
failed=()
for t in "${targets[@]}"; do
  corpus="$work/corpus-$t"
  mkdir -p "$corpus"
  cp fuzz/corpus/"$t"/* "$corpus"/
  echo "fuzz: $t for ${seconds} s"
  rc=0
  TMPDIR="$scratch" "$build/fuzz/$t" -max_total_time="$seconds" -timeout=30 -print_final_stats=1 \
    -artifact_prefix="$root/$build/crashes/$t-" "$corpus" >"$work/$t.log" 2>&1 || rc=$?
  if [ "$rc" -eq 0 ]; then
    grep -E "^(stat::number_of_executed_units|stat::peak_rss_mb|Done)" "$work/$t.log" | sed "s/^/fuzz: $t: /"
  else
    # rc above 128 without a libFuzzer report is a signal from outside (the OOM killer's 137, say).
    echo "fuzz: $t FAILED with exit status $rc; the end of its log (progress lines left out):" >&2
    { grep -v -E "^#[0-9]+\s+(NEW|REDUCE|pulse|INITED|RELOAD)" "$work/$t.log" || true; } | tail -n 80 >&2
    echo "fuzz: $t: last progress line: $(grep -E '^#[0-9]+' "$work/$t.log" | tail -n 1)" >&2
    cp "$work/$t.log" "$build/crashes/$t.log"
    failed+=("$t")
  fi
done
if [ ${#failed[@]} -ne 0 ]; then
  echo "fuzz: crashes in ${failed[*]}; inputs in $build/crashes/ (rerun one: $build/fuzz/<target> <file>)" >&2
  exit 1
fi
echo "fuzz: no crashes"
