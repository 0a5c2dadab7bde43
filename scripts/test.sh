#!/usr/bin/env bash
# Sets up everything (missing Debian packages, as root), configures, builds with -j2 and runs every test.
#   scripts/test.sh                 all tests
#   FERRY_BUILD_DIR=build-asan FERRY_CMAKE_ARGS="-DFERRY_SANITIZE=address,undefined" scripts/test.sh
#   scripts/test.sh -L unit         extra arguments go to ctest
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
# shellcheck source=scripts/deps.sh
source scripts/deps.sh
ferry_install_deps

build=${FERRY_BUILD_DIR:-build}
launcher=()
command -v ccache >/dev/null 2>&1 && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
# shellcheck disable=SC2086
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE="${FERRY_BUILD_TYPE:-RelWithDebInfo}" -DFERRY_WARNINGS_AS_ERRORS=ON \
  "${launcher[@]}" ${FERRY_CMAKE_ARGS:-} >/dev/null
cmake --build "$build" -j2
ctest --test-dir "$build" --output-on-failure --timeout 600 "$@"
