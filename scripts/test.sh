#!/usr/bin/env bash
# Runs the whole test suite: unit tests, engine conformance and differential tests, and the
# privileged network tests in namespaces (as root; under CI=true they must run, not skip).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh

# A libxdp build that once failed leaves a config.mk that poisons every later build of
# libxdp-sys; drop it and retry once.
build() { cargo build --workspace --all-targets --locked "$@"; }
if ! build; then
  stale=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/libxdp-sys-*/xdp-tools/config.mk 2>/dev/null || true)
  [[ -n "$stale" ]] || exit 1
  echo "test: removing stale libxdp config ($stale) and rebuilding"
  rm -f $stale
  build
fi

log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --workspace --locked --no-fail-fast 2>&1 | tee "$log"

# Bounded fuzzing of the BPF engine: validation never panics, the interpreter and the JIT agree
# on every program validation accepts, and no program the verifier accepts ever faults.
# FUZZ_SECONDS=0 skips it.
fuzz_seconds=${FUZZ_SECONDS:-60}
if ((fuzz_seconds > 0)); then
  for target in ebpf classic verify; do
    echo "test: fuzzing $target for ${fuzz_seconds}s"
    (cd dataplane && cargo fuzz run --sanitizer none "$target" -- \
       -max_total_time="$fuzz_seconds" -rss_limit_mb=4096 -print_final_stats=1 2>&1 | grep -v '# Uses:' | tail -n 60)
  done
fi

# One closing line for the whole run (cargo prints one per test binary).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i; if ($(i+1) ~ /^ignored/) s += $i } }
     END { printf "tests: %d passed, %d failed, %d skipped\n", p, f, s }' "$log"
