#!/usr/bin/env bash
# benches/run.sh [N]: host side of `make bench`. Runs benches/node-bench.sh on a node
# (tests/node-run; the host's QEMU, the big test image and a 10k-files tar are passed in with
# KATA_RS_NODE_EXTRA), writes target/bench/{vmm,containers,cri,io,fs-vmm}.json, then summary.{json,png} (benches/report), and prints the tables. N = measured runs per variant
# (default 4, env BENCH_N), plus one warm-up each. See benches/README.md.
# When the emulated node itself fails (a rig fault: node kernel wedged or panicked, no
# heartbeat; tests/README.md "Rig faults"), the sections that left no result run once more
# on a fresh node, if BENCH_BUDGET_SECS (default 1500: make bench's 25 minutes) leaves room.
set -euo pipefail
T_BENCH=$SECONDS
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
TOP=$(cd "$HERE/.." && pwd)
. "$TOP/scripts/paths.sh"      # KATA_RS_VMM_BIN
N=${1:-${BENCH_N:-4}}
OUT=$TOP/target/bench
die() { echo "bench: error: $*" >&2; exit 1; }

for f in "$KATA_RS_VMM_BIN" target/release/containerd-shim-kata-v2 target/release/kata-agent-ctl \
         target/guest/vmlinux target/guest/initrd.img; do
    [[ -f $TOP/$f ]] || die "$f is missing: run make build (or make binaries / make image / make kernel)"
done
command -v jq > /dev/null || die "jq missing: make deps"
QEMU=$(command -v qemu-system-x86_64) || die "qemu-system-x86_64 missing (apt-get install qemu-system-x86)"
QEMU_DATA=/usr/share/qemu
[[ -e $QEMU_DATA/bios-microvm.bin ]] || die "$QEMU_DATA/bios-microvm.bin missing (qemu-system-data)"

mkdir -p "$OUT"
rm -f "$OUT"/{vmm,containers,cri,io,fs-vmm,template,summary}.json "$OUT"/summary.png   # (a section that does not run leaves no stale result)
RAW=$OUT/node-run.stdout ERR=$OUT/node-run.stderr
# BENCH_SECTIONS: which parts run (default all): vmm containers cri io image fsvmm template.
SECTIONS=${BENCH_SECTIONS:-vmm containers cri io image fsvmm template}
# cri: pods per runtime (BENCH_CRI_N, default 10; plus a warm-up pod each) and the client.
CRI_N=${BENCH_CRI_N:-10}
# density: idle pods per runtime started and left running at most (BENCH_DENSITY_CAP, default 5:
# the emulated node has 3 GiB; 0 skips the step).
CRI_DENSITY=${BENCH_DENSITY_CAP:-5}
# io (section 3): rounds (BENCH_IO_N, default 2, plus a warm-up) and the untar time box
# (BENCH_IO_UNTAR_SECS, default 60 s): the kata untar hits the box on the emulated node, and
# 5 rounds of 240 s alone took 20 of the 25 minutes make bench may take.
IO_N=${BENCH_IO_N:-2}
IO_UNTAR_SECS=${BENCH_IO_UNTAR_SECS:-60}
# cri's iperf3 step: the host's iperf3 (Debian iperf3) with its libraries and loader in one
# directory (the busybox container has no libc; the node runs it through that loader), and the
# CNI plugins. Without iperf3 the step is skipped (ratio_iperf3 stays null).
IPERF_DIR= CNI_DIR=/usr/lib/cni
if [[ " $SECTIONS " == *" cri "* ]]; then
    if command -v iperf3 > /dev/null && [[ -x $CNI_DIR/bridge ]]; then
        IPERF_DIR=$OUT/iperf3
        rm -rf "$IPERF_DIR"; mkdir -p "$IPERF_DIR"
        cp "$(command -v iperf3)" "$IPERF_DIR/"
        for l in $(ldd "$(command -v iperf3)" | awk '/=>/ { print $3 } /^[ \t]*\// { print $1 }'); do cp -L "$l" "$IPERF_DIR/"; done
        [[ -x $IPERF_DIR/ld-linux-x86-64.so.2 ]] || die "iperf3 bundle: no ld-linux-x86-64.so.2 from ldd"
    else
        echo "bench: warning: no iperf3 or no $CNI_DIR/bridge (make deps): no iperf3 step" >&2
    fi
