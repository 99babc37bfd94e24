# Host bind mounts (ctr run --mount type=bind,...) are live in the VM: kata-rs shares each
# container's root file system and bind-mount sources with the guest through virtio-fs (one
# share directory per sandbox, exported by virtiofsd; read-only binds are read-only bind
# mounts on the host too). runc is the reference for every check, in the same run.
#
# One long-running container per runtime (vol-runc, then vol-kata), whose main process is a
# watcher: it polls the binds every 0.1 s and, whenever a value changes, writes it to an
# ack file in the writable bind, so that the host measures with its own clock how long a
# host change takes to be seen in the container. In it:
#   - the same probe as runc (contents, modes, owners, mtimes, a symlink kept, EROFS on the
#     read-only binds, a write to the writable bind): output lines `runc| ` / `kata| `;
#   - a write in the container is on the host at once: after `ctr task exec` returned, and
#     while the writer still holds the file open (write-through, no guest write-back);
#   - a host write is seen in the container: a new file, and an in-place rewrite of a file
#     the container has read (a stale guest page cache would show the old content);
#   - read-only bind: the same operations fail with the same messages and statuses as under
#     runc (lines `runc-ro| ` / `kata-ro| `);
#   - ConfigMap-style update (kubelet's ..data symlink swap with ln -s + mv -T, the old data
#     dir removed after), the delay until the container sees the new value, and every value
#     the container saw on the way (never "missing");
#   - a big file, 256 MiB by default, 1 GiB with first argument 1024 (KATA_RS_VOL_BIG_MIB in
#     tests/tests/volumes.rs; sparse-ish: 4 MiB of numbered lines at every 64 MiB, holes
#     between, non-zero last bytes) reads back in the kata container with the host's md5
#     (runc too with KATA_RS_VOL_BIG_RUNTIMES="runc kata"). 1 GiB takes ~270 s through
#     virtio-fs on the emulated node, too long for every CI run;
#   - kata only: where the share is, and that the host-side binds in it are ro/rw as the spec
#     says (the sandbox shim's mount table).
# Then a missing and a device source fail clearly and leave nothing; a pod (CRI's sandbox
# /dev/shm bind; two containers binding one host directory, emptyDir-style: one writes, the
# other reads, both ways; the probe through a pod container); the pod VM's size from CRI's
# annotations; nothing left at the end (no task, sandbox state, kata-rs mount, kata-vmm or
# virtiofsd process, share directory). tests/tests/volumes.rs checks the markers.
R=io.containerd.kata.v2
W=$KATA_RS_WORK
T="timeout -k 30 150"
TBIG="timeout -k 30 900"
CT=io.kubernetes.cri.container-type
SB=io.kubernetes.cri.sandbox-id
V=$W/vol
# The runtimes that read the 1 GiB file: kata; the host's md5 is the reference (runc would
# read the same page cache as the host: +25 s on the emulated node for nothing new).
BIG_RUNTIMES=${KATA_RS_VOL_BIG_RUNTIMES:-kata}
BIG_MIB=${1:-256}
BIG_BYTES=$((BIG_MIB * 1048576))
state_entries() { ls -A /run/kata-rs/sandboxes 2>/dev/null | wc -l; }
secs_since() { awk -v a="$1" -v b="$(kata_rs_uptime)" 'BEGIN { printf "%.1f", b - a }'; }
ms_since() { awk -v a="$1" -v b="$(kata_rs_uptime)" 'BEGIN { printf "%d", (b - a) * 1000 + 0.5 }'; }
T_SCRIPT=$(kata_rs_uptime)

# wait_ack FILE WANT SECS: waits until FILE (an ack the watcher writes) holds WANT; prints the
# milliseconds since the caller's T0, or "timeout(FILE holds: ...)" after SECS.
wait_ack() {
    _i=0
    while [ $_i -lt $(($3 * 20)) ]; do
        if [ "$(cat "$1" 2>/dev/null)" = "$2" ]; then ms_since "$T0"; return 0; fi
        sleep 0.05; _i=$((_i + 1))
    done
    echo "timeout(${1##*/}-holds:$(cat "$1" 2>/dev/null | tr -c 'a-zA-Z0-9.\n-' _ | tr '\n' ' '))"
    return 1
}

