#!/usr/bin/env bash
# The unit tests that need what a plain `cargo test` may not have: root, mount and network
# namespaces, a tap, /dev/kvm, the built guest kernel. Each is `#[ignore = "needs ..."]` in its
# crate (so `cargo test` as a user says "ignored", never a silent pass) and runs here, from
# `make unit` (CI runs as root). Each test fails when what it needs is missing.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
CARGO=${CARGO:-cargo}
say() { printf 'unit-privileged: %s\n' "$*" >&2; }
(( EUID == 0 )) || { say "needs root (mounts, namespaces, taps, /dev/kvm)"; exit 1; }
[[ -e /dev/kvm ]] || { say "needs /dev/kvm (vstate's KVM state round trip)"; exit 1; }
[[ -f target/guest/bzImage ]] || { say "needs target/guest/bzImage: make kernel"; exit 1; }

say "vmm: the jail, a tap, the guest bzImage, KVM state"
"$CARGO" test -p kata-rs-vmm --lib -- --ignored

say "shim: the share's bind mounts and their propagation"
"$CARGO" test -p kata-rs-shim --lib -- --ignored share::tests::

# A pod's network namespace as CNI leaves it: eth0 (a veth) with an address and a default route.
NS=kata-rs-unit-$$
cleanup() { ip netns del "$NS" 2>/dev/null || true; }
trap cleanup EXIT
ip netns add "$NS"
ip -n "$NS" link add eth0 type veth peer name peer0
ip -n "$NS" addr add 10.99.0.2/24 dev eth0
ip -n "$NS" link set lo up
ip -n "$NS" link set eth0 up
ip -n "$NS" link set peer0 up
ip -n "$NS" route add default via 10.99.0.1 dev eth0
say "shim: tap + tc redirects set up and removed in a real pod network namespace"
KATA_RS_NETNS_TEST=/run/netns/$NS "$CARGO" test -p kata-rs-shim --lib -- --ignored --exact \
    network::tests::setup_and_teardown_in_a_real_netns

say "agent: AfterRestore's entropy ioctls on this host's random device, sethostname in a new UTS namespace"
"$CARGO" test -p kata-rs-agent --lib -- --ignored restore::sys::tests::

say "agent: an interface, routes and neighbours configured as PID 1 of a new network namespace"
bin=$("$CARGO" test -p kata-rs-agent --lib --no-run 2>&1 \
    | sed -n 's/.*Executable unittests src\/lib.rs (\(.*\))/\1/p' | tail -1)
[[ -x $bin ]] || { say "cannot find the agent's unit test binary"; exit 1; }
MAC=02:00:00:00:00:05
unshare --net --pid --fork --mount-proc env KATA_RS_AGENT_NET_TEST=$MAC sh -c \
    "ip link add x0 address $MAC type veth peer name y0 && exec $bin --ignored --exact network::tests::configures_a_real_interface"
say "all passed"