fi
CRI_BENCH=$TOP/target/release/kata-rs-cri-bench
if [[ " $SECTIONS " == *" cri "* ]]; then
    (cd "$TOP" && cargo build -q --release -p kata-rs-cri --bin kata-rs-cri-bench) || die "building the CRI bench client failed"
fi
# template: the control socket client that pauses and snapshots the template VM.
VMM_API=$TOP/target/release/examples/vmm_api
if [[ " $SECTIONS " == *" template "* ]]; then
    (cd "$TOP" && cargo build -q --release -p kata-rs-vmm --example vmm_api) || die "building the vmm_api example failed"
fi
# BENCH_TEMPLATE_CTR: the template section's ctr runs through the shim's factory with
# factory.restore_memory = map (default) or copy; 0: without them.
TEMPLATE_CTR=${BENCH_TEMPLATE_CTR:-map}
# The summary's tool, built before the node runs (a first build takes minutes on 2 cores).
(cd "$TOP" && cargo build -q --release -p kata-rs-bench-report) || die "building benches/report failed"
# fsvmm (benches/README.md section 5): rounds (BENCH_FSVMM_N, default 1: ~5 min emulated), the
# untar time box in seconds (BENCH_FSVMM_SECS), and the variants, NAME:VMM:CACHE[:ARG,...]
# (VMM ours|qemu; NAME a shell identifier; ARGs appended to virtiofsd's command line;
# BENCH_FSVMM_KNOBS adds variants to the two baselines, e.g. ours_tp4:ours:auto:--thread-pool-size=4;
# a knob fsb_X=V goes to the bench guest instead, e.g. ours_ra:ours:auto:fsb_ra=1024).
FSVMM_N=${BENCH_FSVMM_N:-1}
FSVMM_SECS=${BENCH_FSVMM_SECS:-45}
FSVMM_VARIANTS="ours:ours:auto qemu:qemu:auto${BENCH_FSVMM_KNOBS:+ $BENCH_FSVMM_KNOBS}"
FSINITRD=$OUT/fsbench-initrd.img
"$HERE/fs-initrd.sh" "$FSINITRD" || die "benches/fs-initrd.sh failed"
# The io and image sections' inputs: an image with a 200 MiB layer beside busybox, and a tar of
# 10,000 small files (100 directories × 100 files of 0-2 KiB), both cached.
"$TOP/tests/image/build-big.sh" >&2 || die "tests/image/build-big.sh failed"
BIG=$TOP/target/tests/big-oci.tar
FILES=$OUT/files-10k.tar
if [[ ! -s $FILES ]]; then
    d=$(mktemp -d)
    for ((i = 0; i < 100; i++)); do
        mkdir -p "$d/files/d$i"
        for ((j = 0; j < 100; j++)); do
            printf 'kata-rs bench file %d/%d\n%*s\n' $i $j $(((i * 100 + j) * 7 % 2048)) '' > "$d/files/d$i/f$j"
        done
    done
    tar --sort=name --mtime=@0 --numeric-owner --owner=0 --group=0 -C "$d" -cf "$FILES.tmp" files
    mv -f "$FILES.tmp" "$FILES"; rm -rf "$d"
