# benches/node-bench.sh: runs ON the node (tests/node-run benches/node-bench.sh [N]); POSIX sh
# (busybox ash in the emulated node). benches/run.sh is the host side.
#
# 1. VMM boot: kata-vmm vs qemu-system-x86_64 -M microvm, same kernel + guest image, 1 vCPU,
#    256 MiB, serial console + vsock (+ virtio-rng: kata-vmm has one by default), one warm-up
#    boot each, then N boots each, interleaved (the order alternates). boot = VMM process start
#    -> "kata-rs-agent: ready" on the console; check = -> first successful kata-agent-ctl check
#    (kata-vmm only: the tool speaks hybrid vsock, kata-vmm's --vsock-uds).
#    Memory of the VMM process after the check: smaps_rollup Rss/Pss, and the same minus the
#    guest RAM mapping (the mapping(s) of exactly --mem-mib in /proc/PID/smaps).
# 2. Containers: ctr run --rm IMAGE true under io.containerd.kata.v2 and io.containerd.runc.v2,
#    N each, interleaved; then one "sleep" container per runtime: shim (+ kata-vmm) Pss.
# 3. io: sequential read of a 256 MiB file in a volume and untar of ~10k small files into the
#    rootfs, kata vs runc in the same run; PSS of everything an idle pod costs on the host.
# 4. image: ctr run --rm of an image with a 200 MiB layer vs busybox (kata and runc), the
#    guest's MemAvailable after start with each.
# 5. fsvmm: virtio-fs behind kata-vmm vs behind qemu -M microvm, same kernel, same virtiofsd
#    and options, same bench guest (benches/fs-initrd.sh): cold read, untar into the share and
#    into guest tmpfs, timed in the guest; VMM and virtiofsd CPU times. Args 5-8: the bench
#    guest's host path, the variants, rounds, untar time box (run.sh passes them).
# Results: lines "BENCH-JSON <name> {json}" on stdout (run.sh extracts them), plus
# "bench| ..." progress lines.
N=${1:-5}
# SECTIONS: which parts run (default all): vmm containers io image fsvmm. BIG_TAR, FILES_TAR: host
# paths of the 200 MiB-layer image archive and the 10k-files tar (run.sh passes both with
# KATA_RS_NODE_EXTRA; they are at $KATA_RS_PAYLOAD/extra/PATH here).
SECTIONS=${2:-vmm containers cri io image fsvmm template}
BIG_TAR=${3:+$KATA_RS_PAYLOAD/extra$3}
FILES_TAR=${4:+$KATA_RS_PAYLOAD/extra$4}
# Section 5's arguments (read here: the sections before it reuse the positional parameters).
FS_INITRD=${5:+$KATA_RS_PAYLOAD/extra$5}
FSVMM_VARIANTS=${6:-ours:ours:auto qemu:qemu:auto}
FSVMM_N=${7:-1}
FSVMM_SECS=${8:-45}
# The cri section: the CRI bench client's host path (tests/cri/src/bench/, passed with
# KATA_RS_NODE_EXTRA) and its pods per runtime.
CRI_BENCH=${9:+$KATA_RS_PAYLOAD/extra$9}
CRI_N=${10:-10}
CRI_DENSITY=${11:-0}     # density: idle pods per runtime at most (0: no density step)
# io: rounds (after the warm-up) and the untar's time box in seconds (the kata untar hits it
# on the emulated node: rounds × box is most of the section's time).
IO_N=${12:-$N}
UNTAR_SECS=${13:-240}
# cri's iperf3 step: the host paths of the iperf3 bundle (iperf3, its libraries, the loader;
# run.sh makes it) and of the CNI plugins (Debian containernetworking-plugins).
IPERF_DIR=${14:+$KATA_RS_PAYLOAD/extra${14}}
CNI_DIR=${15:+$KATA_RS_PAYLOAD/extra${15}}
# template: the control socket client's host path (vmm/examples/vmm_api.rs, passed with
# KATA_RS_NODE_EXTRA) and whether the shim factory's ctr runs are measured, with which
# factory.restore_memory (map, default, or copy; 0: not measured).
VMM_API=${16:+$KATA_RS_PAYLOAD/extra${16}}
TEMPLATE_CTR=${17:-map}
case $TEMPLATE_CTR in
    1|map) TEMPLATE_CTR=1 TEMPLATE_RMEM=map ;;
    copy) TEMPLATE_CTR=1 TEMPLATE_RMEM=copy ;;
    *) TEMPLATE_CTR=0 TEMPLATE_RMEM= ;;
esac
want() { case " $SECTIONS " in *" $1 "*) return 0 ;; esac; return 1; }
MEM=256
KERNEL=$KATA_RS_SHARE/vmlinux
INITRD=$KATA_RS_SHARE/kata-rs-initrd.img
W=$KATA_RS_WORK/bench
mkdir -p "$W"

QEMU=$KATA_RS_PAYLOAD/extra/usr/bin/qemu-system-x86_64
QEMU_DATA=$KATA_RS_PAYLOAD/extra/usr/share/qemu
[ -x "$QEMU" ] || QEMU=$(command -v qemu-system-x86_64 2>/dev/null)
[ -d "$QEMU_DATA" ] || QEMU_DATA=/usr/share/qemu
# kata-vmm's fixed command line (vmm/src/cmdline.rs BASE_CMDLINE) with reboot=t (microvm has no
# i8042, so a triple fault is QEMU's reset); QEMU adds the virtio_mmio.device= entries itself,
# but only with acpi=off: with microvm's default ACPI it describes them in the DSDT only, our
# PVH-booted guest kernel does not find them, and the agent dies (no vsock) -- kata-vmm gives
# the guest no ACPI either.
QEMU_CMDLINE="console=ttyS0 8250.nr_uarts=1 reboot=t panic=1 pci=off nomodules i8042.noaux i8042.nomux i8042.dumbkbd quiet"

