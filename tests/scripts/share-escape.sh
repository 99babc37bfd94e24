# Escape attempts from the guest through the sandbox's virtio-fs share. A privileged kata
# container (guest root with CAP_SYS_ADMIN inside the VM) mounts the share itself
# (`mount -t virtiofs kata-rs`) next to the agent's mount. With virtiofsd --announce-submounts
# the kernel hands out the newest superblock of the tag, a submount (seen: the container's own
# rootfs), not the share root: `share-view=` says which; the share-root attempts run only when
# it is reachable (the host-side checks of volumes.sh cover the share root's ro mount). The
# read-only bind is also bound again and remounted rw in the guest, so that only the host can
# refuse its writes. Then it tries:
#   - symlinks in the share pointing to a host path (absolute, relative with many `..`), read
#     through the raw share and through its bind: they resolve in the guest, so they show the
#     container's decoy file of the same name, or ENOENT, never the host's secret;
#   - `..` from the share root and from deep inside the share;
#   - hard links from files outside the share (guest files) and across the share's mounts
#     (read-only bind -> writable bind, rootfs -> writable bind, -> share root);
#   - renames over the share root, of share-root entries and of the binds' mount points, a
#     file of the writable bind moved to the share root, removals of the share root and of
#     mount points;
#   - new files, directories, symlinks, FIFOs at the share root and in the container's own
#     directory of the share;
#   - writes into the read-only bind through the raw share path (write, append, create,
#     truncate, chmod, chown, utimes, unlink, rename, symlink, moving its file out).
# Each attempt prints `attempt| NAME refused rc=N MESSAGE` or `attempt| NAME SUCCEEDED ...`.
# Not asserted, printed for the record: a device node and a setuid-root file made by guest
# root in the writable bind, as the host sees them.
# The host then checks that the secret (a random marker in /etc/kata-rs-escape-secret) was
# never printed, and that the secret, the read-only source, the share root, the share's
# parent directory and the node's /etc are unchanged; nothing is left afterwards.
# tests/tests/volumes.rs (guest_cannot_escape_through_the_share) checks the markers.
R=io.containerd.kata.v2
W=$KATA_RS_WORK
T="timeout -k 30 150"
V=$W/esc
ID=esc
state_entries() { ls -A /run/kata-rs/sandboxes 2>/dev/null | wc -l; }
secs_since() { awk -v a="$1" -v b="$(kata_rs_uptime)" 'BEGIN { printf "%.1f", b - a }'; }
T_SCRIPT=$(kata_rs_uptime)
# What must not change: names in a directory; a file's content, link count, mode, owner, mtime.
names() { ls -A "$1" 2>&1 | tr '\n' ' '; }
fstate() { echo "$(md5sum < "$1" | cut -c1-12) $(stat -c '%h %a %u:%g %Y %s' "$1")"; }
same() { [ "$1" = "$2" ] && echo yes || echo "no(before:[$1]after:[$2])" | tr ' ' _; }

echo "== setup"
MARK=kata-rs-escape-$(cat /proc/sys/kernel/random/uuid)
echo "$MARK" > /etc/kata-rs-escape-secret
chmod 0600 /etc/kata-rs-escape-secret
mkdir -p "$V/ro" "$V/rw"
echo ro-original > "$V/ro/ro-file"
echo rw-original > "$V/rw/rw-file"
SECRET0=$(fstate /etc/kata-rs-escape-secret)
RO0="$(names "$V/ro") $(fstate "$V/ro/ro-file")"
ETC0=$(names /etc)

$T ctr run -d --privileged --runtime $R \
    --mount type=bind,src=$V/ro,dst=/x/ro,options=rbind:ro \
    --mount type=bind,src=$V/rw,dst=/x/rw,options=rbind:rw \
    "$KATA_RS_IMAGE" $ID sh -c 'while true; do sleep 1; done' 2>&1