# ---------------------------------------------------------------- host sources
# A file (0640, 1234:5678), a tree (modes, owners, a symlink pointing out of it, an
# executable), a writable directory, a ConfigMap-style directory, the 1 GiB file.
mkdir -p "$V/dir/sub" "$V/rw" "$V/cm" "$V/big" "$V/empty"
printf 'host-file-content\n' > "$V/file"
chown 1234:5678 "$V/file"; chmod 0640 "$V/file"
printf 'tree-file\n' > "$V/dir/sub/f"
chown 1000:1000 "$V/dir/sub/f"; chmod 0600 "$V/dir/sub/f"
printf '#!/bin/sh\necho script-ran\n' > "$V/dir/run.sh"; chmod 0755 "$V/dir/run.sh"
chmod 0750 "$V/dir/sub"
ln -s /etc/passwd "$V/dir/link"
touch -d '2020-01-02 03:04:05' "$V/file" "$V/dir/sub/f"
ro_state() { echo "$(cat "$V/dir/run.sh" "$V/dir/sub/f" "$V/file" | md5sum | cut -c1-12),$(ls -A "$V/dir" | tr '\n' ,)"; }
echo "host-ro-initial=$(ro_state)"

echo "== big-file"
t=$(kata_rs_uptime)
awk 'BEGIN { for (i = 0; i < 70000; i++) printf "%08d kata-rs 1 GiB volume test line, not zeros: 0123456789abcdef\n", i }' > "$W/block"
r=0
while [ $r -lt $((BIG_MIB / 64)) ]; do
    { echo "region $r"; cat "$W/block"; } | dd of="$V/big/1g" bs=1M seek=$((r * 64)) count=4 iflag=fullblock conv=notrunc 2>/dev/null
    r=$((r + 1))
done
truncate -s $BIG_BYTES "$V/big/1g"
printf 'kata-rs-1GiB-end\n' | dd of="$V/big/1g" bs=1 seek=$((BIG_BYTES - 17)) conv=notrunc 2>/dev/null
echo "host-big-want-size=$BIG_BYTES"
rm -f "$W/block"
echo "host-big-size=$(stat -c %s "$V/big/1g")"
echo "host-big-kib-used=$(du -k "$V/big/1g" | cut -f1)"
echo "host-big-make-seconds=$(secs_since "$t")"
# The host's md5 (35 s on the emulated node) runs beside the runc checks; printed before kata's.
( t=$(kata_rs_uptime); m=$(md5sum < "$V/big/1g" | cut -d' ' -f1); echo "$m $(secs_since "$t")" > "$W/host-md5" ) &
MD5PID=$!

MOUNTS="--mount type=bind,src=$V/file,dst=/x/file,options=rbind:ro
        --mount type=bind,src=$V/dir,dst=/x/dir,options=rbind:ro
        --mount type=bind,src=$V/rw,dst=/x/rw,options=rbind:rw"
LIVE="--mount type=bind,src=$V/cm,dst=/x/cm,options=rbind:ro
      --mount type=bind,src=$V/big,dst=/x/big,options=rbind:ro"
PROBE='cat /x/file /x/dir/sub/f
stat -c "%n %a %u %g %s %Y" /x/file /x/dir/sub/f /x/dir/run.sh
stat -c "%n %a %u %g" /x/dir/sub
echo "link=$(readlink /x/dir/link)"
/x/dir/run.sh
echo x 2>/dev/null > /x/file && echo "file-write=ok" || echo "file-write=refused"
touch /x/dir/new 2>&1 | grep -q "Read-only file system" && echo "dir-write=EROFS" || echo "dir-write=other"
echo rw > /x/rw/new && cat /x/rw/new
grep " /x/file " /proc/mounts | grep -q " ro," && echo "file-mount=ro"'
# The watcher (the container's main process): every value change of the ConfigMap key, of
# a file the host creates and of a file the host rewrites goes to an ack file; every value
# of the key also to a history (an empty value = the key could not be read).
WATCH='cm=unset new=unset sh=unset
while true; do
    v=; read -r v 2>/dev/null < /x/cm/key
    if [ "$v" != "$cm" ]; then echo "${v:-<missing>}" >> /x/rw/.cm-history; echo "$v" > /x/rw/.ack-cm; cm=$v; fi
    v=; [ -e /x/rw/from-host ] && read -r v 2>/dev/null < /x/rw/from-host
    if [ "$v" != "$new" ]; then echo "$v" > /x/rw/.ack-new; new=$v; fi
    v=; read -r v 2>/dev/null < /x/rw/shared
    if [ "$v" != "$sh" ]; then echo "$v" > /x/rw/.ack-shared; sh=$v; fi
    sleep 0.1
