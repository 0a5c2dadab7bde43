#!/usr/bin/env bash
# Installs the Debian packages ferry needs that are missing. Sourced by test.sh, demo.sh and bench.sh;
# run it alone to set up a development machine. Needs root (or sudo) only when something is missing.
set -euo pipefail

ferry_packages=(
  build-essential cmake pkg-config ccache
  libzmq3-dev cppzmq-dev libmsgpack-cxx-dev catch2 libxxhash-dev
  libcli11-dev libspdlog-dev libcpp-httplib-dev
  python3 python3-zmq python3-msgpack
)

# Only scripts/fuzz.sh needs these: clang and its runtime libraries (libFuzzer, the sanitizers).
ferry_fuzz_packages=(clang libclang-rt-dev)

ferry_install_deps() {
  local missing=() pkg
  for pkg in "${ferry_packages[@]}" "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "ferry: installing missing Debian packages: ${missing[*]}" >&2
  local sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
      sudo="sudo"
    else
      echo "ferry: need root to install: ${missing[*]} (run as root, or install them first)" >&2
      return 1
    fi
  fi
  export DEBIAN_FRONTEND=noninteractive
  if ! $sudo apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null; then
    $sudo apt-get update -q >/dev/null
    $sudo apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  ferry_install_deps "$@"
fi