rc=$?
echo "esc-run-rc=$rc"
[ $rc = 0 ] && kata_rs_wait_status $ID RUNNING 90
echo "esc-status=$(kata_rs_task_status $ID)"
S=$(kata_rs_share_dir $ID)
echo "share-dir=${S:-not-found}"
P=${S%/*}
SHARE0=$( [ -n "$S" ] && names "$S")
PARENT0=$( [ -n "$S" ] && names "$P")
echo "share-root-names=$SHARE0" | tr ' ' ,
echo "share-parent-names=$PARENT0" | tr ' ' ,

# The guest side: everything prints markers or `attempt| ` lines; NAME=guest-decoy|ENOENT|...
ESCAPE='
echo guest-decoy > /etc/kata-rs-escape-secret
M=/mnt/share
mkdir -p $M /mnt/robind
mount -t virtiofs kata-rs $M && echo mount=ok || echo mount=failed
# What the tag gives: the share root (<id>/rootfs inside), or, with virtiofsd
# --announce-submounts, the superblock of one of the share'"'"'s submounts (the kernel reuses
# the newest one for the tag), e.g. the container'"'"'s own rootfs.
if [ -d $M/'$ID'/rootfs ]; then view=share-root
elif [ -d $M/bin ] && [ -d $M/x/ro ]; then view=container-rootfs
else view="other:$(ls -A $M | head -n 5 | tr "\n" ,)"; fi
echo "share-view=$view"
C=$M/'$ID'
RO= RW=/x/rw
if [ $view = share-root ]; then
    f=$(find $M -maxdepth 4 -name ro-file 2>/dev/null | head -n 1); RO=${f%/*}
    f=$(find $M -maxdepth 4 -name rw-file 2>/dev/null | head -n 1); RW=${f%/*}
    [ -n "$RW" ] || RW=/x/rw
fi
echo "ro-raw=${RO:-not-reachable}"; echo "rw-raw=$RW"
# The read-only bind without the guest'"'"'s ro flag: a bind of it remounted rw in the guest, so
# only the host can refuse the writes.
mount --bind /x/ro /mnt/robind && mount -o remount,bind,rw /mnt/robind \
    && echo "ro-guest-rw-bind=$(grep " /mnt/robind " /proc/mounts | cut -d" " -f4 | cut -d, -f1)" \
    || echo "ro-guest-rw-bind=failed"
# rd NAME FILE: what reading FILE shows: its first line, ENOENT, or error:MESSAGE.
rd() {
    o=$(cat "$2" 2>&1); r=$?
    if [ $r = 0 ]; then v=$(echo "$o" | head -n 1)
    elif echo "$o" | grep -q "No such file"; then v=ENOENT
    else v="error:$o"; fi
    echo "$1=$(echo "$v" | tr " " _)"
    echo "read| $1: $o"
}
# a NAME CMD...: an attempt that must fail.
a() {
    n=$1; shift
    o=$("$@" 2>&1); r=$?
    o=$(echo "$o" | head -n 2 | tr "\n" " ")
    if [ $r = 0 ]; then echo "attempt| $n SUCCEEDED rc=0 $o"; else echo "attempt| $n refused rc=$r $o"; fi
}
# Symlinks to host paths, `..`: resolved by the guest.
ln -s /etc/kata-rs-escape-secret $RW/sl-abs
ln -s ../../../../../../../../../../etc/kata-rs-escape-secret $RW/sl-rel
rd symlink-abs $RW/sl-abs
rd symlink-rel $RW/sl-rel
rd symlink-bind /x/rw/sl-abs
rd dotdot-share $M/../../etc/kata-rs-escape-secret
rd dotdot-deep $M/x/rw/../../../../../../../etc/kata-rs-escape-secret
echo "dotdot-ls=$(cd $M && cd .. && cd .. && pwd)"
# Hard links out of the share and across its mounts.
a hardlink-guest-file ln /etc/kata-rs-escape-secret $RW/hl-guest
a hardlink-ro-to-rw ln /mnt/robind/ro-file $RW/hl-ro
a hardlink-rootfs-to-rw ln $M/bin/busybox $RW/hl-busybox
a hardlink-rw-to-share ln $RW/rw-file $M/hl-rw
a hardlink-dotdot ln $M/../../etc/passwd $RW/hl-passwd
# Renames over the share mount, removals of it and of the binds'"'"' mount points.
mkdir -p $RW/d1
a rename-over-share-mount mv -T $RW/d1 $M
a rmdir-share-mount rmdir $M
a rmdir-ro-mountpoint rmdir /mnt/robind
a rename-ro-mountpoint mv -T /mnt/robind $RW/stolen-mount
# The share root itself, when the tag reaches it.
if [ $view = share-root ]; then
    mkdir -p $RW/d2
    a rename-over-container-dir mv -T $RW/d2 $C
    a rename-share-entry mv $C $M/moved
    a rmdir-container-dir rmdir $C
    a rmdir-container-mounts-dir rmdir $C/mounts
    a create-root-file touch $M/new-file
    a create-root-dir mkdir $M/new-dir
    a create-root-symlink ln -s /etc $M/etc-link
    a create-root-fifo mknod $M/fifo p
    a create-container-dir-file touch $C/new-file
    a create-container-mounts-entry mkdir $C/mounts/99
    a rename-rw-file-to-root mv $RW/rw-file $M/rw-file
else
    echo "root-attempts=not-reachable"
fi
# The read-only bind, through the guest-rw bind and (if reachable) the raw share path.
for p in /mnt/robind $RO; do
    [ -f $p/ro-file ] || { echo "attempt| ro-path-$p refused rc=1 (no ro-file there)"; continue; }
    t=${p##*/}
    a ro-write-$t sh -c "echo pwned > $p/ro-file"
    a ro-append-$t sh -c "echo pwned >> $p/ro-file"
    a ro-create-$t touch $p/new
    a ro-truncate-$t truncate -s 0 $p/ro-file
    a ro-chmod-$t chmod 0666 $p/ro-file
    a ro-chown-$t chown 1000:1000 $p/ro-file
    a ro-utimes-$t touch -d "2000-01-01 00:00:00" $p/ro-file
    a ro-unlink-$t rm $p/ro-file
    a ro-rename-$t mv $p/ro-file $p/moved
    a ro-symlink-$t ln -s /etc/kata-rs-escape-secret $p/sl
    a ro-mkdir-$t mkdir $p/dir