fi
echo "bench: N=$N (+1 warm-up) per variant; artifacts: $(cd "$TOP" && git rev-parse --short HEAD)$(cd "$TOP" && git diff --quiet HEAD -- vmm shim agent || echo +dirty)" >&2
BUDGET=${BENCH_BUDGET_SECS:-1500}
: > "$RAW"; : > "$ERR"
# node_run SECTIONS TIMEOUT: one node run of node-bench.sh; its stdout and stderr are appended
# to RAW and ERR (the stderr shown live too). 3 GiB: the big image (content + snapshot,
# 400 MiB) and the 256 MiB read file live in the emulated node's RAM beside two microVMs.
node_run() {
    local r=0
    KATA_RS_NODE_EXTRA="$QEMU:$QEMU_DATA:$BIG:$FILES:$FSINITRD:$CRI_BENCH:$VMM_API${IPERF_DIR:+:$IPERF_DIR:$CNI_DIR}" "$TOP/tests/node-run" --timeout "$2" --mem 3G \
        "$HERE/node-bench.sh" "$N" "$1" "$BIG" "$FILES" "$FSINITRD" "$FSVMM_VARIANTS" "$FSVMM_N" "$FSVMM_SECS" \
        "$CRI_BENCH" "$CRI_N" "$CRI_DENSITY" "$IO_N" "$IO_UNTAR_SECS" "$IPERF_DIR" "${IPERF_DIR:+$CNI_DIR}" "$VMM_API" "$TEMPLATE_CTR" \
        >> "$RAW" 2> >(tee -a "$ERR" >&2) || r=$?
    wait    # (the tee)
    return $r
}
# unfinished: the sections of $SECTIONS without a result in RAW (fsvmm: without its
# "complete": true line: it prints one line per finished VM).
unfinished() {
    local s u=
    for s in $SECTIONS; do
        case $s in
            fsvmm) grep -q '^BENCH-JSON fsvmm .*"complete":true' "$RAW" || u+=" $s" ;;
            *) grep -q "^BENCH-JSON $s " "$RAW" || u+=" $s" ;;
        esac
    done
    echo "${u# }"
}
# 3000 s: a hang guard only (the emulated node's own wedge watchdog stops a dead node sooner).
rc=0
node_run "$SECTIONS" 3000 || rc=$?
# A rig fault (node-run's verdicts tests/src/lib.rs retries on too): the node's kernel, not
# the bench. Run what did not finish once more on a fresh node if the budget leaves time for
# it (at least 5 min, node boot included), with the rest of the budget as its timeout.
todo=$(unfinished)
if ((rc != 0)) && [[ -n $todo ]] && grep -qE '^node-run: (node kernel failure|the node VM ended without a status)' "$ERR"; then
    left=$((BUDGET - (SECONDS - T_BENCH) - 60))
    if ((left >= 300)); then
        echo "bench: the node failed (rig fault, above) before these sections finished: $todo; running them again on a fresh node (${left} s left of the ${BUDGET} s budget)" >&2
        rc=0
        node_run "$todo" "$left" || rc=$?
    else
        echo "bench: the node failed (rig fault, above) before these sections finished: $todo; only ${left} s left of the ${BUDGET} s budget (BENCH_BUDGET_SECS): no second node run" >&2
    fi
fi
# A node that fails mid-run still leaves the results its sections printed before: keep them,
# and exit with node-run's status.
((rc == 0)) || echo "bench: warning: node-run exited $rc (stdout in $RAW, stderr in $ERR); keeping the results printed before" >&2
todo=$(unfinished)
[[ -z $todo ]] || echo "bench: warning: no result from: $todo" >&2

node=$(sed -n 's/^node-run: node: //p' "$ERR" | head -n1)
vmm=$(sed -n 's/^BENCH-JSON vmm //p' "$RAW" | tail -n1)
ctr=$(sed -n 's/^BENCH-JSON containers //p' "$RAW" | tail -n1)
when=$(date -u +%Y-%m-%dT%H:%M:%SZ)
rev=$(cd "$TOP" && git rev-parse --short HEAD)
meta() { jq --arg node "$node" --arg when "$when" --arg rev "$rev" '. + {node_detail: $node, date: $when, git: $rev}'; }
[[ -n $vmm ]] && meta <<<"$vmm" > "$OUT/vmm.json" || echo "bench: no VMM result (see $ERR)" >&2
[[ -n $ctr ]] && meta <<<"$ctr" > "$OUT/containers.json" || echo "bench: no container result (see $ERR)" >&2
cri=$(sed -n 's/^BENCH-JSON cri //p' "$RAW" | tail -n1)
if [[ -n $cri ]]; then meta <<<"$cri" > "$OUT/cri.json"
elif [[ " $SECTIONS " == *" cri "* ]]; then echo "bench: no cri result (see $ERR)" >&2; fi
io=$(sed -n 's/^BENCH-JSON io //p' "$RAW" | tail -n1)
img=$(sed -n 's/^BENCH-JSON image //p' "$RAW" | tail -n1)
if [[ -n $io || -n $img ]]; then
    jq -n --argjson io "${io:-null}" --argjson img "${img:-null}" '($io // {}) + {image: $img}' | meta > "$OUT/io.json"