say() { echo "bench| $*" >&2; }          # progress: stderr (stdout = results)
now() { cut -d' ' -f1 /proc/uptime; }                        # 10 ms resolution
ms() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%d", (b - a) * 1000 + 0.5 }'; }
# median of the numbers given as arguments
median() { [ $# -gt 0 ] || { echo null; return; }; printf '%s\n' "$@" | sort -n | awk '{ v[NR] = $1 } END { if (NR == 0) print "null"; else if (NR % 2) print v[(NR + 1) / 2]; else printf "%d\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
list() { echo "$*" | tr ' ' ','; }
if [ "$KATA_RS_NODE_KIND" = native ]; then POLL=0.01 MAXPOLL=18000; else POLL=0.05 MAXPOLL=3600; fi

# mem PID: "rss pss guest_rss guest_pss guest_maps" in KiB (guest = mappings of exactly MEM MiB)
mem() {
    r=$(awk '$1 == "Rss:" { r = $2 } $1 == "Pss:" { p = $2 } END { print r + 0, p + 0 }' /proc/$1/smaps_rollup 2>/dev/null)
    g=$(awk -v m=$((MEM * 1024)) '$1 == "Size:" { s = $2 } $1 == "Rss:" { r = $2 }
        $1 == "Pss:" && s == m { gr += r; gp += $2; n++ } END { print gr + 0, gp + 0, n + 0 }' /proc/$1/smaps 2>/dev/null)
    echo "$r $g"
}
# memfd_unmapped_kib PID GUEST_RSS_KIB: KiB of PID's guest RAM memfds (kata-vmm-ram) that
# its guest RAM mapping does not map (allocated blocks minus the mapping's RSS; 0 without one).
memfd_unmapped_kib() {
    _a=0
    for _f in /proc/$1/fd/*; do
        case $(readlink "$_f" 2>/dev/null) in
            /memfd:kata-vmm-ram*)
                read -r _b _bs <<EOF_STAT
$(stat -L -c '%b %B' "$_f" 2>/dev/null || echo 0 512)
EOF_STAT
                _a=$((_a + _b * _bs / 1024)) ;;
        esac
    done
    _u=$((_a - $2)); [ $_u -gt 0 ] || _u=0
    echo $_u
}
# pss of a list of PIDs (sum), KiB
pss_sum() { t=0; for p in "$@"; do v=$(awk '$1 == "Pss:" { print $2 }' /proc/$p/smaps_rollup 2>/dev/null); t=$((t + ${v:-0})); done; echo $t; }

# ---------------------------------------------------------------- 1. VMM boot
# vmm_own_cpu PID: the VMM's own CPU time in ms, without the time its vCPU threads ran the
# guest: utime + stime - guest_time (the kernel counts guest time into utime too). From
# /proc/PID/stat, the sum over the process's threads, the exited ones included (the same
# fields as /proc/PID/task/*/stat, which would miss QEMU's short-lived start-up threads).
# USER_HZ = 100: 10 ms resolution.
# Printed as "OWN,USER": USER = utime - guest_time alone (the VMM's user-space work, without
# the kernel's exit handling for the vCPUs, which the emulated node makes very expensive).
vmm_own_cpu() { sed 's/.*) //' /proc/$1/stat 2>/dev/null | awk '{ print ($12 + $13 - $41) * 10 "," ($12 - $41) * 10 }'; }
# boot KIND CID: prints "boot_ms check_ms rss pss guest_rss guest_pss guest_maps exit"
boot() {
    log=$W/console-$1-$2.log uds=$W/vsock-$2.sock
    : > "$log"; rm -f "$uds"
    t0=$(now)
    if [ "$1" = ours ]; then
        kata-vmm --kernel "$KERNEL" --initrd "$INITRD" --mem-mib $MEM --vcpus 1 \
            --vsock-cid "$2" --vsock-uds "$uds" --console-log "$log" > "$W/vmm-$1-$2.out" 2>&1 &
    else
        "$QEMU" -L "$QEMU_DATA" -M microvm,rtc=on,acpi=off -enable-kvm -cpu host -m ${MEM}M -smp 1 \
            -nodefaults -no-user-config -display none -no-reboot \
            -kernel "$KERNEL" -initrd "$INITRD" -append "$QEMU_CMDLINE" \
            -serial "file:$log" \
            -device vhost-vsock-device,guest-cid="$2" \
            -object rng-random,filename=/dev/urandom,id=rng0 -device virtio-rng-device,rng=rng0 \
            > "$W/vmm-$1-$2.out" 2>&1 &
    fi
    pid=$!
    t1= i=0 cpu= own=
    while kill -0 $pid 2>/dev/null && [ $i -lt $MAXPOLL ]; do     # 180 s at most
        if grep -q 'kata-rs-agent: ready' "$log"; then
            t1=$(now); cpu=$(awk '{ print ($14 + $15) * 10 }' /proc/$pid/stat 2>/dev/null)
            own=$(vmm_own_cpu $pid); break
        fi
        sleep $POLL; i=$((i + 1))
    done
    # kata-agent-ctl speaks hybrid vsock only (kata-vmm's --vsock-uds, since ce0d41d): the
    # check and the agent's shutdown are kata-vmm's; QEMU (vhost-vsock: AF_VSOCK only) has no
    # check and ends by SIGTERM.
    t2=
    if [ -n "$t1" ] && [ "$1" = ours ]; then
        i=0
        while [ $i -lt 100 ]; do
            if kata-agent-ctl --uds "$uds" --timeout-secs 10 check > /dev/null 2>&1; then t2=$(now); break; fi
            sleep $POLL; i=$((i + 1))
        done
    fi
    sleep 0.5              # let the guest settle (agent up, no more page faults from boot)
    m=$(mem $pid)
    if [ "$1" = ours ]; then
        kata-agent-ctl --uds "$uds" --timeout-secs 20 shutdown > /dev/null 2>&1
    else
        kill -TERM $pid 2>/dev/null
    fi
    i=0; while kill -0 $pid 2>/dev/null && [ $i -lt 300 ]; do sleep 0.1; i=$((i + 1)); done
    if kill -0 $pid 2>/dev/null; then kill -KILL $pid; wait $pid 2>/dev/null; rc=killed; else wait $pid; rc=$?; fi
    if [ -z "$t1" ]; then
        say "$1 boot (cid $2) did not reach agent-ready; last console lines:"
        sed '/Kernel panic/q' "$log" | grep -v '^ \|^[A-Z0-9]*: \|Call Trace\|TASK>' | tail -n 25 | sed 's/^/  console| /' >&2
        sed 's/^/  vmm| /' "$W/vmm-$1-$2.out" >&2
    fi
    b=null c=null u=null o=null ou=null
    [ -n "$cpu" ] && u=$cpu
    [ -n "$own" ] && o=${own%,*} ou=${own#*,}
    [ -n "$t1" ] && b=$(ms "$t0" "$t1")
    [ -n "$t2" ] && c=$(ms "$t0" "$t2")
    echo "$b $c ${m:-0 0 0 0 0} $rc $u $o $ou"
}

vmm_ok=yes
if want vmm; then
    [ -x "$QEMU" ] || { say "no qemu-system-x86_64 on the node (run.sh passes it with KATA_RS_NODE_EXTRA)"; vmm_ok=no; }
    for f in "$KERNEL" "$INITRD" /usr/local/bin/kata-vmm; do [ -e "$f" ] || { say "missing $f"; vmm_ok=no; }; done
else
    vmm_ok=no
fi
if [ $vmm_ok = yes ]; then
    say "qemu: $("$QEMU" --version | head -n1)"
    cid=100
    O_OURS= O_QEMU= OU_OURS= OU_QEMU= U_OURS= U_QEMU= B_OURS= B_QEMU= C_OURS= C_QEMU= P_OURS= P_QEMU= R_OURS= R_QEMU= G_OURS= G_QEMU= RAW_OURS= RAW_QEMU= FAIL=0
    i=0
    while [ $i -le "$N" ]; do
        if [ $((i % 2)) = 0 ]; then order="ours qemu"; else order="qemu ours"; fi
        for k in $order; do
            cid=$((cid + 1))
            set -- $(boot $k $cid)
            # $1 boot $2 check $3 rss $4 pss $5 grss $6 gpss $7 maps $8 rc $9 cpu ms (user+sys+guest)
            # ${10} the VMM's own cpu ms (user+sys-guest), ${11} its user-space cpu (user-guest)
            tag=run$i; [ $i = 0 ] && tag=warm-up
            say "$tag $k: boot ${1} ms, check ${2} ms, rss $3 KiB, pss $4 KiB, guest mapping rss $5 pss $6 KiB ($7 mapping), exit $8, cpu $9 ms, own cpu excl. guest ${10} ms (user space ${11} ms)"
            [ "$1" = null ] && { FAIL=$((FAIL + 1)); continue; }
            [ $i = 0 ] && continue
            if [ $k = ours ]; then
                B_OURS="$B_OURS $1"; C_OURS="$C_OURS $2"; R_OURS="$R_OURS $(($3 - $5))"; P_OURS="$P_OURS $(($4 - $6))"
                G_OURS="$G_OURS $6"; RAW_OURS="$RAW_OURS $4"; U_OURS="$U_OURS $9"
                [ "${10}" != null ] && O_OURS="$O_OURS ${10}" OU_OURS="$OU_OURS ${11}"
            else
                B_QEMU="$B_QEMU $1"; C_QEMU="$C_QEMU $2"; R_QEMU="$R_QEMU $(($3 - $5))"; P_QEMU="$P_QEMU $(($4 - $6))"
                G_QEMU="$G_QEMU $6"; RAW_QEMU="$RAW_QEMU $4"; U_QEMU="$U_QEMU $9"
                [ "${10}" != null ] && O_QEMU="$O_QEMU ${10}" OU_QEMU="$OU_QEMU ${11}"
            fi
        done
        i=$((i + 1))
    done
    bo=$(median $B_OURS) bq=$(median $B_QEMU)
    ratio=$(awk -v a="$bo" -v b="$bq" 'BEGIN { if (a == "null" || b == "null" || b == 0) print "null"; else printf "%.3f", a / b }')
    echo "BENCH-JSON vmm {\"node\":\"$KATA_RS_NODE_KIND\",\"n\":$N,\"mem_mib\":$MEM,\"criterion\":\"VMM process start to 'kata-rs-agent: ready' on the console\"," \
        "\"boot_ms_ours\":$bo,\"boot_ms_qemu\":$bq,\"ratio\":$ratio," \
        "\"check_ms_ours\":$(median $C_OURS),\"check_ms_qemu\":$(median $C_QEMU),\"cpu_ms_ours\":$(median $U_OURS),\"cpu_ms_qemu\":$(median $U_QEMU)," \
        "\"vmm_cpu_ms_ours\":$(median $O_OURS),\"vmm_cpu_ms_qemu\":$(median $O_QEMU),\"samples_vmm_cpu_ms_ours\":[$(list $O_OURS)],\"samples_vmm_cpu_ms_qemu\":[$(list $O_QEMU)]," \
        "\"vmm_user_cpu_ms_ours\":$(median $OU_OURS),\"vmm_user_cpu_ms_qemu\":$(median $OU_QEMU)," \
        "\"vmm_rss_kib\":$(median $R_OURS),\"vmm_pss_kib\":$(median $P_OURS),\"vmm_pss_incl_guest_kib\":$(median $RAW_OURS),\"guest_pss_kib_ours\":$(median $G_OURS)," \
        "\"qemu_rss_kib\":$(median $R_QEMU),\"qemu_pss_kib\":$(median $P_QEMU),\"qemu_pss_incl_guest_kib\":$(median $RAW_QEMU),\"guest_pss_kib_qemu\":$(median $G_QEMU)," \
        "\"failed_boots\":$FAIL,\"samples_boot_ms_ours\":[$(list $B_OURS)],\"samples_boot_ms_qemu\":[$(list $B_QEMU)]," \
        "\"qemu_cmdline\":\"-M microvm,rtc=on,acpi=off -enable-kvm -cpu host -m ${MEM}M -smp 1 -nodefaults -no-user-config -display none -no-reboot + serial file, vhost-vsock-device, virtio-rng-device\"}"
fi

# ---------------------------------------------------------------- 2. containers through containerd
IMG=$KATA_RS_IMAGE
# run_one RUNTIME ID: wall ms of "ctr run --rm", or null on failure
run_one() {
    t0=$(now)
    if timeout 300 ctr run --rm --runtime "$1" "$IMG" "$2" true > "$W/ctr-$2.out" 2>&1; then
        ms "$t0" "$(now)"
    else
        say "ctr run --runtime $1 failed:"; sed 's/^/  ctr| /' "$W/ctr-$2.out" >&2; echo null
    fi
}
if want containers; then
    T_KATA= T_RUNC= CFAIL=0
    i=0
    while [ $i -le "$N" ]; do
        if [ $((i % 2)) = 0 ]; then order="kata runc"; else order="runc kata"; fi
        for k in $order; do
            v=$(run_one io.containerd.$k.v2 bench-$k-$i)
            tag=run$i; [ $i = 0 ] && tag=warm-up
            say "$tag ctr run --rm $k: $v ms"
            [ "$v" = null ] && { CFAIL=$((CFAIL + 1)); continue; }
            [ $i = 0 ] && continue
            if [ $k = kata ]; then T_KATA="$T_KATA $v"; else T_RUNC="$T_RUNC $v"; fi
        done
        i=$((i + 1))
    done
fi

# pids_of NAME ID: PIDs whose exe basename is NAME and whose command line contains ID
pids_of() {
    for p in /proc/[0-9]*; do
        c=$( { tr '\0' ' ' < $p/cmdline; } 2>/dev/null) || continue
        e=${c%% *}; e=${e##*/}
        [ "$e" = "$1" ] || continue
        case " $c " in *"$2"*) echo ${p#/proc/} ;; esac
    done
}
# sleeping container: shim (and VMM) PSS
sleeper() {
    rt=$1 id=bench-sleep-$1
    ctr run -d --runtime io.containerd.$1.v2 "$IMG" $id sleep 3600 > "$W/ctr-$id.out" 2>&1 || { sed 's/^/  ctr| /' "$W/ctr-$id.out" >&2; echo "null null null null"; return; }
    i=0; while [ $i -lt 600 ]; do ctr task ls 2>/dev/null | grep -q "^$id .*RUNNING" && break; sleep 0.1; i=$((i + 1)); done
    sleep 2
    shim=$(pids_of containerd-shim-$1-v2 "$id" | tr '\n' ' ')
    [ -n "$shim" ] || shim=$(pids_of containerd-shim-$1-v2 "" | tr '\n' ' ')
    vmm=; vp=null; vg=null; vr=null; gu=null gm=null fe=null fn=0
    if [ $1 = kata ]; then
        vmm=$(for p in /proc/[0-9]*; do c=$( { tr '\0' ' ' < $p/cmdline; } 2>/dev/null); e=${c%% *}; [ "${e##*/}" = kata-vmm ] && echo ${p#/proc/}; done | head -n1)
        if [ -n "$vmm" ]; then
            # The guest RAM mapping is the pod VM's size (the shim's --mem-mib), not section 1's.
            gm=$(tr '\0' '\n' < /proc/$vmm/cmdline | awk 'p { print; exit } $0 == "--mem-mib" { p = 1 }')
            omem=$MEM; MEM=${gm:-$MEM}; gm=$MEM
            set -- $(mem $vmm); vp=$(($2 - $4)); vg=$2; vr=$(($1 - $3)); gu=$3
            # virtiofsd maps the guest's RAM too (vhost-user): without it, as for the VMM.
            fe=0; for p in $(pids_of virtiofsd ""); do set -- $(mem $p); fe=$((fe + $2 - $4)); fn=$((fn + 1)); done
            MEM=$omem
        fi
    fi
    sp=$(pss_sum $shim)
    say "sleeping $rt container: shim pid(s) $shim pss $sp KiB${vmm:+; kata-vmm pid $vmm pss $vp KiB excl. guest RAM ($vg incl.), rss $vr KiB; guest RAM (${gm} MiB) backed: rss $gu KiB; virtiofsd ($fn) pss $fe KiB excl. guest RAM}"
    ctr task kill -s KILL $id > /dev/null 2>&1
    i=0; while [ $i -lt 300 ]; do ctr task ls 2>/dev/null | grep -q "^$id " || break; ctr task delete $id > /dev/null 2>&1; sleep 0.1; i=$((i + 1)); done
    ctr container rm $id > /dev/null 2>&1
    echo "$sp $vp $vg $vr $fe $gu $gm"
}
if want containers; then
    set -- $(sleeper kata); KSHIM=$1 KVMM=$2 KVMMG=$3 KVMMR=$4 KVFSD=${5:-null} KGUSED=${6:-null} KGMEM=${7:-null}
    set -- $(sleeper runc); RSHIM=$1
    tk=$(median $T_KATA) tr=$(median $T_RUNC)
    cratio=$(awk -v a="$tk" -v b="$tr" 'BEGIN { if (a == "null" || b == "null" || b == 0) print "null"; else printf "%.3f", a / b }')
    ktotal=$(awk -v a="$KSHIM" -v b="$KVMM" 'BEGIN { if (a == "null" || b == "null") print "null"; else print a + b }')
    # Everything the idle pod costs on the host, guest RAM excluded (issue 15's host_overhead_kib).
    khost=$(awk -v a="$ktotal" -v b="$KVFSD" 'BEGIN { if (a == "null" || b == "null") print "null"; else print a + b }')
    echo "BENCH-JSON containers {\"node\":\"$KATA_RS_NODE_KIND\",\"n\":$N,\"image\":\"$IMG\",\"command\":\"ctr run --rm --runtime R IMAGE ID true\"," \
        "\"start_ms_kata\":$tk,\"start_ms_runc\":$tr,\"ratio\":$cratio," \
        "\"kata_shim_pss_kib\":$KSHIM,\"kata_vmm_pss_kib\":$KVMM,\"kata_vmm_pss_incl_guest_kib\":$KVMMG,\"kata_vmm_rss_kib\":$KVMMR,\"kata_total_pss_kib\":$ktotal," \
        "\"kata_virtiofsd_pss_kib\":$KVFSD,\"kata_host_overhead_kib\":$khost,\"kata_guest_used_kib\":$KGUSED,\"kata_guest_mem_mib\":$KGMEM," \
        "\"runc_shim_pss_kib\":$RSHIM,\"failed_runs\":$CFAIL," \
        "\"samples_ms_kata\":[$(list $T_KATA)],\"samples_ms_runc\":[$(list $T_RUNC)]}"
fi

# ---------------------------------------------------------------- cri: pod start and churn through CRI
# A second containerd with the CRI plugin (kata_rs_start_cri_containerd, tests/harness/lib.sh:
# handlers kata and runc, host-network pods). The client (tests/cri/src/bench/) runs a
# warm-up round and CRI_N rounds, one pod per runtime each, alternating the order: pod start
# (RunPodSandbox → StartContainer answered) and the whole pod (create → removed: the churn),
# and splits the kata pods' start into phases from the timestamps in containerd's log (the
# shim's lines land there too). Then the density step: up to CRI_DENSITY idle pods per runtime
# left running, the node's MemAvailable before and after (memory per pod, pods per GiB).
if want cri; then
    # iperf3 needs pods on a network of their own: CNI bridge + host-local as in
    # tests/scripts/cri-net.sh (10.88.0.0/16 on kata-rs-br0); host-network pods ignore it.
    IPERF_ARGS=
    if [ -n "$IPERF_DIR" ] && [ -x "$IPERF_DIR/iperf3" ] && [ -x "$CNI_DIR/bridge" ]; then
        mkdir -p "$KATA_RS_WORK/cri/cni/bin" "$KATA_RS_WORK/cri/cni/net.d"
        cp "$CNI_DIR/bridge" "$CNI_DIR/host-local" "$CNI_DIR/loopback" "$KATA_RS_WORK/cri/cni/bin/"
        cat > "$KATA_RS_WORK/cri/cni/net.d/10-kata-rs.conflist" <<'JSON'
{"cniVersion": "0.4.0", "name": "kata-rs-net", "plugins": [
  {"type": "bridge", "bridge": "kata-rs-br0", "isGateway": true, "ipMasq": false, "hairpinMode": true,
   "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.88.0.0/16"}]], "routes": [{"dst": "0.0.0.0/0"}]}}
]}
JSON
        IPERF_ARGS="--iperf3 $IPERF_DIR"
    elif want cri; then
        say "cri: no iperf3 bundle or CNI plugins (run.sh passes them): no iperf3 step"
    fi
    if [ ! -x "$CRI_BENCH" ]; then
        say "cri: no CRI bench client (run.sh passes target/release/kata-rs-cri-bench)"
    elif ! kata_rs_start_cri_containerd; then
        say "cri: containerd with CRI did not come up"
    else
        mkdir -p "$W/cri-logs"
        t0=$(now)
        timeout -k 30 3000 "$CRI_BENCH" --socket "$KATA_RS_CRI_SOCKET" --image "$KATA_RS_IMAGE" \
            --log-dir "$W/cri-logs" --cgroup-parent /kata-rs-test/cri-bench --timeout 300 \
            --pods "$CRI_N" --containerd-log "$KATA_RS_CRI_LOG" --density "$CRI_DENSITY" $IPERF_ARGS > "$W/cri-bench.out" 2>&1
        crc=$?
        grep -v '^BENCH-JSON' "$W/cri-bench.out" | sed 's/^bench-cri| /bench| cri /' >&2
        say "cri: client exit $crc after $(ms "$t0" "$(now)") ms"
        j=$(sed -n 's/^BENCH-JSON cri {//p' "$W/cri-bench.out")
        [ -n "$j" ] && echo "BENCH-JSON cri {\"node\":\"$KATA_RS_NODE_KIND\",$j"
        if [ $crc -ne 0 ]; then
            grep -E 'level=(warning|error)' "$KATA_RS_CRI_LOG" | tail -n 20 | cut -c1-600 | sed 's/^/  cri-log| /' >&2
        fi
        kata_rs_stop_cri_containerd
    fi
fi

# ---------------------------------------------------------------- 3. io: read, untar, idle pod memory
# One container per runtime (privileged, to drop the guest's/node's page cache before each
# read), a read-only volume with a 256 MiB file and a tar of ~10k small files. Per round, in
# alternating order: drop caches, dd the file to /dev/null (timed inside the container with
# its /proc/uptime, so ctr exec's own cost is not in it); then untar the 10k files into the
# container's root file system (/tmp/u: the rootfs, i.e. the share under kata, overlayfs
# under runc), then rm -rf them (timed too). Before the rounds, with the containers idle:
# PSS of everything a pod costs on the host (kata: shim + kata-vmm + virtiofsd; runc: shim).
# in_ctr ID SCRIPT: runs SCRIPT in the container, prints its stdout (numbers) or "null".
in_ctr() {
    timeout 600 ctr task exec --exec-id "x$(cut -c1-8 /proc/sys/kernel/random/uuid)" "$1" sh -c "$2" 2> "$W/exec.err" || { say "exec in $1 failed: $(head -c 300 "$W/exec.err")"; echo null; }
}
# wait_running ID: 0 once the task runs (120 s at most)
wait_running() { i=0; while [ $i -lt 1200 ]; do ctr task ls 2>/dev/null | grep -q "^$1 .*RUNNING" && return 0; sleep 0.1; i=$((i + 1)); done; return 1; }
stop_ctr() {
    ctr task kill -s KILL "$1" > /dev/null 2>&1
    i=0; while [ $i -lt 300 ]; do ctr task ls 2>/dev/null | grep -q "^$1 " || break; ctr task delete "$1" > /dev/null 2>&1; sleep 0.1; i=$((i + 1)); done
    ctr container rm "$1" > /dev/null 2>&1
}
# pod_mem RUNTIME ID: "pss_excl_guest pss_incl_guest virtiofsd_excl virtiofsd_incl virtiofsd_procs vmm_excl shim" KiB
pod_mem() {
    shim=$(pids_of containerd-shim-$1-v2 "$2" | tr '\n' ' ')
    [ -n "$shim" ] || shim=$(pids_of containerd-shim-$1-v2 "" | tr '\n' ' ')
    sp=$(pss_sum $shim)
    if [ "$1" = runc ]; then echo "$sp $sp 0 0 0 0 $sp"; return; fi
    [ -n "$(pids_of kata-vmm "")" ] || { echo "null null null null null null $sp"; return; }
    ve=0 vi=0
    for p in $(pids_of kata-vmm ""); do set -- $(mem $p); ve=$((ve + $2 - $4)); vi=$((vi + $2)); done
    fe=0 fi=0 fn=0
    for p in $(pids_of virtiofsd ""); do set -- $(mem $p); fe=$((fe + $2 - $4)); fi=$((fi + $2)); fn=$((fn + 1)); done
    echo "$((sp + ve + fe)) $((sp + vi + fi)) $fe $fi $fn $ve $sp"
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "null" || b == "null" || a == "" || b == "" || b == 0) print "null"; else printf "%.3f", a / b }'; }
if want io; then
    IO=$W/io
    mkdir -p "$IO/vol"
    awk 'BEGIN { for (i = 0; i < 70000; i++) printf "%08d kata-rs bench: a 256 MiB file of numbered lines, not zeros.\n", i }' > "$IO/block"
    i=0; while [ $i -lt 64 ]; do cat "$IO/block"; i=$((i + 1)); done \
        | dd of="$IO/vol/read256" bs=1M count=256 iflag=fullblock 2>/dev/null
    rm -f "$IO/block"
    NFILES=0
    if [ -f "$FILES_TAR" ]; then
        cp "$FILES_TAR" "$IO/vol/files.tar"
        NFILES=$(tar -tf "$IO/vol/files.tar" | grep -vc '/$')
    else
        say "no 10k-files tar (run.sh passes it): no untar step"
    fi
    say "io: read file $(stat -c %s "$IO/vol/read256") bytes, tar with $NFILES files"
    for k in kata runc; do
        if ctr run -d --privileged --runtime io.containerd.$k.v2 \
            --mount type=bind,src=$IO/vol,dst=/v,options=rbind:ro "$IMG" bench-io-$k sleep 36000 > "$W/io-$k.out" 2>&1; then
            wait_running bench-io-$k
        else
            say "io: ctr run $k failed:"; sed 's/^/  ctr| /' "$W/io-$k.out" >&2
        fi
    done
    sleep 2
    set -- $(pod_mem kata bench-io-kata); KP=$1 KPI=$2 FE=$3 FI=$4 FN=$5 KV=$6 KS=$7
    set -- $(pod_mem runc bench-io-runc); RP=$1
    say "io: idle pod PSS: kata shim $KS + kata-vmm $KV + virtiofsd $FE ($FN process(es)) = $KP KiB excl. guest RAM ($KPI incl.); runc shim $RP KiB"
    READ='sync; echo 3 > /proc/sys/vm/drop_caches; t0=$(cut -d" " -f1 /proc/uptime)
        dd if=/v/read256 of=/dev/null bs=1M 2>/dev/null || exit 1
        awk -v a="$t0" -v b="$(cut -d" " -f1 /proc/uptime)" "BEGIN { printf \"%d\n\", (b - a) * 1000 }"'
    # Time-boxed (UNTAR_SECS): where the whole tar cannot finish (the emulated node under
    # virtio-fs), the rate over the files extracted so far stands for the whole; the third
    # number says how many files that was.
    UNTAR='rm -rf /tmp/u; mkdir -p /tmp/u; t0=$(cut -d" " -f1 /proc/uptime)
        timeout '"$UNTAR_SECS"' tar -xf /v/files.tar -C /tmp/u; n=$(find /tmp/u -type f | wc -l)
        t1=$(cut -d" " -f1 /proc/uptime); rm -rf /tmp/u; t2=$(cut -d" " -f1 /proc/uptime)
        [ "$n" -gt 0 ] || exit 1
        awk -v a="$t0" -v b="$t1" -v c="$t2" -v n="$n" -v all='"$NFILES"' "BEGIN { printf \"%d %d %d\n\", (b - a) * 1000 * all / n, (c - b) * 1000 * all / n, n }"'
    R_KATA= R_RUNC= U_KATA= U_RUNC= D_KATA= D_RUNC= IOFAIL=0
    i=0
    while [ $i -le "$IO_N" ]; do
        if [ $((i % 2)) = 0 ]; then order="kata runc"; else order="runc kata"; fi
        tag=run$i; [ $i = 0 ] && tag=warm-up
        for k in $order; do
            r=$(in_ctr bench-io-$k "$READ")
            u="null null 0"; [ "$NFILES" -gt 0 ] && u=$(in_ctr bench-io-$k "$UNTAR")
            set -- $u; [ $# = 3 ] || set -- null null 0
            x=""; [ "$3" != 0 ] && [ "$3" != "$NFILES" ] && x=" (extrapolated from $3 files in ${UNTAR_SECS}s)"
            say "$tag io $k: read 256 MiB $r ms, untar $NFILES files $1 ms, rm -rf $2 ms$x"
            [ "$r" = null ] && IOFAIL=$((IOFAIL + 1))
            [ $i = 0 ] && continue
            if [ $k = kata ]; then
                [ "$r" != null ] && R_KATA="$R_KATA $r"; [ "$1" != null ] && U_KATA="$U_KATA $1"; [ "$2" != null ] && D_KATA="$D_KATA $2"
            else
                [ "$r" != null ] && R_RUNC="$R_RUNC $r"; [ "$1" != null ] && U_RUNC="$U_RUNC $1"; [ "$2" != null ] && D_RUNC="$D_RUNC $2"
            fi
        done
        i=$((i + 1))
    done
    stop_ctr bench-io-kata; stop_ctr bench-io-runc
    rm -rf "$IO"
    rk=$(median $R_KATA) rr=$(median $R_RUNC) uk=$(median $U_KATA) ur=$(median $U_RUNC) dk=$(median $D_KATA) dr=$(median $D_RUNC)
    mibs() { awk -v ms="$1" 'BEGIN { if (ms == "null" || ms == "" || ms == 0) print "null"; else printf "%.1f", 256 * 1000 / ms }'; }
    fps() { awk -v ms="$1" -v n="$NFILES" 'BEGIN { if (ms == "null" || ms == "" || ms == 0) print "null"; else printf "%d", n * 1000 / ms }'; }
    echo "BENCH-JSON io {\"node\":\"$KATA_RS_NODE_KIND\",\"n\":$IO_N,\"untar_secs\":$UNTAR_SECS," \
        "\"read_ms_kata\":$rk,\"read_ms_runc\":$rr,\"read_mib_s_kata\":$(mibs $rk),\"read_mib_s_runc\":$(mibs $rr),\"read_ratio\":$(ratio $rr $rk)," \
        "\"untar_files\":$NFILES,\"untar_ms_kata\":$uk,\"untar_ms_runc\":$ur,\"untar_files_s_kata\":$(fps $uk),\"untar_files_s_runc\":$(fps $ur),\"untar_ratio\":$(ratio $ur $uk)," \
        "\"rm_ms_kata\":$dk,\"rm_ms_runc\":$dr,\"rm_ratio\":$(ratio $dr $dk)," \
        "\"kata_pod_pss_kib\":${KP:-null},\"kata_pod_pss_incl_guest_kib\":${KPI:-null},\"kata_shim_pss_kib\":${KS:-null},\"kata_vmm_pss_kib\":${KV:-null}," \
        "\"virtiofsd_pss_kib\":${FE:-null},\"virtiofsd_pss_incl_guest_kib\":${FI:-null},\"virtiofsd_procs\":${FN:-null},\"runc_pod_pss_kib\":${RP:-null}," \
        "\"failed_runs\":$IOFAIL,\"samples_read_ms_kata\":[$(list $R_KATA)],\"samples_read_ms_runc\":[$(list $R_RUNC)]," \
        "\"samples_untar_ms_kata\":[$(list $U_KATA)],\"samples_untar_ms_runc\":[$(list $U_RUNC)]}"
fi

# ---------------------------------------------------------------- 4. image size: 200 MiB layer vs busybox
# ctr run --rm IMAGE true for busybox and kata-rs.local/big:latest (busybox + a 200 MiB layer of
# random bytes), under kata and runc, warm-up + N each, interleaved; then one sleeping kata
# container of each image: the guest's MemAvailable and the VMM's PSS incl. guest RAM.
BIG_IMG=kata-rs.local/big:latest
run_img() {
    t0=$(now)
    if timeout 300 ctr run --rm --runtime "io.containerd.$1.v2" "$2" "$3" true > "$W/ctr-$3.out" 2>&1; then
        ms "$t0" "$(now)"
    else
        say "ctr run --runtime $1 $2 failed:"; sed 's/^/  ctr| /' "$W/ctr-$3.out" >&2; echo null
    fi
}
if want image && [ ! -f "$BIG_TAR" ]; then say "no big image archive (run.sh passes it): no image section"; fi
if want image && [ -f "$BIG_TAR" ]; then
    t0=$(now)
    ctr image import "$BIG_TAR" > "$W/import.out" 2>&1 || { say "ctr image import $BIG_TAR failed:"; sed 's/^/  ctr| /' "$W/import.out" >&2; }
    IMPORT_MS=$(ms "$t0" "$(now)")
    say "image: imported $BIG_IMG in $IMPORT_MS ms"
    S_KB= S_KG= S_RB= S_RG= IFAIL=0
    i=0
    while [ $i -le "$N" ]; do
        if [ $((i % 2)) = 0 ]; then order="busybox big"; else order="big busybox"; fi
        tag=run$i; [ $i = 0 ] && tag=warm-up
        for k in kata runc; do
            for im in $order; do
                ref=$IMG; [ $im = big ] && ref=$BIG_IMG
                v=$(run_img $k "$ref" bench-img-$k-$im-$i)
                say "$tag ctr run --rm $k $im: $v ms"
                [ "$v" = null ] && { IFAIL=$((IFAIL + 1)); continue; }
                [ $i = 0 ] && continue
                case $k-$im in
                    kata-busybox) S_KB="$S_KB $v" ;; kata-big) S_KG="$S_KG $v" ;;
                    runc-busybox) S_RB="$S_RB $v" ;; runc-big) S_RG="$S_RG $v" ;;
                esac
            done
        done
        i=$((i + 1))
    done
    # Guest memory after start, per image.
    for im in busybox big; do
        ref=$IMG; [ $im = big ] && ref=$BIG_IMG
        id=bench-mem-$im
        if ctr run -d --runtime io.containerd.kata.v2 "$ref" $id sleep 36000 > "$W/$id.out" 2>&1; then
            wait_running $id; sleep 2
        else
            sed 's/^/  ctr| /' "$W/$id.out" >&2
        fi
        set -- $(in_ctr $id 'awk "/^MemAvailable:/ { a = \$2 } /^MemTotal:/ { t = \$2 } END { print a + 0, t + 0 }" /proc/meminfo')
        avail=${1:-null} total=${2:-null}
        vpi=null; vmm=$(pids_of kata-vmm "" | head -n1); [ -n "$vmm" ] && { set -- $(mem $vmm); vpi=$2; }
        say "image $im: guest MemAvailable $avail KiB of $total KiB; kata-vmm PSS incl. guest RAM $vpi KiB"
        eval "AV_$im=$avail TOT_$im=$total VPI_$im=$vpi"
        stop_ctr $id
    done
    ctr image rm "$BIG_IMG" > /dev/null 2>&1
    kb=$(median $S_KB) kg=$(median $S_KG) rb=$(median $S_RB) rg=$(median $S_RG)
    echo "BENCH-JSON image {\"node\":\"$KATA_RS_NODE_KIND\",\"n\":$N,\"big_image\":\"$BIG_IMG\",\"big_layer_mib\":200,\"import_ms\":$IMPORT_MS," \
        "\"start_ms_kata_busybox\":$kb,\"start_ms_kata_big\":$kg,\"ratio_kata\":$(ratio $kg $kb)," \
        "\"start_ms_runc_busybox\":$rb,\"start_ms_runc_big\":$rg,\"ratio_runc\":$(ratio $rg $rb)," \
        "\"guest_memavailable_kib_busybox\":$AV_busybox,\"guest_memavailable_kib_big\":$AV_big,\"guest_memtotal_kib\":$TOT_busybox," \
        "\"vmm_pss_incl_guest_kib_busybox\":$VPI_busybox,\"vmm_pss_incl_guest_kib_big\":$VPI_big,\"failed_runs\":$IFAIL," \
        "\"samples_ms_kata_busybox\":[$(list $S_KB)],\"samples_ms_kata_big\":[$(list $S_KG)]," \
        "\"samples_ms_runc_busybox\":[$(list $S_RB)],\"samples_ms_runc_big\":[$(list $S_RG)]}"
