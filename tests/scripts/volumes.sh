# Host bind mounts (ctr run --mount type=bind,...) under runc and kata: kata-rs copies each
# bind-mount source (a file or a directory tree) into the guest once and binds the copy.
# The same probe runs in a container of each runtime; its output lines (prefixed `runc| `
# and `kata| `) must be identical: contents, modes, owners, mtimes, a symlink kept as a
# symlink, read-only binds refusing writes with EROFS, a writable bind taking a write.
# Then a missing source and a device source fail clearly and leave nothing; a pod (sandbox
# with CRI's /dev/shm bind + a pod container with binds through AddStorage) sees its
# copies and a tmpfs /dev/shm; nothing is left at the end. tests/tests/volumes.rs checks.
R=io.containerd.kata.v2
W=$KATA_RS_WORK
T="timeout -k 30 150"
CT=io.kubernetes.cri.container-type
SB=io.kubernetes.cri.sandbox-id
V=$W/vol
state_entries() { ls -A /run/kata-rs/sandboxes 2>/dev/null | wc -l; }

# Host sources: a file (0640, 1234:5678), a tree (modes, owners, a symlink pointing out of
# it, an executable), and a writable directory.
mkdir -p "$V/dir/sub" "$V/rw"
printf 'host-file-content\n' > "$V/file"
chown 1234:5678 "$V/file"; chmod 0640 "$V/file"
printf 'tree-file\n' > "$V/dir/sub/f"
chown 1000:1000 "$V/dir/sub/f"; chmod 0600 "$V/dir/sub/f"
printf '#!/bin/sh\necho script-ran\n' > "$V/dir/run.sh"; chmod 0755 "$V/dir/run.sh"
chmod 0750 "$V/dir/sub"
ln -s /etc/passwd "$V/dir/link"
touch -d '2020-01-02 03:04:05' "$V/file" "$V/dir/sub/f"
MOUNTS="--mount type=bind,src=$V/file,dst=/x/file,options=rbind:ro
        --mount type=bind,src=$V/dir,dst=/x/dir,options=rbind:ro
        --mount type=bind,src=$V/rw,dst=/x/rw,options=rbind:rw"
PROBE='cat /x/file /x/dir/sub/f
stat -c "%n %a %u %g %s %Y" /x/file /x/dir/sub/f /x/dir/run.sh
stat -c "%n %a %u %g" /x/dir/sub
echo "link=$(readlink /x/dir/link)"
/x/dir/run.sh
echo x 2>/dev/null > /x/file && echo "file-write=ok" || echo "file-write=refused"
touch /x/dir/new 2>&1 | grep -q "Read-only file system" && echo "dir-write=EROFS" || echo "dir-write=other"
echo rw > /x/rw/new && cat /x/rw/new
grep " /x/file " /proc/mounts | grep -q " ro," && echo "file-mount=ro"'

for rt in runc kata; do
    echo "== $rt"
    $T ctr run --rm --runtime io.containerd.$rt.v2 $MOUNTS "$KATA_RS_IMAGE" vol-$rt sh -c "$PROBE" \
        > "$W/out-$rt" 2>&1
    rc=$?
    echo "$rt-rc=$rc"
    sed "s/^/$rt| /" "$W/out-$rt"
    [ $rc = 0 ] || [ $rt = runc ] || kata_rs_shim_warnings $rt-why
    rm -f "$V/rw/new"
done
echo "host-file-after=$(cat "$V/file")"

echo "== missing-source"
$T ctr run --rm --runtime $R --mount type=bind,src=/nonexistent/kata-rs-vol,dst=/x,options=rbind:ro \
    "$KATA_RS_IMAGE" vol-missing true 2>&1
echo "missing-rc=$?"
ctr container rm vol-missing > /dev/null 2>&1
echo "missing-vmms=$(kata_rs_count_procs kata-vmm)"
echo "missing-state=$(state_entries)"

echo "== device-source"
$T ctr run --rm --runtime $R --mount type=bind,src=/dev/null,dst=/x,options=rbind \
    "$KATA_RS_IMAGE" vol-dev true 2>&1
echo "device-rc=$?"
ctr container rm vol-dev > /dev/null 2>&1
echo "device-vmms=$(kata_rs_count_procs kata-vmm)"
echo "device-state=$(state_entries)"