else
    echo "bench: no io result (see $ERR)" >&2
fi

fsv=$(sed -n 's/^BENCH-JSON fsvmm //p' "$RAW" | tail -n1)   # (one line per finished VM, the last counts)
if [[ -n $fsv ]]; then meta <<<"$fsv" > "$OUT/fs-vmm.json"
elif [[ " $SECTIONS " == *" fsvmm "* ]]; then echo "bench: no fsvmm result (see $ERR)" >&2; fi

tpl=$(sed -n 's/^BENCH-JSON template //p' "$RAW" | tail -n1)
tctr=$(sed -n 's/^BENCH-JSON template_ctr //p' "$RAW" | tail -n1)
if [[ -n $tpl ]]; then jq --argjson c "${tctr:-null}" '. + {ctr: $c}' <<<"$tpl" | meta > "$OUT/template.json"
elif [[ " $SECTIONS " == *" template "* ]]; then echo "bench: no template result (see $ERR)" >&2; fi

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
row "boot -> first successful agent check" "$(v vmm .check_ms_ours) ms" "$(v vmm 'if .check_ms_qemu == 0 then "- (n/a)" else "\(.check_ms_qemu) ms" end')" ""
row "VMM own CPU to ready (user+sys-guest)" "$(v vmm .vmm_cpu_ms_ours) ms" "$(v vmm .vmm_cpu_ms_qemu) ms" "$(v vmm 'if .vmm_cpu_ms_ours and .vmm_cpu_ms_qemu and .vmm_cpu_ms_qemu > 0 then (.vmm_cpu_ms_ours / .vmm_cpu_ms_qemu * 1000 | round / 1000) else null end')"
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
echo
if [[ -f $OUT/io.json ]]; then
    n=$(v io '.n // .image.n')
    row "io in the container (N=$n, median)" "kata" "runc" "kata/runc"
    row "----------------------------------------------" "--------------" "--------------" "--------"
    row "read 256 MiB, cold cache (dd bs=1M)" "$(v io .read_mib_s_kata) MiB/s" "$(v io .read_mib_s_runc) MiB/s" "$(v io .read_ratio)"
    row "untar $(v io .untar_files) small files into the rootfs" "$(v io .untar_files_s_kata) files/s" "$(v io .untar_files_s_runc) files/s" "$(v io .untar_ratio)"
    row "rm -rf of them" "$(v io .rm_ms_kata) ms" "$(v io .rm_ms_runc) ms" "$(v io .rm_ratio)"
    row "idle pod PSS (kata: shim+VMM+virtiofsd)" "$(mib "$(v io .kata_pod_pss_kib)")" "$(mib "$(v io .runc_pod_pss_kib)")" ""
    row "  of which virtiofsd ($(v io .virtiofsd_procs) process(es))" "$(mib "$(v io .virtiofsd_pss_kib)")" "" ""
    row "  kata incl. guest RAM" "$(mib "$(v io .kata_pod_pss_incl_guest_kib)")" "" ""
    echo
    row "ctr run --rm IMAGE true (N=$n, median)" "busybox" "200 MiB layer" "big/bb"
    row "----------------------------------------------" "--------------" "--------------" "--------"
    row "kata" "$(v io .image.start_ms_kata_busybox) ms" "$(v io .image.start_ms_kata_big) ms" "$(v io .image.ratio_kata)"
    row "runc" "$(v io .image.start_ms_runc_busybox) ms" "$(v io .image.start_ms_runc_big) ms" "$(v io .image.ratio_runc)"
    row "kata guest MemAvailable after start" "$(mib "$(v io .image.guest_memavailable_kib_busybox)")" "$(mib "$(v io .image.guest_memavailable_kib_big)")" ""
    row "kata-vmm PSS incl. guest RAM after start" "$(mib "$(v io .image.vmm_pss_incl_guest_kib_busybox)")" "$(mib "$(v io .image.vmm_pss_incl_guest_kib_big)")" ""
    echo
    echo "io samples (ms): read kata $(v io '.samples_read_ms_kata|tostring'), runc $(v io '.samples_read_ms_runc|tostring');" \
         "untar kata $(v io '.samples_untar_ms_kata|tostring'), runc $(v io '.samples_untar_ms_runc|tostring')"
    echo "image samples (ms): kata busybox $(v io '.image.samples_ms_kata_busybox|tostring'), big $(v io '.image.samples_ms_kata_big|tostring');" \
         "runc busybox $(v io '.image.samples_ms_runc_busybox|tostring'), big $(v io '.image.samples_ms_runc_big|tostring')"
