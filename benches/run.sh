#!/usr/bin/env bash
# benches/run.sh [N]: host side of `make bench`. Runs benches/node-bench.sh on a node
# (tests/node-run; the host's QEMU is passed in with KATA_RS_NODE_EXTRA), writes
# target/bench/{vmm,containers}.json and prints a table. N = measured runs per variant
# (default 4, env BENCH_N), plus one warm-up each. See benches/README.md.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
TOP=$(cd "$HERE/.." && pwd)
N=${1:-${BENCH_N:-4}}
OUT=$TOP/target/bench
die() { echo "bench: error: $*" >&2; exit 1; }

for f in target/release/kata-vmm target/release/containerd-shim-kata-v2 target/release/kata-agent-ctl \
         target/guest/vmlinux target/guest/initrd.img; do
    [[ -f $TOP/$f ]] || die "$f is missing: run make build (or make binaries / make image / make kernel)"
done
command -v jq > /dev/null || die "jq missing: make deps"
QEMU=$(command -v qemu-system-x86_64) || die "qemu-system-x86_64 missing (apt-get install qemu-system-x86)"
QEMU_DATA=/usr/share/qemu
[[ -e $QEMU_DATA/bios-microvm.bin ]] || die "$QEMU_DATA/bios-microvm.bin missing (qemu-system-data)"

mkdir -p "$OUT"
RAW=$OUT/node-run.stdout ERR=$OUT/node-run.stderr
echo "bench: N=$N (+1 warm-up) per variant; artifacts: $(cd "$TOP" && git rev-parse --short HEAD)$(cd "$TOP" && git diff --quiet HEAD -- vmm shim agent || echo +dirty)" >&2
rc=0
KATA_RS_NODE_EXTRA="$QEMU:$QEMU_DATA" "$TOP/tests/node-run" --timeout 900 "$HERE/node-bench.sh" "$N" \
    > "$RAW" 2> >(tee "$ERR" >&2) || rc=$?
wait    # (the tee)
((rc == 0)) || die "node-run exited $rc (stdout in $RAW, stderr in $ERR)"

node=$(sed -n 's/^node-run: node: //p' "$ERR" | head -n1)
vmm=$(sed -n 's/^BENCH-JSON vmm //p' "$RAW")
ctr=$(sed -n 's/^BENCH-JSON containers //p' "$RAW")
when=$(date -u +%Y-%m-%dT%H:%M:%SZ)
rev=$(cd "$TOP" && git rev-parse --short HEAD)
meta() { jq --arg node "$node" --arg when "$when" --arg rev "$rev" '. + {node_detail: $node, date: $when, git: $rev}'; }
[[ -n $vmm ]] && meta <<<"$vmm" > "$OUT/vmm.json" || echo "bench: no VMM result (see $ERR)" >&2
[[ -n $ctr ]] && meta <<<"$ctr" > "$OUT/containers.json" || echo "bench: no container result (see $ERR)" >&2

# ---------------------------------------------------------------- table
v() { jq -r "$2 // \"-\"" "$OUT/$1.json" 2>/dev/null || echo -; }
mib() { awk -v k="$1" 'BEGIN { if (k == "-" || k == "null") print "-"; else printf "%.1f MiB", k / 1024 }'; }
row() { printf '| %-46s | %14s | %14s | %8s |\n' "$@"; }
echo
echo "kata-rs bench ($when, git $rev), node: ${node:-?}"
if [[ $node == emulated* ]]; then
    echo "NOTE: emulated node (QEMU TCG with nested KVM): absolute times are meaningless outside this rig;"
    echo "      compare the ratios (and the memory figures, which do not depend on the emulation much)."
fi
echo
row "VMM boot to agent ready (N=$(v vmm .n), median)" "kata-vmm" "qemu microvm" "ratio"
row "----------------------------------------------" "--------------" "--------------" "--------"
row "boot: process start -> 'kata-rs-agent: ready'" "$(v vmm .boot_ms_ours) ms" "$(v vmm .boot_ms_qemu) ms" "$(v vmm .ratio)"
row "boot -> first successful agent check" "$(v vmm .check_ms_ours) ms" "$(v vmm .check_ms_qemu) ms" ""
row "VMM CPU time to ready (user+sys+guest)" "$(v vmm .cpu_ms_ours) ms" "$(v vmm .cpu_ms_qemu) ms" "$(v vmm 'if .cpu_ms_ours and .cpu_ms_qemu then (.cpu_ms_ours / .cpu_ms_qemu * 1000 | round / 1000) else null end')"
row "VMM PSS excl. guest RAM" "$(mib "$(v vmm .vmm_pss_kib)")" "$(mib "$(v vmm .qemu_pss_kib)")" ""
row "VMM RSS excl. guest RAM" "$(mib "$(v vmm .vmm_rss_kib)")" "$(mib "$(v vmm .qemu_rss_kib)")" ""
row "VMM PSS incl. guest RAM" "$(mib "$(v vmm .vmm_pss_incl_guest_kib)")" "$(mib "$(v vmm .qemu_pss_incl_guest_kib)")" ""
echo
row "containerd: ctr run --rm busybox true (N=$(v containers .n))" "kata" "runc" "ratio"
row "----------------------------------------------" "--------------" "--------------" "--------"
row "wall time, median" "$(v containers .start_ms_kata) ms" "$(v containers .start_ms_runc) ms" "$(v containers .ratio)"
row "shim PSS (sleeping container)" "$(mib "$(v containers .kata_shim_pss_kib)")" "$(mib "$(v containers .runc_shim_pss_kib)")" ""
row "kata-vmm PSS excl. guest RAM (sleeping)" "$(mib "$(v containers .kata_vmm_pss_kib)")" "" ""
row "shim + VMM PSS (excl. guest RAM)" "$(mib "$(v containers .kata_total_pss_kib)")" "$(mib "$(v containers .runc_shim_pss_kib)")" ""
echo
echo "samples (ms): kata-vmm $(v vmm '.samples_boot_ms_ours|tostring'), qemu $(v vmm '.samples_boot_ms_qemu|tostring');" \
     "ctr kata $(v containers '.samples_ms_kata|tostring'), runc $(v containers '.samples_ms_runc|tostring')"
echo "failed: $(v vmm .failed_boots) boots, $(v containers .failed_runs) container runs; JSON: target/bench/vmm.json, target/bench/containers.json"
