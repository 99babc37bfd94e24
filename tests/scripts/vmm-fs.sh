# virtio-fs through kata-vmm alone (no agent, no shim): virtiofsd (run here as root,
# --sandbox namespace, --cache auto) shares a directory; kata-vmm (jailed, seccomp on: the
# defaults) gets `--fs socket=...,tag=kataShared`; the test guest (tests/image/fs-initrd.sh)
# mounts it, reads what the host wrote, writes files the host checks, remounts, prints
# `kt-fs: KEY=VALUE` on the console. Then virtiofsd is killed under the running VM: kata-vmm
# must log one warning and keep running until SIGTERM (exit 0). A socket nobody serves is
# exit 1 with one error line. Args: VIRTIOFSD INITRD (host paths, passed with
# KATA_RS_NODE_EXTRA). Standalone (`tests/node-run tests/scripts/vmm-fs.sh ...`) or sourced
# by vmm-boot.sh. Checked by tests/tests/vmm.rs.
VFSD=$KATA_RS_PAYLOAD/extra$1
FS_INITRD=$KATA_RS_PAYLOAD/extra$2
FSW=$KATA_RS_WORK/fs
mkdir -p "$FSW/shared"
FSLOG=$FSW/console.log
SOCK=$FSW/vfsd.sock

echo "== fs-no-backend"
timeout 60 kata-vmm --kernel "$KATA_RS_SHARE/vmlinux" --initrd "$FS_INITRD" --mem-mib 256 \
    --vcpus 1 --vsock-cid 12 --console-log "$FSLOG" --fs "socket=$FSW/nobody.sock,tag=kataShared" \
    > "$FSW/out" 2>&1
echo "fs-no-backend-rc=$?"
sed 's/^/fs-no-backend| /' "$FSW/out"

echo "== fs"
echo "written-by-the-host" > "$FSW/shared/host.txt"
head -c 1048576 /dev/urandom > "$FSW/shared/blob"
echo "fs-host-blob-sha256=$(sha256sum "$FSW/shared/blob" | cut -d' ' -f1)"
"$VFSD" --socket-path="$SOCK" --shared-dir="$FSW/shared" --sandbox=namespace --cache=auto \
    > "$FSW/vfsd.log" 2>&1 &
FPID=$!
i=0; while [ $i -lt 300 ] && [ ! -S "$SOCK" ]; do sleep 0.1; i=$((i + 1)); done
echo "fs-virtiofsd-listening=$([ -S "$SOCK" ] && echo yes || echo no)"
: > "$FSLOG"
KATA_VMM_DEBUG=1 kata-vmm --kernel "$KATA_RS_SHARE/vmlinux" --initrd "$FS_INITRD" --mem-mib 256 \
    --vcpus 2 --vsock-cid 13 --console-log "$FSLOG" --fs "socket=$SOCK,tag=kataShared" \
    > "$FSW/vmm.out" 2>&1 &
VPID=$!
done=no i=0
while [ $i -lt 3000 ] && kill -0 $VPID 2>/dev/null; do
    if grep -q 'kt-fs: done=yes' "$FSLOG"; then done=yes; break; fi
    sleep 0.1; i=$((i + 1))
done
echo "fs-guest-done=$done"
grep -a 'kt-fs: ' "$FSLOG" | sed 's/.*kt-fs: /fs-guest-/'
echo "fs-host-sees=$(cat "$FSW/shared/guest.txt" 2>/dev/null)"
echo "fs-host-guest-blob-size=$(wc -c < "$FSW/shared/guest-blob" 2>/dev/null)"
echo "fs-host-guest-file-owner=$(stat -c %u:%g "$FSW/shared/guest.txt" 2>/dev/null)"
st=/proc/$VPID/status
echo "fs-vmm-jailed=$(awk '$1 == "Uid:" { u = $2 } $1 == "Seccomp:" { s = $2 } END { print u "/" s }' $st 2>/dev/null)"
for t in /proc/$VPID/task/*; do
    echo "fs-vmm-task| $(cat $t/comm) $(awk '$1 == "Seccomp:" { print $2 }' $t/status)"
done

echo "== fs-backend-gone"
kill -KILL $FPID; wait $FPID 2>/dev/null
warned=no i=0
while [ $i -lt 100 ]; do
    if grep -q 'virtio-fs: the vhost-user backend closed its socket' "$FSW/vmm.out"; then warned=yes; break; fi
    sleep 0.1; i=$((i + 1))
done
echo "fs-backend-gone-warned=$warned"
sleep 1
echo "fs-vmm-alive-after-backend=$(kill -0 $VPID 2>/dev/null && echo yes || echo no)"
kill -TERM $VPID
kata_rs_wait_exit $VPID 30 fs-vmm-rc
sed 's/^/fs-vmm| /' "$FSW/vmm.out" | grep -v 'debug: exit\|debug: vCPU'
sed 's/^/fs-virtiofsd| /' "$FSW/vfsd.log" | tail -n 5
tail -n 5 "$FSLOG" | sed 's/^/fs-console| /'