fi
if [[ -f $OUT/fs-vmm.json ]]; then
    row "virtio-fs: same virtiofsd, guest, kernel (N=$(v fs-vmm .n))" "kata-vmm" "qemu microvm" "ours/qemu"
    row "----------------------------------------------" "--------------" "--------------" "--------"
    row "read 256 MiB, cold cache (dd bs=1M)" "$(v fs-vmm .variants.ours.read_ms) ms" "$(v fs-vmm .variants.qemu.read_ms) ms" "$(v fs-vmm .read_time_ratio)"
    row "untar $(v fs-vmm .untar_files) files into the share" "$(v fs-vmm .variants.ours.untar_share_ms) ms" "$(v fs-vmm .variants.qemu.untar_share_ms) ms" "$(v fs-vmm .untar_share_time_ratio)"
    row "rm -rf of them" "$(v fs-vmm .variants.ours.rm_share_ms) ms" "$(v fs-vmm .variants.qemu.rm_share_ms) ms" "$(v fs-vmm .rm_share_time_ratio)"
    row "untar into guest tmpfs (L2 CPU baseline)" "$(v fs-vmm .variants.ours.untar_tmpfs_ms) ms" "$(v fs-vmm .variants.qemu.untar_tmpfs_ms) ms" "$(v fs-vmm .untar_tmpfs_time_ratio)"
    row "the same cold read again (frames touched)" "$(v fs-vmm .variants.ours.read2_ms) ms" "$(v fs-vmm .variants.qemu.read2_ms) ms" ""
    row "read 256 MiB from guest tmpfs (L2 CPU)" "$(v fs-vmm .variants.ours.read_tmpfs_ms) ms" "$(v fs-vmm .variants.qemu.read_tmpfs_ms) ms" "$(v fs-vmm .read_tmpfs_time_ratio)"
    row "read share / read tmpfs" "$(v fs-vmm .variants.ours.read_vs_tmpfs)" "$(v fs-vmm .variants.qemu.read_vs_tmpfs)" ""
    row "untar share / untar tmpfs" "$(v fs-vmm .variants.ours.untar_share_vs_tmpfs)" "$(v fs-vmm .variants.qemu.untar_share_vs_tmpfs)" ""
    row "VMM CPU user/sys ms (whole run)" "$(v fs-vmm .variants.ours.vmm_user_ms)/$(v fs-vmm .variants.ours.vmm_sys_ms)" "$(v fs-vmm .variants.qemu.vmm_user_ms)/$(v fs-vmm .variants.qemu.vmm_sys_ms)" ""
    row "virtiofsd CPU ms (whole run)" "$(v fs-vmm .variants.ours.virtiofsd_cpu_ms)" "$(v fs-vmm .variants.qemu.virtiofsd_cpu_ms)" ""
    for k in $(jq -r '.variants | keys[] | select(. != "ours" and . != "qemu")' "$OUT/fs-vmm.json"); do
        row "knob $k: read / untar share / tmpfs ms" "$(v fs-vmm ".variants.$k.read_ms")" "$(v fs-vmm ".variants.$k.untar_share_ms")" "$(v fs-vmm ".variants.$k.untar_tmpfs_ms")"
    done
    echo "(time ratios: > 1 = kata-vmm slower; untar figures extrapolated from a $(v fs-vmm .untar_secs) s time box; target/bench/fs-vmm.json)"
    [[ $(v fs-vmm .complete) == true ]] || echo "(fsvmm partial: the node stopped before every VM ran; the samples are those that finished)"
    echo