fi

# ---------------------------------------------------------------- 5. fsvmm: virtio-fs behind kata-vmm vs QEMU
# The storage path without shim, agent or containers: the same guest kernel, the same virtiofsd
# binary with the shim's options (shim/src/virtiofsd.rs), the same bench guest
# (benches/fs-initrd.sh: cold 256 MiB read, untar of the 10k-files tar into the share and into
# guest tmpfs, each timed in the guest) behind kata-vmm and behind qemu -M microvm's
# vhost-user-fs-device, interleaved. A fresh virtiofsd per VM (it exits with its vhost-user
# peer). VARIANTS: NAME:VMM:CACHE[:KNOB,...] (VMM ours|qemu; a KNOB fsb_X=V goes to the guest's
# command line, e.g. fsb_ra=1024 = the share's read_ahead_kb, any other to virtiofsd's); knob
# variants (other cache modes, --thread-pool-size, --writeback, readahead) run beside the two
# baselines.
FS_MEM=512
VFSD=${KATA_RS_BENCH_VIRTIOFSD:-/usr/local/libexec/kata-rs/virtiofsd}   # (override: a dry run off the node)
# stat_cpu PID: "user_ms sys_ms guest_ms" of the whole process (all threads), USER_HZ = 100
stat_cpu() { sed 's/.*) //' /proc/$1/stat 2>/dev/null | awk '{ print $12 * 10, $13 * 10, $41 * 10 }'; }
# fsvmm_run NAME VMM CACHE EXTRA CID: one VM; prints one result line of numbers (see below)
fsvmm_run() {
    fn=$1 fvmm=$2 fcache=$3 fknobs=$4 fcid=$5
    d=$FSW/run-$fn-$fcid sock=$FSW/vfsd-$fcid.sock log=$FSW/console-$fn-$fcid.log
    mkdir -p "$d"; : > "$log"; rm -f "$sock"
    # knobs: fsb_*=V go to the guest's command line (benches/fs-initrd.sh), the rest to virtiofsd
    vargs= gargs=
    for k in $(echo "$fknobs" | tr ',' ' '); do
        case $k in fsb_*) gargs="$gargs $k" ;; *) vargs="$vargs $k" ;; esac
    done
    # The shim's command line (VirtiofsdSpec::args), plus the variant's knobs.
    "$VFSD" --socket-path "$sock" --shared-dir "$FSW/share" --cache "$fcache" --sandbox namespace \
        --seccomp kill --announce-submounts --modcaps=-mknod --log-level error $vargs \
        > "$d/vfsd.out" 2>&1 &
    fpid=$!
    i=0; while [ $i -lt 300 ] && [ ! -S "$sock" ]; do sleep 0.1; i=$((i + 1)); done
    [ -S "$sock" ] || { say "fsvmm $fn: virtiofsd did not listen: $(head -c 300 "$d/vfsd.out")"; kill $fpid 2>/dev/null; wait $fpid 2>/dev/null; echo null; return; }
    extra="fsb_secs=$FSVMM_SECS fsb_files=$FS_NFILES$gargs"
    t0=$(now)
    if [ "$fvmm" = ours ]; then
        kata-vmm --kernel "$KERNEL" --initrd "$FS_INITRD" --mem-mib $FS_MEM --vcpus 1 \
            --vsock-cid "$fcid" --console-log "$log" --fs "socket=$sock,tag=kataShared" \
            --cmdline "$extra" > "$d/vmm.out" 2>&1 &
    else
        # force-legacy=false: QEMU's virtio-mmio is legacy (version 1) by default; kata-vmm's is
        # virtio 1.x, so the guest negotiates the same features (VERSION_1, EVENT_IDX, INDIRECT).
        "$QEMU" -L "$QEMU_DATA" -M microvm,rtc=on,acpi=off,memory-backend=mem -enable-kvm -cpu host \
            -global virtio-mmio.force-legacy=false -m ${FS_MEM}M -smp 1 -object memory-backend-memfd,id=mem,size=${FS_MEM}M,share=on \
            -nodefaults -no-user-config -display none -no-reboot \
            -kernel "$KERNEL" -initrd "$FS_INITRD" -append "$QEMU_CMDLINE $extra" \
            -serial "file:$log" -device vhost-vsock-device,guest-cid="$fcid" \
            -object rng-random,filename=/dev/urandom,id=rng0 -device virtio-rng-device,rng=rng0 \
            -chardev socket,id=vfs,path="$sock" \
            -device vhost-user-fs-device,chardev=vfs,tag=kataShared,queue-size=1024 \
            > "$d/vmm.out" 2>&1 &
    fi
    pid=$!
    # Up to 15 min: boot + read + 2 time-boxed untars + their rm.
    te= cpu= fcpu=0 i=0
    while kill -0 $pid 2>/dev/null && [ $i -lt 4500 ]; do
        if grep -q '^BENCHFS end' "$log"; then
            te=$(now); cpu=$(stat_cpu $pid)
            for p in $(pids_of virtiofsd "$sock"); do set -- $(stat_cpu $p); fcpu=$((fcpu + $1 + $2)); done
            break
        fi
        sleep 0.2; i=$((i + 1))
    done
    i=0; while kill -0 $pid 2>/dev/null && [ $i -lt 300 ]; do sleep 0.1; i=$((i + 1)); done
    if kill -0 $pid 2>/dev/null; then kill -KILL $pid; wait $pid 2>/dev/null; rc=killed; else wait $pid; rc=$?; fi
    i=0; while kill -0 $fpid 2>/dev/null && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
    kill $fpid 2>/dev/null; wait $fpid 2>/dev/null
    rm -rf "$FSW/share/w"
    grep -a '^BENCHFS' "$log" | sed "s/^/  $fn guest| /" >&2
    if [ -z "$te" ]; then
        say "fsvmm $fn (cid $fcid): no 'BENCHFS end' (VMM exit $rc); last console lines:"
        tail -n 20 "$log" | sed 's/^/  console| /' >&2; sed 's/^/  vmm| /' "$d/vmm.out" | tail -n 10 >&2
        sed 's/^/  virtiofsd| /' "$d/vfsd.out" | tail -n 5 >&2
        echo null; return
    fi
    # read_ms untar_share_ms(all files) n_share rm_share_ms(all) untar_tmpfs_ms(all) n_tmpfs wall_ms
    # vmm_user vmm_sys vmm_guest vfsd_cpu (ms) read_irqs untar_share_irqs (the fs device's interrupts)
    # read_tmpfs_ms read2_ms
    awk -v all="$FS_NFILES" -v wall="$(ms "$t0" "$te")" -v cpu="$cpu" -v fcpu=$fcpu '
        { sub(/\r$/, "") }
        function kv(k,  i) { for (i = 3; i <= NF; i++) if (index($i, k "=") == 1) return substr($i, length(k) + 2); return "" }
        $1 == "BENCHFS" && $2 == "read" { r = kv("ms"); ri = kv("irqs") }
        $1 == "BENCHFS" && $2 == "untar_share" { us = kv("ms"); ns = kv("n"); rs = kv("rm_ms"); ui = kv("irqs") }
        $1 == "BENCHFS" && $2 == "untar_tmpfs" { ut = kv("ms"); nt = kv("n") }
        $1 == "BENCHFS" && $2 == "read_tmpfs" { rt = kv("ms") }
        $1 == "BENCHFS" && $2 == "read2" { r2 = kv("ms") }
        function x(ms, n) { return (ms == "" || n == "" || n == 0) ? "null" : sprintf("%d", ms * all / n) }
        END { split(cpu, c, " ")
              printf "%s %s %s %s %s %s %s %d %d %d %d %d %d %s %s\n", (r == "" ? "null" : r), x(us, ns), (ns == "" ? 0 : ns),
                  x(rs, ns), x(ut, nt), (nt == "" ? 0 : nt), wall, c[1], c[2], c[3], fcpu, ri, ui, (rt == "" ? "null" : rt), (r2 == "" ? "null" : r2) }' "$log"
}
# fsvmm_emit COMPLETE: the section's BENCH-JSON line from the samples so far (printed after
# every VM, so that a rig fault later in the section leaves the finished VMs' results; run.sh
# keeps the last line; "complete": false until all rounds ran)
fsvmm_emit() {
    FSJ=
    # per variant: medians, and the share untar against the tmpfs one (L2 CPU baseline)
    for v in $FSVMM_VARIANTS; do
        name=${v%%:*} rest=${v#*:}; vmmk=${rest%%:*} rest=${rest#*:}; cache=${rest%%:*}
        knobs=; case $rest in *:*) knobs=${rest#*:} ;; esac
        eval "r2=\$FS_R2_$name rt=\$FS_RT_$name ri=\$FS_RI_$name ui=\$FS_UI_$name rd=\$FS_R_$name ud=\$FS_U_$name dd_=\$FS_D_$name td=\$FS_T_$name vu=\$FS_VU_$name vs=\$FS_VS_$name vg=\$FS_VG_$name fc=\$FS_F_$name"
        mr=$(median $rd) mu=$(median $ud) md=$(median $dd_) mt=$(median $td)
        FSJ="$FSJ${FSJ:+,}\"$name\":{\"vmm\":\"$vmmk\",\"cache\":\"$cache\",\"knobs\":\"$(echo "$knobs" | tr ',' ' ')\",\"read_ms\":$mr,\"read_mib_s\":$(awk -v ms="$mr" 'BEGIN { if (ms == "null" || ms == 0) print "null"; else printf "%.1f", 256000 / ms }')"
        FSJ="$FSJ,\"untar_share_ms\":$mu,\"rm_share_ms\":$md,\"untar_tmpfs_ms\":$mt,\"untar_share_vs_tmpfs\":$(ratio $mu $mt)"
        mrt=$(median $(echo $rt | tr ' ' '\n' | grep -v null))
        FSJ="$FSJ,\"read_tmpfs_ms\":$mrt,\"read_vs_tmpfs\":$(ratio $mr $mrt)"
        FSJ="$FSJ,\"read2_ms\":$(median $(echo $r2 | tr ' ' '\n' | grep -v null))"
        FSJ="$FSJ,\"read_irqs\":$(median $ri),\"samples_untar_share_irqs_per_file\":[$(list $ui)]"
        FSJ="$FSJ,\"vmm_user_ms\":$(median $vu),\"vmm_sys_ms\":$(median $vs),\"vmm_guest_ms\":$(median $vg),\"virtiofsd_cpu_ms\":$(median $fc)"
        FSJ="$FSJ,\"samples_read_ms\":[$(list $rd)],\"samples_untar_share_ms\":[$(list $ud)],\"samples_untar_tmpfs_ms\":[$(list $td)]}"
        eval "FSM_R_$name=$mr FSM_U_$name=$mu FSM_D_$name=$md FSM_T_$name=$mt FSM_RT_$name=$mrt"
    done
    # kata-vmm / qemu ratios of the baselines (time ratios: > 1 = kata-vmm slower)
    echo "BENCH-JSON fsvmm {\"node\":\"$KATA_RS_NODE_KIND\",\"n\":$FSVMM_N,\"untar_secs\":$FSVMM_SECS,\"untar_files\":$FS_NFILES,\"mem_mib\":$FS_MEM,\"vcpus\":1," \
        "\"read_time_ratio\":$(ratio "${FSM_R_ours:-null}" "${FSM_R_qemu:-null}"),\"untar_share_time_ratio\":$(ratio "${FSM_U_ours:-null}" "${FSM_U_qemu:-null}")," \
        "\"rm_share_time_ratio\":$(ratio "${FSM_D_ours:-null}" "${FSM_D_qemu:-null}"),\"untar_tmpfs_time_ratio\":$(ratio "${FSM_T_ours:-null}" "${FSM_T_qemu:-null}")," \
        "\"read_tmpfs_time_ratio\":$(ratio "${FSM_RT_ours:-null}" "${FSM_RT_qemu:-null}")," \
        "\"failed_runs\":$FSFAIL,\"complete\":$1,\"variants\":{$FSJ}}"
}
if want fsvmm; then
    fs_ok=yes
    [ -x "$QEMU" ] || { say "fsvmm: no qemu-system-x86_64 on the node"; fs_ok=no; }
    [ -f "$FS_INITRD" ] || { say "fsvmm: no bench guest (run.sh builds benches/fs-initrd.sh)"; fs_ok=no; }
    [ -f "$FILES_TAR" ] || { say "fsvmm: no 10k-files tar"; fs_ok=no; }
    [ -x "$VFSD" ] || { say "fsvmm: no $VFSD"; fs_ok=no; }
fi
if want fsvmm && [ $fs_ok = yes ]; then
    FSW=$W/fsvmm
    mkdir -p "$FSW/share"
    awk 'BEGIN { for (i = 0; i < 70000; i++) printf "%08d kata-rs bench: a 256 MiB file of numbered lines, not zeros.\n", i }' > "$FSW/block"
    i=0; while [ $i -lt 64 ]; do cat "$FSW/block"; i=$((i + 1)); done \
        | dd of="$FSW/share/read256" bs=1M count=256 iflag=fullblock 2>/dev/null
    rm -f "$FSW/block"
    cp "$FILES_TAR" "$FSW/share/files.tar"
    FS_NFILES=$(tar -tf "$FSW/share/files.tar" | grep -vc '/$')
    say "fsvmm: variants: $FSVMM_VARIANTS; $FSVMM_N round(s), untar time box ${FSVMM_SECS}s, $FS_NFILES files, guest $FS_MEM MiB 1 vCPU"
    cid=300 FSFAIL=0
    r=1
    while [ $r -le "$FSVMM_N" ]; do
        # alternate the order per round (reversed list on even rounds)
        order=$FSVMM_VARIANTS
        [ $((r % 2)) = 0 ] && order=$(for v in $FSVMM_VARIANTS; do echo "$v"; done | sed -n '1!G;h;$p')
        for v in $order; do
            name=${v%%:*} rest=${v#*:}; vmmk=${rest%%:*} rest=${rest#*:}; cache=${rest%%:*}
            knobs=; case $rest in *:*) knobs=${rest#*:} ;; esac
            cid=$((cid + 1))
            set -- $(fsvmm_run "$name" "$vmmk" "$cache" "$knobs" $cid)
            if [ "$1" = null ] || [ $# -lt 15 ]; then FSFAIL=$((FSFAIL + 1)); continue; fi
            say "run$r fsvmm $name ($vmmk, cache $cache${knobs:+, $knobs}): read 256 MiB $1 ms (${12} irqs); untar share $2 ms (from $3 files, ${13} irqs), rm $4 ms; untar tmpfs $5 ms (from $6 files); read tmpfs ${14} ms; read again ${15} ms; wall to end $7 ms; VMM cpu user $8 sys $9 guest ${10} ms; virtiofsd cpu ${11} ms"
            eval "FS_R_$name=\"\$FS_R_$name $1\" FS_U_$name=\"\$FS_U_$name $2\" FS_D_$name=\"\$FS_D_$name $4\" FS_T_$name=\"\$FS_T_$name $5\""
            eval "FS_VU_$name=\"\$FS_VU_$name $8\" FS_VS_$name=\"\$FS_VS_$name $9\" FS_VG_$name=\"\$FS_VG_$name ${10}\" FS_F_$name=\"\$FS_F_$name ${11}\""
            # interrupts per extracted file
            eval "FS_RT_$name=\"\$FS_RT_$name ${14}\" FS_R2_$name=\"\$FS_R2_$name ${15}\""
            eval "FS_RI_$name=\"\$FS_RI_$name ${12}\" FS_UI_$name=\"\$FS_UI_$name $(awk -v i=${13} -v n=$3 'BEGIN { printf "%.1f", n ? i / n : 0 }')\""
            fsvmm_emit false
        done
        r=$((r + 1))
    done
    fsvmm_emit true
    rm -rf "$FSW"
fi
# ---------------------------------------------------------------- template: cold boot vs restore from a snapshot
# Issue 14's targets at the VMM level. The agent guest of section 1 (1 vCPU, MEM MiB, console
# + hybrid vsock + rng). A template VM boots as the shim's factory makes one (the same
# configuration, --placeholder-slots 4, a control socket, --snapshot-root), and once its
# agent answers it is paused and saved twice (one snapshot for the map restores, one for the
# copy restores: the node's work directory is a tmpfs, where a map restore's read faults fill
# the memory file's holes, which would make later copies bigger). Then, per round (a warm-up
# + N, the order rotating): a cold boot (section 1's command line), `--restore S
# --restore-memory map` and `--restore S --restore-memory copy`, each timed from just before
# kata-vmm is spawned to the agent's first answer to a Check of a kata-agent-ctl started
# before it (see tstart: the same checker and retry pause for all three kinds). Memory:
# T_MEMN (3) VMs of each kind at once, idle, each with its agent answering, 2 s after the
# last answered: the PSS of each kata-vmm (smaps_rollup, guest RAM included: the map
# restores share the snapshot's page cache pages, PSS splits them) plus what its guest RAM
# memfd holds unmapped (a copy restore's copied pages the guest has not touched), mean per VM.
# With the shim's [factory] (TEMPLATE_CTR=1, default): ctr run --rm ... true with template =
# true (after a warm-up that makes the template) against the same with template = false.
if want template; then
    TW=$W/template TSNAPS=$W/template/snaps
    rm -rf "$TW"; mkdir -p "$TSNAPS"; chown 65534:65534 "$TSNAPS"
    TARGS="--kernel $KERNEL --initrd $INITRD --mem-mib $MEM --vcpus 1 --vsock-cid 60"
    # tstart KIND ID: starts one kata-vmm in the background (KIND cold|map|copy|template),
    # sets TPID and T0 (its start, /proc/uptime). The agent's checker (TCHK) is started
    # first and given time to come up: it polls for the VM's socket (every 10 ms) and then
    # tries Check every TRETRY_MS, as the shim would, so its own start (tens of ms on the
    # emulated node) is not in the time of either kind.
    TRETRY_MS=20
    tstart() {
        : > "$TW/c-$2.log"; rm -f "$TW/v-$2.sock" "$TW/a-$2.sock"
        case $1 in
            cold) set -- "$1" "$2" ;;
            map|copy) set -- "$1" "$2" --restore "$TSNAPS/$1" --restore-memory "$1" ;;
            template) set -- "$1" "$2" --placeholder-slots 4 --api-sock "$TW/a-$2.sock" --snapshot-root "$TSNAPS" ;;
        esac
        _k=$1 _i=$2; shift 2
        kata-agent-ctl --uds "$TW/v-$_i.sock" --timeout-secs 90 --retry-ms $TRETRY_MS check > "$TW/chk-$_i.out" 2>&1 &
        TCHK=$!
        sleep 0.3
        T0=$(now)
        kata-vmm $TARGS --vsock-uds "$TW/v-$_i.sock" --console-log "$TW/c-$_i.log" "$@" > "$TW/vmm-$_i.out" 2>&1 &
        TPID=$!
    }
    # tgone PID: true when process PID has ended (no /proc entry, or a zombie not yet reaped).
    # Builtins only (read, parameter expansion): kata-vmm's comm has no ") " in it.
    tgone() {
        [ -r "/proc/$1/stat" ] || return 0
        { read -r _st < "/proc/$1/stat"; } 2>/dev/null || return 0
        _st=${_st##*) }; _st=${_st%% *}
        [ "$_st" = Z ] || [ "$_st" = X ]
    }
    # twait KIND ID T0: sets TV to the ms from T0 to the agent's first answer (the checker
    # TCHK exits 0), or null (the checker gave up: 90 s; or kata-vmm TPID ended first). Not
    # in a subshell: it waits for a child of this shell. A watcher stops the checker as soon
    # as kata-vmm has ended (checked every 0.2 s), so a VMM that dies early fails at once,
    # not after the checker's 90 s; the time measured is still the checker's own exit.
    twait() {
        (while ! tgone "$TPID"; do sleep 0.2; done; kill -KILL "$TCHK" 2>/dev/null) &
        _tw=$!
        wait "$TCHK" 2>/dev/null    # (quiet: a shell says "Killed" when the watcher ended it)
        _rc=$?
        [ $_rc = 0 ] && TV=$(ms "$3" "$(now)")
        kill -KILL "$_tw" 2>/dev/null; wait "$_tw" 2>/dev/null
        [ $_rc = 0 ] && return
        if tgone "$TPID"; then
            wait "$TPID"
            say "template: $1 VM $2: kata-vmm exited (status $?) before its agent answered;" \
                "its stderr and last console lines:"
        else
            say "template: $1 VM $2 never answered ($(cat "$TW/chk-$2.out")); its stderr and last console lines:"
        fi
        sed 's/^/  vmm| /' "$TW/vmm-$2.out" >&2; tail -n 15 "$TW/c-$2.log" | sed 's/^/  console| /' >&2
        TV=null
    }
    # tstop ID PID: the agent's shutdown (its reboot ends kata-vmm), else SIGKILL.
    tstop() {
        kata-agent-ctl --uds "$TW/v-$1.sock" --timeout-secs 20 shutdown > /dev/null 2>&1
        _i=0; while kill -0 "$2" 2>/dev/null && [ $_i -lt 300 ]; do sleep 0.1; _i=$((_i + 1)); done
        kill -KILL "$2" 2>/dev/null; wait "$2" 2>/dev/null
        rm -f "$TW/v-$1.sock" "$TW/a-$1.sock"
    }
    TPL_OK=no
    tstart template tpl; tp=$TPID
    twait template tpl "$T0"; tms=$TV
    if [ "$tms" != null ] && "$VMM_API" "$TW/a-tpl.sock" pause snapshot "$TSNAPS/map" snapshot "$TSNAPS/copy" > "$TW/api.out" 2>&1; then
        TPL_OK=yes
        say "template: VM answered after $tms ms; snapshots: memory $(du -k "$TSNAPS/map/memory" | cut -f1) KiB on disk of $(($(stat -c %s "$TSNAPS/map/memory") / 1024)) KiB"
    else
        say "template: no snapshot (template VM answered: $tms ms; control socket client: ${VMM_API:-none}):"; sed 's/^/  api| /' "$TW/api.out" >&2 2>/dev/null
    fi
    kill -KILL $tp 2>/dev/null; wait $tp 2>/dev/null; rm -f "$TW/v-tpl.sock" "$TW/a-tpl.sock"
fi
if want template && [ $TPL_OK = yes ]; then
    TS_cold= TS_map= TS_copy= TFAIL=0
    i=0
    while [ $i -le "$N" ]; do
        case $((i % 3)) in 0) order="cold map copy" ;; 1) order="map copy cold" ;; *) order="copy cold map" ;; esac
        for k in $order; do
            tstart $k $k$i; p=$TPID
            twait $k $k$i "$T0"; v=$TV
            tstop $k$i $p
            tag=run$i; [ $i = 0 ] && tag=warm-up
            say "$tag template $k: agent answers after $v ms"
            [ "$v" = null ] && { TFAIL=$((TFAIL + 1)); continue; }
            [ $i = 0 ] && continue
            eval "TS_$k=\"\$TS_$k $v\""
        done
        i=$((i + 1))
    done
    # Memory: T_MEMN VMs of one kind at once, each answering, then their PSS.
    T_MEMN=3
    for k in cold map copy; do
        pids= j=1 ok=yes
        while [ $j -le $T_MEMN ]; do
            tstart $k m$k$j; pids="$pids $TPID"
            twait $k m$k$j "$T0"; [ "$TV" = null ] && ok=no
            j=$((j + 1))
        done
        sleep 2
        tot=0 rss=0 all=
        for p in $pids; do
            # PSS counts mapped pages only; a copy restore's guest RAM memfd also holds the
            # copied pages the guest has not touched yet (unmapped, still this VM's memory).
            set -- $(mem $p)
            _m=$(($2 + $(memfd_unmapped_kib $p "$3")))
            tot=$((tot + _m)); rss=$((rss + $1)); all="$all $_m"
        done
        if [ $ok = yes ]; then eval "TM_$k=$((tot / T_MEMN)) TR_$k=$((rss / T_MEMN)) TMS_$k=\"$all\""
        else eval "TM_$k=null TR_$k=null TMS_$k="; TFAIL=$((TFAIL + 1)); fi
        say "template: $T_MEMN $k VMs at once: PSS per VM $(eval echo \$TM_$k) KiB (each:$all), RSS per VM $(eval echo \$TR_$k) KiB"
        j=1; for p in $pids; do tstop m$k$j $p; j=$((j + 1)); done
    done
    tc=$(median $TS_cold) tm=$(median $TS_map) tcp=$(median $TS_copy)
    echo "BENCH-JSON template {\"node\":\"$KATA_RS_NODE_KIND\",\"n\":$N,\"mem_mib\":$MEM,\"criterion\":\"kata-vmm spawned to the agent's first answer (a kata-agent-ctl check started before, retrying every $TRETRY_MS ms)\"," \
        "\"start_ms_cold\":$tc,\"start_ms_map\":$tm,\"start_ms_copy\":$tcp," \
        "\"ratio_start_map\":$(ratio "$tm" "$tc"),\"ratio_start_copy\":$(ratio "$tcp" "$tc")," \
        "\"samples_start_ms_cold\":[$(list $TS_cold)],\"samples_start_ms_map\":[$(list $TS_map)],\"samples_start_ms_copy\":[$(list $TS_copy)]," \
        "\"mem_vms\":$T_MEMN,\"pss_kib_cold\":$TM_cold,\"pss_kib_map\":$TM_map,\"pss_kib_copy\":$TM_copy," \
        "\"rss_kib_cold\":$TR_cold,\"rss_kib_map\":$TR_map,\"rss_kib_copy\":$TR_copy," \
        "\"ratio_memory_map\":$(ratio "$TM_map" "$TM_cold"),\"ratio_memory_copy\":$(ratio "$TM_copy" "$TM_cold")," \
        "\"samples_pss_kib_cold\":[$(list $TMS_cold)],\"samples_pss_kib_map\":[$(list $TMS_map)],\"samples_pss_kib_copy\":[$(list $TMS_copy)]," \
        "\"snapshot_memory_disk_kib\":$(du -k "$TSNAPS/map/memory" | cut -f1),\"failed\":$TFAIL}"