done'
# The same operations on a read-only bind: each prints "NAME rc=STATUS OUTPUT".
RO_OPS='t() { n=$1; shift; o=$("$@" 2>&1); echo "$n rc=$? $o"; }
t create sh -c "echo x > /x/dir/new"
t append sh -c "echo x >> /x/dir/sub/f"
t truncate truncate -s 0 /x/dir/run.sh
t mkdir mkdir /x/dir/newdir
t rm rm -f /x/dir/run.sh
t rmdir rmdir /x/dir/sub
t rename mv /x/dir/run.sh /x/dir/run2.sh
t chmod chmod 0777 /x/dir/run.sh
t chown chown 1:1 /x/dir/run.sh
t touch touch /x/dir/run.sh
t symlink ln -s x /x/dir/newlink
t hardlink ln /x/dir/run.sh /x/dir/hard
t mknod mknod /x/dir/fifo p
t file-write sh -c "echo x > /x/file"
t file-rw-open dd if=/dev/null of=/x/file conv=notrunc
t still-there cat /x/dir/run.sh /x/dir/sub/f'

cm_reset() {
    rm -rf "$V/cm" && mkdir -p "$V/cm/..2026_01_01_00_00_00.000000001"
    echo cm-v1 > "$V/cm/..2026_01_01_00_00_00.000000001/key"
    ln -s ..2026_01_01_00_00_00.000000001 "$V/cm/..data"
    ln -s ..data/key "$V/cm/key"
}