echo "== pod"
# CRI's sandbox /dev/shm: a tmpfs on the node, bound into the pause and every container.
mkdir -p "$W/shm" && mount -t tmpfs -o size=1m shm "$W/shm"
$T ctr run -d --runtime $R --annotation $CT=sandbox --annotation $SB=vpod \
    --mount type=bind,src=$W/shm,dst=/dev/shm,options=rbind:ro:nosuid:nodev:noexec \
    "$KATA_RS_IMAGE" vpod sh -c 'while true; do sleep 1; done' 2>&1
echo "pod-sandbox-rc=$?"
kata_rs_wait_status vpod RUNNING 60
$T ctr run -d --runtime $R --annotation $CT=container --annotation $SB=vpod $MOUNTS \
    --mount type=bind,src=$W/shm,dst=/dev/shm,options=rbind:rw \
    "$KATA_RS_IMAGE" vpc1 sh -c 'while true; do sleep 1; done' 2>&1
echo "pod-c1-rc=$?"
kata_rs_wait_status vpc1 RUNNING 60
echo "pod-c1-status=$(kata_rs_task_status vpc1)"
$T ctr task exec --exec-id probe vpc1 sh -c "$PROBE" > "$W/out-pod" 2>&1
rc=$?
echo "pod-probe-rc=$rc"
sed "s/^/pod| /" "$W/out-pod"
[ $rc = 0 ] || kata_rs_shim_warnings pod-probe-why
$T ctr task exec --exec-id shm vpc1 sh -c \
    'echo "shm-fs=$(grep " /dev/shm " /proc/mounts | cut -d" " -f3)"; echo s > /dev/shm/t && echo "shm-write=ok"' 2>&1
$T ctr task exec --exec-id shm0 vpod sh -c \
    'echo "sandbox-shm-fs=$(grep " /dev/shm " /proc/mounts | cut -d" " -f3)"' 2>&1
# The pod VM without CRI's sizing annotations: the configured size (1 vCPU, 256 MiB).
$T ctr task exec --exec-id size0 vpod sh -c \
    'echo "base-nproc=$(nproc)"; echo "base-memtotal-kb=$(awk "/^MemTotal:/ { print \$2 }" /proc/meminfo)"' 2>&1
for c in vpc1 vpod; do
    $T ctr task kill -s KILL $c 2>&1
    kata_rs_wait_status $c STOPPED 60
    $T ctr task delete $c 2>&1
    echo "delete-$c-rc=$?"
done
ctr container rm vpc1 vpod 2>&1
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
echo "sized-rc=$?"
kata_rs_wait_status spod RUNNING 60
echo "sized-vmm-args=$(tr '\0' ' ' < /proc/$(ctr task ls | awk '$1 == "spod" { print $2 }')/cmdline | grep -o -- '--mem-mib [0-9]* --vcpus [0-9]*' | tr ' ' ,)"
$T ctr task exec --exec-id size1 spod sh -c \
    'echo "sized-nproc=$(nproc)"; echo "sized-memtotal-kb=$(awk "/^MemTotal:/ { print \$2 }" /proc/meminfo)"' 2>&1
$T ctr task kill -s KILL spod 2>&1
kata_rs_wait_status spod STOPPED 60
$T ctr task delete spod 2>&1
echo "delete-spod-rc=$?"
ctr container rm spod 2>&1
# Garbage from CRI: a clear error naming the annotation, nothing started.
$T ctr run -d --runtime $R --annotation $CT=sandbox --annotation $SB=gpod \
    --annotation io.kubernetes.cri.sandbox-memory=lots "$KATA_RS_IMAGE" gpod true 2>&1
echo "garbage-rc=$?"
ctr container rm gpod > /dev/null 2>&1
echo "garbage-vmms=$(kata_rs_count_procs kata-vmm)"

echo "== after"
_i=0
while [ $_i -lt 150 ] && [ "$(kata_rs_count_procs containerd-shim-kata-v2)" != 0 ]; do sleep 0.2; _i=$((_i + 1)); done
echo "tasks=$(ctr task ls -q | wc -l)"
echo "state=$(state_entries)"
kata_rs_leftovers
echo "leftovers-rc=$?"