fi
# The shim's template factory through containerd: ctr run --rm IMAGE true with a configuration
# with [factory] template = true against the node's own (templates off), one warm-up each (the
# template one boots cold and makes the template; its shim waits for it before exiting), then
# N each, alternating. The runs count as template starts only when containerd's log (where
# the shim's lines land) says "sandbox started from template" once per run.
if want template && [ "$TEMPLATE_CTR" = 1 ]; then
    TCONF=/etc/kata-rs/bench-template.toml TDIR=/var/lib/kata-rs/bench-templates
    rm -rf "$TDIR"
    kata_rs_config template_dir="$TDIR" restore_memory="$TEMPLATE_RMEM" > "$TCONF"
    # tctr MODE ID: wall ms of ctr run --rm (MODE tpl: with TCONF), or null.
    tctr() {
        _a=; [ "$1" = tpl ] && _a="--runtime-config-path $TCONF"
        _t=$(now)
        if timeout 400 ctr run --rm --runtime io.containerd.kata.v2 $_a "$IMG" "$2" true > "$W/ctr-$2.out" 2>&1; then
            ms "$_t" "$(now)"
        else
            say "template: ctr run ($1) failed:"; sed 's/^/  ctr| /' "$W/ctr-$2.out" >&2; echo null
        fi
    }
    from_tpl() { _c=$(grep -c 'sandbox started from template' "$KATA_RS_CONTAINERD_LOG" 2>/dev/null); echo "${_c:-0}"; }
    # kata_left: whether a kata process (shim, kata-vmm, virtiofsd) of an earlier run is left.
    kata_left() {
        for _n in containerd-shim-kata-v2 kata-vmm virtiofsd; do
            [ "$(kata_rs_count_procs "$_n")" = 0 ] || return 0
        done
        return 1
    }
    # Each timed run starts with no kata process of the one before left (ctr run --rm may
    # return before its shim, kata-vmm and virtiofsd are gone): no start pays another's
    # teardown. (Session 20: 1 s of waiting in all. A template start right after a cold one
    # stayed slower on the emulated node, 552-641 against 310-321 ms, with nothing left: not an
    # overlap; the rig after a whole guest boot, e.g. QEMU's translated-code cache.)
    TC_WAITED=0
    quiet_node() {
        _q=0
        while [ $_q -lt 300 ] && kata_left; do sleep 0.1; _q=$((_q + 1)); done
        TC_WAITED=$((TC_WAITED + _q))
    }
    TC_tpl= TC_cold= TCFAIL=0
    i=0
    while [ $i -le "$N" ]; do
        if [ $((i % 2)) = 0 ]; then order="tpl cold"; else order="cold tpl"; fi
        for k in $order; do
            quiet_node
            f0=$(from_tpl)
            v=$(tctr $k bench-tpl-$k-$i)
            tag=run$i; [ $i = 0 ] && tag=warm-up
            f1=$(from_tpl)
            say "$tag template ctr run --rm ($k): $v ms$([ $k = tpl ] && echo ", from a template: $((f1 - f0))")"
            [ "$v" = null ] && { TCFAIL=$((TCFAIL + 1)); continue; }
            [ $i = 0 ] && continue
            if [ $k = tpl ]; then
                TC_tpl="$TC_tpl $v"; [ $((f1 - f0)) = 1 ] && TC_FROM=$((${TC_FROM:-0} + 1))
            else TC_cold="$TC_cold $v"; fi
        done
        if [ $i = 0 ]; then
            # the warm-up's shim waited for its template; a few seconds more at most
            j=0; while [ $j -lt 60 ] && ! ls "$TDIR" 2>/dev/null | grep -qE '^[0-9a-f]{16}-'; do sleep 1; j=$((j + 1)); done
            say "template: shim templates: $(ls "$TDIR" 2>/dev/null | tr '\n' ' ')"
        fi
        i=$((i + 1))
    done
    grep -E 'template|cold boot' "$KATA_RS_CONTAINERD_LOG" | grep -E 'level=(warning|error)' | tail -n 5 | cut -c1-400 | sed 's/^/  shim-log| /' >&2
    # The shims' own sandbox start (the VM up, its agent ready, the share and network set
    # up: "sandbox started from template KEY in N ms" / "by a cold boot in N ms") of the
    # timed runs above: the part of ctr run a template changes.
    # sandbox_ms KIND: the logged ms of runs bench-tpl-KIND-1..N.
    sandbox_ms() {
        _j=1
        while [ $_j -le "$N" ]; do
            grep -aF "sandbox=\\\"bench-tpl-$1-$_j\\\"" "$KATA_RS_CONTAINERD_LOG" \
                | sed -n 's/.*sandbox started [a-z ]*\(template [0-9a-f]*-[0-9a-z-]*\|a cold boot\) in \([0-9]*\) ms.*/\2/p' | head -n 1
            _j=$((_j + 1))
        done | tr '\n' ' '
    }
    SS_tpl=$(sandbox_ms tpl) SS_cold=$(sandbox_ms cold)
    say "template: shims' sandbox start (ms): template $SS_tpl; cold $SS_cold"
    say "template: waited $((TC_WAITED / 10)) s in all for earlier runs' kata processes to end"
    # Memory: T_MEMN idle sandboxes of each kind at once (ctr run -d IMAGE sleep), 2 s after
    # the last started: per sandbox, the PSS of every process of it (shim, kata-vmm, virtiofsd;
    # guest RAM shared between kata-vmm and virtiofsd is split between them, and pages of a
    # template's memory file between the VMs mapping them) plus what its guest RAM memfds hold
    # unmapped.
    # sandbox_kib ID: that sum for sandbox ID.
    sandbox_kib() {
        _t=0
        for _p in /proc/[0-9]*; do
            case "$({ tr '\0' ' ' < "$_p/cmdline"; } 2>/dev/null)" in
                *"/sandboxes/$1/"*|*containerd-shim-kata-v2*" -id $1 "*)
                    _pid=${_p#/proc/}
                    set -- "$1" $(mem "$_pid")
                    _r=$(awk '/^[0-9a-f]+-[0-9a-f]+ .*\/memfd:kata-vmm-ram/ { m = 1; next } /^[0-9a-f]+-[0-9a-f]+ / { m = 0 } m && $1 == "Rss:" { r += $2 } END { print r + 0 }' "/proc/$_pid/smaps" 2>/dev/null)
                    _t=$((_t + $3 + $(memfd_unmapped_kib "$_pid" "${_r:-0}"))) ;;
            esac
        done
        echo $_t
    }
    T_MEMN=3
    for k in tpl cold; do
        _a=; [ $k = tpl ] && _a="--runtime-config-path $TCONF"
        ids= ok=yes j=1
        while [ $j -le $T_MEMN ]; do
            _id=bench-mem-$k-$j; ids="$ids $_id"
            timeout 400 ctr run -d --runtime io.containerd.kata.v2 $_a "$IMG" "$_id" sleep 600 > "$W/ctr-$_id.out" 2>&1 < /dev/null \
                || { ok=no; say "template: ctr run -d $_id failed:"; sed 's/^/  ctr| /' "$W/ctr-$_id.out" >&2; }
            j=$((j + 1))
        done
        sleep 2
        tot=0 all=
        for _id in $ids; do _m=$(sandbox_kib "$_id"); tot=$((tot + _m)); all="$all $_m"; done
        if [ $ok = yes ]; then eval "SM_$k=$((tot / T_MEMN)) SMS_$k=\"$all\""
        else eval "SM_$k=null SMS_$k="; TCFAIL=$((TCFAIL + 1)); fi
        say "template: $T_MEMN idle sandboxes ($k) at once: PSS per sandbox $(eval echo \$SM_$k) KiB (each:$all)"
        for _id in $ids; do
            ctr task kill -s KILL "$_id" > /dev/null 2>&1
            _j=0; while [ $_j -lt 100 ] && ctr task ls 2>/dev/null | grep -q "^$_id .*RUNNING"; do sleep 0.2; _j=$((_j + 1)); done
            ctr task delete "$_id" > /dev/null 2>&1; ctr container delete "$_id" > /dev/null 2>&1
        done
    done
    mem_from=$(grep -ac 'sandbox started from template.*bench-mem-tpl-[0-9]' "$KATA_RS_CONTAINERD_LOG")
    [ "$mem_from" = "$T_MEMN" ] || { say "template: only $mem_from of $T_MEMN memory sandboxes from the template"; SM_tpl=null; }
    sst=$(median $SS_tpl) ssc=$(median $SS_cold)
    ctt=$(median $TC_tpl) ctc=$(median $TC_cold)
    # A ratio only when every timed template run started from the template.
    csr=null; [ "${TC_FROM:-0}" = "$N" ] && csr=$(ratio "$ctt" "$ctc")
    echo "BENCH-JSON template_ctr {\"n\":$N,\"restore_memory\":\"$TEMPLATE_RMEM\",\"command\":\"ctr run --rm --runtime io.containerd.kata.v2 [--runtime-config-path template=true] IMAGE ID true\"," \
        "\"start_ms_template\":$ctt,\"start_ms_cold\":$ctc,\"ratio\":$csr,\"from_template\":${TC_FROM:-0},\"failed_runs\":$TCFAIL," \
        "\"samples_ms_template\":[$(list $TC_tpl)],\"samples_ms_cold\":[$(list $TC_cold)]," \
        "\"sandbox_start_ms_template\":$sst,\"sandbox_start_ms_cold\":$ssc,\"ratio_sandbox_start\":$(ratio "$sst" "$ssc")," \
        "\"samples_sandbox_start_ms_template\":[$(list $SS_tpl)],\"samples_sandbox_start_ms_cold\":[$(list $SS_cold)]," \
        "\"mem_sandboxes\":$T_MEMN,\"sandbox_pss_kib_template\":$SM_tpl,\"sandbox_pss_kib_cold\":$SM_cold,\"ratio_sandbox_memory\":$(ratio "$SM_tpl" "$SM_cold")," \
        "\"samples_sandbox_pss_kib_template\":[$(list $SMS_tpl)],\"samples_sandbox_pss_kib_cold\":[$(list $SMS_cold)]}"
    rm -rf "$TDIR" "$TCONF"
fi