# live_checks RT ID: the checks in the running container ID of runtime RT.
live_checks() {
    rt=$1 id=$2
    T0=$(kata_rs_uptime)
    echo "$rt-watcher-ms=$(wait_ack "$V/rw/.ack-shared" shared-v1 30)"
    [ $rt = kata ] && [ "$(kata_rs_task_status $id)" != RUNNING ] && kata_rs_shim_warnings kata-why

    # The probe: runc is the reference.
    $T ctr task exec --exec-id probe $id sh -c "$PROBE" > "$W/out-$rt" 2>&1
    rc=$?
    echo "$rt-rc=$rc"
    sed "s/^/$rt| /" "$W/out-$rt"
    [ $rc = 0 ] || [ $rt = runc ] || kata_rs_shim_warnings kata-why
    rm -f "$V/rw/new"

    if [ $rt = kata ]; then
        S=$(kata_rs_share_dir $id)
        echo "kata-share-dir=${S:-not-found}"
        echo "kata-virtiofsd-procs=$(kata_rs_count_procs virtiofsd)"
        # The mounts in the share: "NAME:ro|rw" for each host source, by the mount's root.
        if [ -n "$S" ]; then
            kata_rs_mountinfo_all > "$W/mi-kata"
            echo "kata-host-share-root=$(awk -v s="$S" '$5 == s { split($6, o, ","); print o[1]; f = 1; exit } END { if (!f) print "not-a-mount" }' "$W/mi-kata")"
            binds=
            for n in file dir rw cm big; do
                m=$(awk -v s="$S/" -v r="/vol/$n" 'index($5, s) == 1 && substr($4, length($4) - length(r) + 1) == r { split($6, o, ","); print o[1]; exit }' "$W/mi-kata")
                binds="$binds${binds:+,}$n:${m:-none}"
            done
            echo "kata-host-binds=$binds"
            awk -v s="$S" 'index($5, s) == 1 { print $5, $6, $4 }' "$W/mi-kata" | sed "s|$S|SHARE|" | sed 's/^/kata-share-mount| /'
        fi
    fi

    # A write in the container is on the host at once: after the exec returned...
    $T ctr task exec --exec-id write $id sh -c "echo written-in-$rt > /x/rw/from-ctr" 2>&1
    echo "$rt-ctr-write-on-host=$(cat "$V/rw/from-ctr" 2>&1 | tr ' ' _)"
    # ... and while the writer still holds the file open (its ack is written after the write).
    $T ctr task exec --exec-id open $id sh -c \
        'exec 3>> /x/rw/open-log; echo line1 >&3; echo opened > /x/rw/.ack-open; sleep 4; echo line2 >&3' > "$W/open-$rt" 2>&1 &
    OPID=$!
    T0=$(kata_rs_uptime)
    ack=$(wait_ack "$V/rw/.ack-open" opened 30)
    echo "$rt-open-write-on-host=$(cat "$V/rw/open-log" 2>/dev/null | tr '\n' ,)"
    echo "$rt-open-writer-ack-ms=$ack"
    kata_rs_wait_exit $OPID 60 $rt-open-exec-rc
    echo "$rt-open-write-after-close=$(cat "$V/rw/open-log" 2>/dev/null | tr '\n' ,)"

    # A host write is seen in the container: a new file, then a rewrite (same size) of a file
    # it has read already.
    T0=$(kata_rs_uptime); echo host-new-1 > "$V/rw/from-host"
    echo "$rt-host-new-seen-ms=$(wait_ack "$V/rw/.ack-new" host-new-1 10)"
    T0=$(kata_rs_uptime); echo shared-v2 > "$V/rw/shared"
    echo "$rt-host-rewrite-seen-ms=$(wait_ack "$V/rw/.ack-shared" shared-v2 10)"

    # Read-only bind: the same refusals as runc's.
    $T ctr task exec --exec-id ro $id sh -c "$RO_OPS" > "$W/ro-$rt" 2>&1
    echo "$rt-ro-exec-rc=$?"
    sed "s/^/$rt-ro| /" "$W/ro-$rt"
    echo "$rt-ro-host-intact=$(ro_state)"

    # ConfigMap-style update, as kubelet's atomic writer does it.
    T0=$(kata_rs_uptime)
    echo "$rt-configmap-initial-ms=$(wait_ack "$V/rw/.ack-cm" cm-v1 10)"
    mkdir "$V/cm/..2026_01_01_00_00_01.000000002"
    echo cm-v2 > "$V/cm/..2026_01_01_00_00_01.000000002/key"
    ln -s ..2026_01_01_00_00_01.000000002 "$V/cm/..data_tmp"
    T0=$(kata_rs_uptime)
    mv -T "$V/cm/..data_tmp" "$V/cm/..data"
    rm -rf "$V/cm/..2026_01_01_00_00_00.000000001"
    echo "$rt-configmap-update-ms=$(wait_ack "$V/rw/.ack-cm" cm-v2 10)"
    sleep 0.5
    echo "$rt-configmap-history=$(cat "$V/rw/.cm-history" 2>/dev/null | tr '\n' , | sed 's/,$//')"

    # The 1 GiB file.
    case " $BIG_RUNTIMES " in
    *" $rt "*)
        t=$(kata_rs_uptime)
        $TBIG ctr task exec --exec-id big $id sh -c \
            't0=$(cut -d" " -f1 /proc/uptime); echo "big-size=$(stat -c %s /x/big/1g)"; echo "big-md5=$(md5sum < /x/big/1g | cut -d" " -f1)"
             awk -v a="$t0" -v b="$(cut -d" " -f1 /proc/uptime)" "BEGIN { printf \"big-seconds=%.1f\n\", b - a }"' \
            > "$W/big-$rt" 2>&1
        echo "$rt-big-exec-rc=$?"
        sed "s/^/$rt-/" "$W/big-$rt"
        echo "$rt-big-exec-seconds=$(secs_since "$t")"
        ;;
    esac
}

