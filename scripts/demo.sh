#!/usr/bin/env bash
# The main job: builds sluice, wires up three network namespaces
#
#   client (10.99.0.1) --veth-- [dut-a (10.99.0.254)  sluice  dut-b] --veth-- server (10.99.0.2)
#
# runs `sluice run --config configs/appliance.toml` in the middle one as a two-port bump in
# the wire, pushes traffic through it, prints sluice's statistics and tears everything down.
set -euo pipefail
cd "$(dirname "$0")/.."

[[ $(id -u) -eq 0 ]] || { echo "demo: needs root (network namespaces, XDP, AF_XDP)" >&2; exit 1; }
bash scripts/setup.sh
cargo build --release --locked -p sluice
SLUICE=$PWD/target/release/sluice

tag="sl$$"
C="${tag}-client" D="${tag}-dut" S="${tag}-server"
log=$(mktemp)
cleanup() {
  [[ -n "${pid:-}" ]] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
  for ns in "$C" "$D" "$S"; do ip netns del "$ns" 2>/dev/null || true; done
  rm -f "$log"
}
trap cleanup EXIT INT TERM

for ns in "$C" "$D" "$S"; do ip netns add "$ns"; ip -n "$ns" link set lo up; done
# One queue per veth: the config binds queue 0. Native XDP on veth needs an MTU below ~3000.
ip link add c0 netns "$C" numrxqueues 1 numtxqueues 1 type veth peer dut-a netns "$D" numrxqueues 1 numtxqueues 1
ip link add s0 netns "$S" numrxqueues 1 numtxqueues 1 type veth peer dut-b netns "$D" numrxqueues 1 numtxqueues 1
ip -n "$C" addr add 10.99.0.1/24 dev c0
ip -n "$S" addr add 10.99.0.2/24 dev s0
ip -n "$D" addr add 10.99.0.254/24 dev dut-a   # the appliance's own (management) address
for l in "$C c0" "$S s0" "$D dut-a" "$D dut-b"; do set -- $l; ip -n "$1" link set "$2" up; done
# ARP is answered by the dut's kernel, not forwarded, so the two ends learn each other statically.
cmac=$(ip -n "$C" -br link show c0 | awk '{print $3}')
smac=$(ip -n "$S" -br link show s0 | awk '{print $3}')
ip -n "$C" neigh add 10.99.0.2 lladdr "$smac" dev c0
ip -n "$S" neigh add 10.99.0.1 lladdr "$cmac" dev s0

echo "== starting sluice in $D with configs/appliance.toml"
ip netns exec "$D" "$SLUICE" run --config configs/appliance.toml >"$log" 2>&1 &
pid=$!
for _ in $(seq 50); do grep -q "worker(s) running" "$log" && break; sleep 0.1; done
cat "$log"
kill -0 "$pid" 2>/dev/null || { echo "demo: sluice exited early" >&2; exit 1; }

echo "== client -> server through sluice (forwarded in userspace): 2000 pings, 1 ms apart"
ip netns exec "$C" ping -q -c 2000 -i 0.001 -s 64 10.99.0.2 | tail -2
echo "== client -> the dut's own address (ARP and ICMP passed to the dut's kernel)"
ip netns exec "$C" ping -q -c 3 -i 0.2 10.99.0.254 | tail -2

echo "== stopping sluice"
kill -INT "$pid"; wait "$pid"; pid=
sed -n '/^totals/,$p' "$log"
