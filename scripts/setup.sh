#!/usr/bin/env bash
# Installs the Debian packages sluice needs to build and test. Idempotent and quiet when
# everything is already present.
set -euo pipefail

packages=(
  clang-19 llvm-19      # compiles programs/xdp/*.bpf.c and libxdp (xsk-rs)
  libelf-dev zlib1g-dev libbpf-dev m4 pkg-config make   # libxdp build
  libpcap-dev           # tcpdump expressions are compiled by libpcap
  iproute2              # network namespaces and veth pairs for tests and the demo
  tcpdump               # reads captures in tests
  iputils-ping          # the demo and tests ping through the dataplane
)

missing=()
for p in "${packages[@]}"; do
  [[ "$p" == \#* ]] && continue
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  if [[ $(id -u) -ne 0 ]]; then
    echo "setup: need root to install packages (run: sudo apt-get install ${missing[*]})" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null; then
  echo "setup: cargo not found: install Rust (stable >= 1.95) first" >&2
  exit 1
fi

# The engine's fuzz targets (dataplane/fuzz) run under cargo-fuzz (libFuzzer; stable Rust with
# `--sanitizer none`).
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "setup: installing cargo-fuzz"
  cargo install --quiet --locked cargo-fuzz
fi