for rt in runc kata; do
    if [ $rt = kata ]; then
        wait $MD5PID
        read -r m secs < "$W/host-md5"
        echo "host-big-md5=$m"
        echo "host-big-seconds=$secs"
    fi
    echo "== $rt"
    rm -rf "$V/rw" && mkdir -p "$V/rw"
    echo shared-v1 > "$V/rw/shared"
    cm_reset
    id=vol-$rt S=
    t=$(kata_rs_uptime)
    $T ctr run -d --runtime io.containerd.$rt.v2 $MOUNTS $LIVE "$KATA_RS_IMAGE" $id sh -c "$WATCH" 2>&1
    rc=$?
    echo "$rt-run-rc=$rc"
    [ $rc = 0 ] && kata_rs_wait_status $id RUNNING 90
    echo "$rt-status=$(kata_rs_task_status $id)"
    echo "$rt-start-seconds=$(secs_since "$t")"
    if [ "$(kata_rs_task_status $id)" = RUNNING ]; then
        live_checks $rt $id
    else
        echo "$rt-skipped=the container did not start: no check ran in it"
        [ $rt = runc ] || kata_rs_shim_warnings kata-why
    fi
    echo "$rt-status-after=$(kata_rs_task_status $id)"
    kata_rs_stop_task $id
    echo "$rt-delete-rc=$?"
    ctr container rm $id > /dev/null 2>&1
    if [ $rt = kata ]; then
        kata_rs_wait_procs containerd-shim-kata-v2 0 30
        echo "kata-after-delete-mounts=$(kata_rs_mount_count)"
        echo "kata-after-delete-share=$( [ -n "$S" ] && [ -e "$S" ] && echo exists || echo gone)"
        echo "kata-after-delete-virtiofsd=$(kata_rs_count_procs virtiofsd)"
    fi
done
echo "host-file-after=$(cat "$V/file")"

echo "== missing-source"
$T ctr run --rm --runtime $R --mount type=bind,src=/nonexistent/kata-rs-vol,dst=/x,options=rbind:ro \
    "$KATA_RS_IMAGE" vol-missing true 2>&1
echo "missing-rc=$?"
ctr container rm vol-missing > /dev/null 2>&1
echo "missing-vmms=$(kata_rs_count_procs kata-vmm)"
echo "missing-virtiofsd=$(kata_rs_count_procs virtiofsd)"
echo "missing-state=$(state_entries)"
echo "missing-mounts=$(kata_rs_mount_count)"

echo "== device-source"
$T ctr run --rm --runtime $R --mount type=bind,src=/dev/null,dst=/x,options=rbind \
    "$KATA_RS_IMAGE" vol-dev true 2>&1
echo "device-rc=$?"
ctr container rm vol-dev > /dev/null 2>&1
echo "device-vmms=$(kata_rs_count_procs kata-vmm)"
echo "device-virtiofsd=$(kata_rs_count_procs virtiofsd)"
echo "device-state=$(state_entries)"
echo "device-mounts=$(kata_rs_mount_count)"

echo "== pod"
# CRI's sandbox /dev/shm: a tmpfs on the node, bound into the pause and every container.
mkdir -p "$W/shm" && mount -t tmpfs -o size=1m shm "$W/shm"
$T ctr run -d --runtime $R --annotation $CT=sandbox --annotation $SB=vpod \
    --mount type=bind,src=$W/shm,dst=/dev/shm,options=rbind:ro:nosuid:nodev:noexec \
    "$KATA_RS_IMAGE" vpod sh -c 'while true; do sleep 1; done' 2>&1