done
# For the record (not escapes by themselves): what guest root leaves in a writable volume.
mknod $RW/dev-null c 1 3 2>/dev/null && echo "mknod-rw=created" || echo "mknod-rw=refused"
cp /bin/busybox $RW/suid 2>/dev/null && chmod 4755 $RW/suid 2>/dev/null && echo "setuid-rw=created" || echo "setuid-rw=refused"
umount /mnt/robind; umount $M && echo umount=ok
'
echo "== escape"
if [ "$(kata_rs_task_status $ID)" = RUNNING ]; then
    $T ctr task exec --exec-id escape $ID sh -c "$ESCAPE" > "$W/escape.out" 2>&1
    echo "esc-exec-rc=$?"
    sed 's/^/esc-/' "$W/escape.out"
    echo "esc-status-after=$(kata_rs_task_status $ID)"
else
    echo "esc-skipped=the privileged container did not start"
    : > "$W/escape.out"
    kata_rs_shim_warnings esc-why
fi

echo "== host"
echo "marker-printed=$(cat "$W/escape.out" "$KATA_RS_CONTAINERD_LOG" 2>/dev/null | grep -c "$MARK")"
echo "secret-intact=$(same "$SECRET0" "$(fstate /etc/kata-rs-escape-secret)")"
echo "ro-intact=$(same "$RO0" "$(names "$V/ro") $(fstate "$V/ro/ro-file")")"
if [ -n "$S" ]; then
    echo "share-root-unchanged=$(same "$SHARE0" "$(names "$S")")"
    echo "share-parent-unchanged=$(same "$PARENT0" "$(names "$P")")"
else
    echo "share-root-unchanged=share-not-found"
    echo "share-parent-unchanged=share-not-found"
fi
echo "etc-unchanged=$(same "$ETC0" "$(names /etc)")"
ls -la "$V/rw" | sed 's/^/rw-after| /'
echo "rw-device-node=$( [ -c "$V/rw/dev-null" ] && echo yes || echo no)"
echo "rw-setuid-root=$( [ -u "$V/rw/suid" ] && [ "$(stat -c %u "$V/rw/suid" 2>/dev/null)" = 0 ] && echo yes || echo no)"

echo "== after"
kata_rs_stop_task $ID
rc=$?; [ $rc = 3 ] && echo "esc-delete-rc=no-task" || echo "esc-delete-rc=$rc"
ctr container rm $ID > /dev/null 2>&1
kata_rs_wait_procs containerd-shim-kata-v2 0 30
echo "tasks=$(ctr task ls -q | wc -l)"
echo "state=$(state_entries)"
echo "after-mounts=$(kata_rs_mount_count)"
echo "after-virtiofsd=$(kata_rs_count_procs virtiofsd)"
echo "after-share=$( [ -n "$S" ] && [ -e "$S" ] && echo exists || echo gone)"
rm -f /etc/kata-rs-escape-secret
kata_rs_leftovers
echo "leftovers-rc=$?"
echo "total-seconds=$(secs_since "$T_SCRIPT")"
