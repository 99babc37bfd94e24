#!/usr/bin/env bash
# Installs everything kata-rs needs on a Debian 12 machine: build tools for the guest kernel,
# the musl target for the static agent, and the test node's pieces (QEMU for the emulated node,
# Debian's cloud kernel, containerd, runc, busybox-static). Idempotent: skips what is present.
set -euo pipefail

PKGS=(
    # guest kernel build (kernel-config/)
    linux-source-6.1 bc bison flex libelf-dev libssl-dev make gcc lz4 xz-utils kmod cpio
    # virtio-fs file server (scripts/build-virtiofsd.sh: cargo install virtiofsd links these)
    libseccomp-dev libcap-ng-dev pkg-config
    # static agent (guest-image/)
    musl-tools
    # test node (tests/) and benchmarks
    qemu-system-x86 linux-image-cloud-amd64 busybox-static e2fsprogs
    containerd runc iproute2 jq
    # make bench's chart (benches/report: plotters with ab_glyph draws text with DejaVu Sans)
    # and its pod-to-pod TCP throughput (benches/node-bench.sh, cri section)
    fonts-dejavu-core iperf3
    # CRI pod-network test (tests/scripts/cri-net.sh): bridge, host-local, loopback in /usr/lib/cni
    containernetworking-plugins
    # CRI test client (tests/cri): the k8s-cri crate's build script runs protoc
    protobuf-compiler
    # tests/node-run: unshare (native node), ps, and the node initramfs/payload tools
    util-linux procps coreutils
    # tool/tests/metrics.rs: promtool check metrics, and a Prometheus server started by the
    # test itself, on `kata-rs metrics` (on a systemd host Debian's package also starts its own
    # server on :9090; the tests never use it: `systemctl disable --now prometheus` if unwanted)
    prometheus
    # deploy/kata-deploy/build-image.sh: curl (and its libraries) goes into the installer image
    curl
)

missing=()
for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
    echo "install-deps: installing ${missing[*]}"
    SUDO=; [ "$(id -u)" -eq 0 ] || SUDO=sudo
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
# Debian's containerd package starts a system containerd; the project never uses it, and
# its socket must not be confused with ours. Leave it alone (never touch a system containerd).

if ! rustup target list --installed | grep -qx x86_64-unknown-linux-musl; then
    echo "install-deps: adding rust target x86_64-unknown-linux-musl"
    rustup target add x86_64-unknown-linux-musl
fi
# make test runs cargo fmt --check and cargo clippy.
for c in rustfmt clippy; do
    if ! rustup component list --installed 2>/dev/null | grep -q "^$c"; then
        echo "install-deps: adding rust component $c"
        rustup component add "$c"
    fi
done
echo "install-deps: ok"