rc=$?
echo "pod-sandbox-rc=$rc"
[ $rc = 0 ] && kata_rs_wait_status vpod RUNNING 90
pod_checks() {
    PID=$(ctr task ls 2>/dev/null | awk '$1 == "vpod" { print $2 }')
    NS="--with-ns network:/proc/$PID/ns/net --with-ns ipc:/proc/$PID/ns/ipc --with-ns uts:/proc/$PID/ns/uts"
    EMPTY="--mount type=bind,src=$V/empty,dst=/x/empty,options=rbind:rw"
    SHM="--mount type=bind,src=$W/shm,dst=/dev/shm,options=rbind:rw"
    $T ctr run -d --runtime $R --annotation $CT=container --annotation $SB=vpod $NS $MOUNTS $EMPTY $SHM \
        "$KATA_RS_IMAGE" vpc1 sh -c 'while true; do sleep 1; done' 2>&1
    rc1=$?
    echo "pod-c1-rc=$rc1"
    $T ctr run -d --runtime $R --annotation $CT=container --annotation $SB=vpod $NS $EMPTY $SHM \
        "$KATA_RS_IMAGE" vpc2 sh -c 'while true; do sleep 1; done' 2>&1
    rc2=$?
    echo "pod-c2-rc=$rc2"
    [ $rc1 = 0 ] && kata_rs_wait_status vpc1 RUNNING 60
    [ $rc2 = 0 ] && kata_rs_wait_status vpc2 RUNNING 60
    echo "pod-c1-status=$(kata_rs_task_status vpc1)"
    echo "pod-c2-status=$(kata_rs_task_status vpc2)"
    echo "pod-vmms=$(kata_rs_count_procs kata-vmm)"
    # virtiofsd runs as two processes (its sandboxed child serves): count the shares served.
    echo "pod-virtiofsd-shares=$(for p in $(kata_rs_pids virtiofsd); do tr '\0' '\n' < /proc/$p/cmdline | awk 'f { print; exit } $0 == "--shared-dir" { f = 1 }'; done | sort -u | wc -l)"
    $T ctr task exec --exec-id probe vpc1 sh -c "$PROBE" > "$W/out-pod" 2>&1
    rc=$?
    echo "pod-probe-rc=$rc"
    sed "s/^/pod| /" "$W/out-pod"
    [ $rc = 0 ] || kata_rs_shim_warnings pod-probe-why
    rm -f "$V/rw/new"
    # emptyDir-style: vpc1 writes, vpc2 reads (polling up to 2 s), then the other way round;
    # the host sees both files.
    # reader FILE: polls FILE for up to 2 s; prints its content and how long it waited.
    READER='i=0; t0=$(cut -d" " -f1 /proc/uptime)
    while [ $i -lt 40 ] && [ ! -s "$1" ]; do sleep 0.05; i=$((i + 1)); done
    echo "read=$(cat "$1" 2>&1 | tr " " _)"
    awk -v a="$t0" -v b="$(cut -d" " -f1 /proc/uptime)" "BEGIN { printf \"waited-ms=%d\n\", (b - a) * 1000 }"'
    $T ctr task exec --exec-id w vpc1 sh -c 'echo from-vpc1 > /x/empty/msg' 2>&1
    echo "pod-c1-write-rc=$?"
    $T ctr task exec --exec-id r vpc2 sh -c "$READER" reader /x/empty/msg 2>&1 | sed 's/^/pod-c2-/'
    $T ctr task exec --exec-id w vpc2 sh -c 'echo from-vpc2 > /x/empty/reply' 2>&1
    echo "pod-c2-write-rc=$?"
    $T ctr task exec --exec-id r vpc1 sh -c "$READER" reader /x/empty/reply 2>&1 | sed 's/^/pod-c1-/'
    echo "pod-emptydir-host=$(cat "$V/empty/msg" "$V/empty/reply" 2>&1 | tr '\n' ',' | sed 's/,$//')"
    $T ctr task exec --exec-id shm vpc1 sh -c \
        'echo "shm-fs=$(grep " /dev/shm " /proc/mounts | cut -d" " -f3)"; echo s > /dev/shm/t && echo "shm-write=ok"' 2>&1
    # Whether the pod's containers share /dev/shm (they do under runc: one host tmpfs). Not
    # asserted: kata-rs gives each container a tmpfs of its own.
    $T ctr task exec --exec-id shm vpc2 sh -c \
        'cat /dev/shm/t > /dev/null 2>&1 && echo "pod-shm-shared=yes" || echo "pod-shm-shared=no"' 2>&1
    pod_exec shm0 vpod 'echo "sandbox-shm-fs=$(grep " /dev/shm " /proc/mounts | cut -d" " -f3)"'
    # The pod VM without CRI's sizing annotations: the configured size (1 vCPU, 256 MiB).
    pod_exec size0 vpod 'echo "base-nproc=$(nproc)"; echo "base-memtotal-kb=$(awk "/^MemTotal:/ { print \$2 }" /proc/meminfo)"'
}
# pod_exec EXEC-ID TASK SCRIPT: `sh -c SCRIPT` in TASK; when it fails or times out, what
# the pod VM was doing (its vCPUs, via the VMM's SIGUSR1 report in the shim's log; the
# guest console; the node kernel) goes to stderr, so that a hang in CI can be told apart:
# a guest that stopped answering, or an agent that did.
pod_exec() {
    $T ctr task exec --exec-id "$1" "$2" sh -c "$3" 2>&1
    _rc=$?
    [ $_rc = 0 ] && return 0
    echo "pod-exec-$1-rc=$_rc"
    for _p in $(kata_rs_pids kata-vmm); do kill -USR1 "$_p" 2> /dev/null; done
    sleep 1
    kata_rs_diag "exec $1 in $2 ended with $_rc"
}
if [ "$(kata_rs_task_status vpod)" = RUNNING ]; then
    pod_checks