fi
if [[ -f $OUT/template.json ]]; then
    row "VM templates: kata-vmm (N=$(v template .n), median)" "cold boot" "restored" "ratio"
    row "----------------------------------------------" "--------------" "--------------" "--------"
    row "start -> agent answers, --restore-memory map" "$(v template .start_ms_cold) ms" "$(v template .start_ms_map) ms" "$(v template .ratio_start_map)"
    row "start -> agent answers, --restore-memory copy" "$(v template .start_ms_cold) ms" "$(v template .start_ms_copy) ms" "$(v template .ratio_start_copy)"
    row "PSS per VM, $(v template .mem_vms) idle VMs at once, map" "$(mib "$(v template .pss_kib_cold)")" "$(mib "$(v template .pss_kib_map)")" "$(v template .ratio_memory_map)"
    row "PSS per VM, $(v template .mem_vms) idle VMs at once, copy" "$(mib "$(v template .pss_kib_cold)")" "$(mib "$(v template .pss_kib_copy)")" "$(v template .ratio_memory_copy)"
    if [[ $(v template .ctr) != - ]]; then
        row "sandbox start (shim: VM, agent, share, net)" "$(v template .ctr.sandbox_start_ms_cold) ms" "$(v template .ctr.sandbox_start_ms_template) ms" "$(v template .ctr.ratio_sandbox_start)"
        row "PSS per sandbox, $(v template .ctr.mem_sandboxes) idle at once" "$(mib "$(v template .ctr.sandbox_pss_kib_cold)")" "$(mib "$(v template .ctr.sandbox_pss_kib_template)")" "$(v template .ctr.ratio_sandbox_memory)"
        row "ctr run --rm true, [factory] template" "$(v template .ctr.start_ms_cold) ms" "$(v template .ctr.start_ms_template) ms" "$(v template .ctr.ratio)"
    fi
    echo "samples (ms): cold $(v template '.samples_start_ms_cold|tostring'), map $(v template '.samples_start_ms_map|tostring'), copy $(v template '.samples_start_ms_copy|tostring')$(
        [[ $(v template .ctr) != - ]] && echo "; ctr cold $(v template '.ctr.samples_ms_cold|tostring'), template $(v template '.ctr.samples_ms_template|tostring') ($(v template .ctr.from_template) from the template)")"
    echo
fi
# The summary (issue 15): target/bench/summary.{json,png} and its table (benches/report).
(cd "$TOP" && cargo run -q --release -p kata-rs-bench-report -- "$OUT") || die "benches/report failed"
echo "failed: $(v vmm .failed_boots) boots, $(v containers .failed_runs) container runs, $(v io .failed_runs) io rounds, $(v io .image.failed_runs) image runs; JSON: target/bench/{vmm,containers,io,fs-vmm,template}.json"
((rc == 0)) || die "node-run exited $rc: the results above are partial"
# Something that did not run fails the bench (a number never does): a section without a result,
# or, when every section the summary comes from ran, a summary key left null.
[[ -z $todo ]] || die "no result from: $todo"
missing=$(jq -r '.missing // [] | join(" ")' "$OUT/summary.json")
all=1; for s in vmm containers cri io template; do [[ " $SECTIONS " == *" $s "* ]] || all=; done
[[ -z $all || -z $missing ]] || die "not measured in this run: $missing"
echo "bench: done in $(((SECONDS - T_BENCH) / 60)) min $(((SECONDS - T_BENCH) % 60)) s"
