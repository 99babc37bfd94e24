# benches/node-bench.sh: runs ON the node (tests/node-run benches/node-bench.sh [N]); POSIX sh
# (busybox ash in the emulated node). benches/run.sh is the host side.
#
# 1. VMM boot: kata-vmm vs qemu-system-x86_64 -M microvm, same kernel + guest image, 1 vCPU,
#    256 MiB, serial console + vsock (+ virtio-rng: kata-vmm has one by default), one warm-up
#    boot each, then N boots each, interleaved (the order alternates). boot = VMM process start
#    -> "kata-rs-agent: ready" on the console; check = -> first successful kata-agent-ctl check.
#    Memory of the VMM process after the check: smaps_rollup Rss/Pss, and the same minus the
#    guest RAM mapping (the mapping(s) of exactly --mem-mib in /proc/PID/smaps).
# 2. Containers: ctr run --rm IMAGE true under io.containerd.kata.v2 and io.containerd.runc.v2,
#    N each, interleaved; then one "sleep" container per runtime: shim (+ kata-vmm) Pss.
# Results: lines "BENCH-JSON <name> {json}" on stdout (run.sh extracts them), plus
# "bench| ..." progress lines.
N=${1:-5}
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
median() { printf '%s\n' "$@" | sort -n | awk '{ v[NR] = $1 } END { if (NR == 0) print "null"; else if (NR % 2) print v[(NR + 1) / 2]; else printf "%d\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
list() { echo "$*" | tr ' ' ','; }
if [ "$KATA_RS_NODE_KIND" = native ]; then POLL=0.01 MAXPOLL=18000; else POLL=0.05 MAXPOLL=3600; fi

# mem PID: "rss pss guest_rss guest_pss guest_maps" in KiB (guest = mappings of exactly MEM MiB)
mem() {
    r=$(awk '$1 == "Rss:" { r = $2 } $1 == "Pss:" { p = $2 } END { print r + 0, p + 0 }' /proc/$1/smaps_rollup 2>/dev/null)
    g=$(awk -v m=$((MEM * 1024)) '$1 == "Size:" { s = $2 } $1 == "Rss:" { r = $2 }
        $1 == "Pss:" && s == m { gr += r; gp += $2; n++ } END { print gr + 0, gp + 0, n + 0 }' /proc/$1/smaps 2>/dev/null)
    echo "$r $g"
}
# pss of a list of PIDs (sum), KiB
pss_sum() { t=0; for p in "$@"; do v=$(awk '$1 == "Pss:" { print $2 }' /proc/$p/smaps_rollup 2>/dev/null); t=$((t + ${v:-0})); done; echo $t; }

# ---------------------------------------------------------------- 1. VMM boot
# boot KIND CID: prints "boot_ms check_ms rss pss guest_rss guest_pss guest_maps exit"
boot() {
    log=$W/console-$1-$2.log
    : > "$log"
    t0=$(now)
    if [ "$1" = ours ]; then
        kata-vmm --kernel "$KERNEL" --initrd "$INITRD" --mem-mib $MEM --vcpus 1 \
            --vsock-cid "$2" --console-log "$log" > "$W/vmm-$1-$2.out" 2>&1 &
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
    t1= i=0 cpu=
    while kill -0 $pid 2>/dev/null && [ $i -lt $MAXPOLL ]; do     # 180 s at most
        if grep -q 'kata-rs-agent: ready' "$log"; then
            t1=$(now); cpu=$(awk '{ print ($14 + $15) * 10 }' /proc/$pid/stat 2>/dev/null); break
        fi
        sleep $POLL; i=$((i + 1))
    done
    t2=
    if [ -n "$t1" ]; then
        i=0
        while [ $i -lt 100 ]; do
            if kata-agent-ctl --cid "$2" --timeout-secs 10 check > /dev/null 2>&1; then t2=$(now); break; fi
            sleep $POLL; i=$((i + 1))
        done
    fi
    sleep 0.5              # let the guest settle (agent up, no more page faults from boot)
    m=$(mem $pid)
    kata-agent-ctl --cid "$2" --timeout-secs 20 shutdown > /dev/null 2>&1
    i=0; while kill -0 $pid 2>/dev/null && [ $i -lt 300 ]; do sleep 0.1; i=$((i + 1)); done
    if kill -0 $pid 2>/dev/null; then kill -KILL $pid; wait $pid 2>/dev/null; rc=killed; else wait $pid; rc=$?; fi
    if [ -z "$t1" ]; then
        say "$1 boot (cid $2) did not reach agent-ready; last console lines:"
        sed '/Kernel panic/q' "$log" | grep -v '^ \|^[A-Z0-9]*: \|Call Trace\|TASK>' | tail -n 25 | sed 's/^/  console| /' >&2
        sed 's/^/  vmm| /' "$W/vmm-$1-$2.out" >&2
    fi
    b=null c=null u=null
    [ -n "$cpu" ] && u=$cpu
    [ -n "$t1" ] && b=$(ms "$t0" "$t1")
    [ -n "$t2" ] && c=$(ms "$t0" "$t2")
    echo "$b $c ${m:-0 0 0 0 0} $rc $u"
}

vmm_ok=yes
[ -x "$QEMU" ] || { say "no qemu-system-x86_64 on the node (run.sh passes it with KATA_RS_NODE_EXTRA)"; vmm_ok=no; }
for f in "$KERNEL" "$INITRD" /usr/local/bin/kata-vmm; do [ -e "$f" ] || { say "missing $f"; vmm_ok=no; }; done
if [ $vmm_ok = yes ]; then
    say "qemu: $("$QEMU" --version | head -n1)"
    cid=100
    U_OURS= U_QEMU= B_OURS= B_QEMU= C_OURS= C_QEMU= P_OURS= P_QEMU= R_OURS= R_QEMU= G_OURS= G_QEMU= RAW_OURS= RAW_QEMU= FAIL=0
    i=0
    while [ $i -le "$N" ]; do
        if [ $((i % 2)) = 0 ]; then order="ours qemu"; else order="qemu ours"; fi
        for k in $order; do
            cid=$((cid + 1))
            set -- $(boot $k $cid)
            # $1 boot $2 check $3 rss $4 pss $5 grss $6 gpss $7 maps $8 rc $9 cpu ms (user+sys+guest)
            tag=run$i; [ $i = 0 ] && tag=warm-up
            say "$tag $k: boot ${1} ms, check ${2} ms, rss $3 KiB, pss $4 KiB, guest mapping rss $5 pss $6 KiB ($7 mapping), exit $8, cpu $9 ms"
            [ "$1" = null ] && { FAIL=$((FAIL + 1)); continue; }
            [ $i = 0 ] && continue
            if [ $k = ours ]; then
                B_OURS="$B_OURS $1"; C_OURS="$C_OURS $2"; R_OURS="$R_OURS $(($3 - $5))"; P_OURS="$P_OURS $(($4 - $6))"
                G_OURS="$G_OURS $6"; RAW_OURS="$RAW_OURS $4"; U_OURS="$U_OURS $9"
            else
                B_QEMU="$B_QEMU $1"; C_QEMU="$C_QEMU $2"; R_QEMU="$R_QEMU $(($3 - $5))"; P_QEMU="$P_QEMU $(($4 - $6))"
                G_QEMU="$G_QEMU $6"; RAW_QEMU="$RAW_QEMU $4"; U_QEMU="$U_QEMU $9"
            fi
        done
        i=$((i + 1))
    done
    bo=$(median $B_OURS) bq=$(median $B_QEMU)
    ratio=$(awk -v a="$bo" -v b="$bq" 'BEGIN { if (a == "null" || b == "null" || b == 0) print "null"; else printf "%.3f", a / b }')
    echo "BENCH-JSON vmm {\"node\":\"$KATA_RS_NODE_KIND\",\"n\":$N,\"mem_mib\":$MEM,\"criterion\":\"VMM process start to 'kata-rs-agent: ready' on the console\"," \
        "\"boot_ms_ours\":$bo,\"boot_ms_qemu\":$bq,\"ratio\":$ratio," \
        "\"check_ms_ours\":$(median $C_OURS),\"check_ms_qemu\":$(median $C_QEMU),\"cpu_ms_ours\":$(median $U_OURS),\"cpu_ms_qemu\":$(median $U_QEMU)," \
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
    vmm=; vp=null; vg=null; vr=null
    if [ $1 = kata ]; then
        vmm=$(for p in /proc/[0-9]*; do c=$( { tr '\0' ' ' < $p/cmdline; } 2>/dev/null); e=${c%% *}; [ "${e##*/}" = kata-vmm ] && echo ${p#/proc/}; done | head -n1)
        if [ -n "$vmm" ]; then set -- $(mem $vmm); vp=$(($2 - $4)); vg=$2; vr=$(($1 - $3)); fi
    fi
    sp=$(pss_sum $shim)
    say "sleeping $rt container: shim pid(s) $shim pss $sp KiB${vmm:+; kata-vmm pid $vmm pss $vp KiB excl. guest RAM ($vg incl.), rss $vr KiB}"
    ctr task kill -s KILL $id > /dev/null 2>&1
    i=0; while [ $i -lt 300 ]; do ctr task ls 2>/dev/null | grep -q "^$id " || break; ctr task delete $id > /dev/null 2>&1; sleep 0.1; i=$((i + 1)); done
    ctr container rm $id > /dev/null 2>&1
    echo "$sp $vp $vg $vr"
}
set -- $(sleeper kata); KSHIM=$1 KVMM=$2 KVMMG=$3 KVMMR=$4
set -- $(sleeper runc); RSHIM=$1
tk=$(median $T_KATA) tr=$(median $T_RUNC)
cratio=$(awk -v a="$tk" -v b="$tr" 'BEGIN { if (a == "null" || b == "null" || b == 0) print "null"; else printf "%.3f", a / b }')
ktotal=$(awk -v a="$KSHIM" -v b="$KVMM" 'BEGIN { if (a == "null" || b == "null") print "null"; else print a + b }')
echo "BENCH-JSON containers {\"node\":\"$KATA_RS_NODE_KIND\",\"n\":$N,\"image\":\"$IMG\",\"command\":\"ctr run --rm --runtime R IMAGE ID true\"," \
    "\"start_ms_kata\":$tk,\"start_ms_runc\":$tr,\"ratio\":$cratio," \
    "\"kata_shim_pss_kib\":$KSHIM,\"kata_vmm_pss_kib\":$KVMM,\"kata_vmm_pss_incl_guest_kib\":$KVMMG,\"kata_vmm_rss_kib\":$KVMMR,\"kata_total_pss_kib\":$ktotal," \
    "\"runc_shim_pss_kib\":$RSHIM,\"failed_runs\":$CFAIL," \
    "\"samples_ms_kata\":[$(list $T_KATA)],\"samples_ms_runc\":[$(list $T_RUNC)]}"