else
    echo "pod-skipped=the sandbox did not start: no pod container ran"
    kata_rs_shim_warnings pod-why
fi
for c in vpc1 vpc2 vpod; do
    kata_rs_stop_task $c
    echo "delete-$c-rc=$?"
done
ctr container rm vpc1 vpc2 vpod > /dev/null 2>&1
umount "$W/shm"

echo "== pod-size"
# CRI's pod resources on the sandbox container (containerd >= 1.6.7): the VM gets
# vcpus + ceil(quota/period) and memory_mib + the memory limit. Other io.kubernetes.cri.*
# annotations are fine.
$T ctr run -d --runtime $R --annotation $CT=sandbox --annotation $SB=spod \
    --annotation io.kubernetes.cri.sandbox-memory=134217728 \
    --annotation io.kubernetes.cri.sandbox-cpu-quota=150000 \
    --annotation io.kubernetes.cri.sandbox-cpu-period=100000 \
    --annotation io.kubernetes.cri.sandbox-cpu-shares=1536 \
    --annotation io.kubernetes.cri.sandbox-log-directory=/var/log/pods/x \
    "$KATA_RS_IMAGE" spod sh -c 'while true; do sleep 1; done' 2>&1
rc=$?
echo "sized-rc=$rc"
# What the shim saw when it failed (a VMM that died, a guest triple fault) goes in the output.
[ $rc = 0 ] || { kata_rs_shim_warnings sized; grep -a 'kata-vmm:' "$KATA_RS_CONTAINERD_LOG" | tail -n 10 | cut -c1-300 | sed 's/^/sized-vmm| /'; }
[ $rc = 0 ] && kata_rs_wait_status spod RUNNING 90
echo "sized-vmm-args=$(tr '\0' ' ' < /proc/$(ctr task ls | awk '$1 == "spod" { print $2 }')/cmdline | grep -o -- '--mem-mib [0-9]* --vcpus [0-9]*' | tr ' ' ,)"
$T ctr task exec --exec-id size1 spod sh -c \
    'echo "sized-nproc=$(nproc)"; echo "sized-memtotal-kb=$(awk "/^MemTotal:/ { print \$2 }" /proc/meminfo)"' 2>&1
kata_rs_stop_task spod
echo "delete-spod-rc=$?"
ctr container rm spod > /dev/null 2>&1
# Garbage from CRI: a clear error naming the annotation, nothing started.
$T ctr run -d --runtime $R --annotation $CT=sandbox --annotation $SB=gpod \
    --annotation io.kubernetes.cri.sandbox-memory=lots "$KATA_RS_IMAGE" gpod true 2>&1
echo "garbage-rc=$?"
ctr container rm gpod > /dev/null 2>&1
echo "garbage-vmms=$(kata_rs_count_procs kata-vmm)"

echo "== after"
kata_rs_wait_procs containerd-shim-kata-v2 0 30
echo "tasks=$(ctr task ls -q | wc -l)"
echo "state=$(state_entries)"
echo "after-mounts=$(kata_rs_mount_count)"
echo "after-virtiofsd=$(kata_rs_count_procs virtiofsd)"
echo "after-vmms=$(kata_rs_count_procs kata-vmm)"
echo "after-share=$( [ -n "${S:-}" ] && [ -e "$S" ] && echo exists || echo gone)"
kata_rs_leftovers
echo "leftovers-rc=$?"
echo "total-seconds=$(secs_since "$T_SCRIPT")"
