#!/bin/busybox sh
# /init of the emulated node VM (tests/node-run packs it into the node's initramfs).
# Busybox ash, PID 1. Kernel console = ttyS0; the test script's stdout/stderr go to ttyS1/ttyS2
# (through FIFOs, so the script sees pipes, not a tty); one status line goes to ttyS3.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
bb=/bin/busybox

if [ "$1" != stage2 ]; then
    # The initramfs rootfs cannot be pivot_root'ed (runc needs that): copy it onto a real
    # tmpfs and switch_root there.
    $bb mkdir -p /proc /newroot
    $bb mount -t proc proc /proc
    $bb mount -t tmpfs -o mode=0755 noderoot /newroot
    for e in /*; do case $e in /proc|/newroot) ;; *) $bb cp -a "$e" /newroot/ ;; esac; done
    $bb mkdir -p /newroot/proc
    $bb umount /proc
    exec $bb switch_root /newroot /init stage2
    echo "node-init: switch_root failed"; exec $bb sh
fi

$bb --install -s
log() { echo "node-init: $*"; }
up() { cut -d' ' -f1 /proc/uptime; }
report() {
    [ -z "$HB" ] || kill "$HB" 2>/dev/null
    echo "KATA-RS-NODE-STATUS rc=$1 boot=${T0:-0} end=$(up)" > /dev/ttyS3
    sync; poweroff -f; sleep 10
}
fail() { log "FATAL: $*"; echo "node-run: node setup failed: $*" > /dev/ttyS2; report 125; }

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm /run /tmp /var/tmp /var/lib /root /sys/fs/cgroup /etc
mount -t devpts -o gid=5,mode=0620,ptmxmode=0666 devpts /dev/pts
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /dev/shm
mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs /run
mount -t cgroup2 cgroup2 /sys/fs/cgroup || fail "cgroup2 mount failed"
chmod 1777 /tmp /var/tmp
ln -sf /proc/self/fd /dev/fd; ln -sf /proc/self/fd/0 /dev/stdin
ln -sf /proc/self/fd/1 /dev/stdout; ln -sf /proc/self/fd/2 /dev/stderr
ln -sf /proc/mounts /etc/mtab
hostname kata-rs-node
ip link set lo up 2>/dev/null

while read -r ko; do [ -n "$ko" ] && { insmod "$ko" || log "insmod $ko failed"; }; done < /node/modules.list
[ -c /dev/kvm ] || fail "no /dev/kvm in the node (kvm_amd did not load)"
[ -c /dev/vhost-vsock ] || fail "no /dev/vhost-vsock in the node"

# The payload (containerd, our artifacts, the image, the script) is an ext4 virtio-blk disk.
i=0; dev=
while [ $i -lt 100 ] && [ -z "$dev" ]; do
    for d in /sys/block/vd*; do [ "$(cat $d/serial 2>/dev/null)" = kata-rs-payload ] && dev=/dev/${d##*/}; done
    [ -n "$dev" ] || { sleep 0.1; i=$((i + 1)); }
done
[ -n "$dev" ] || fail "payload disk not found"
mkdir -p /payload && mount -t ext4 -o ro "$dev" /payload || fail "cannot mount payload $dev"

for t in ttyS1 ttyS2 ttyS3; do stty -F /dev/$t raw -echo 2>/dev/null; done
# Heartbeat on the status port: node-run ends a node whose heartbeat stops (a wedged node).
( while :; do echo "KATA-RS-NODE-ALIVE uptime=$(up)" > /dev/ttyS3; sleep 10; done ) & HB=$!
mkfifo /run/node-stdout /run/node-stderr
cat /run/node-stdout > /dev/ttyS1 & P1=$!
cat /run/node-stderr > /dev/ttyS2 & P2=$!
T0=$(up)
log "payload mounted, running node-side at uptime ${T0}s"
( export KATA_RS_NODE_KIND=emulated KATA_RS_PAYLOAD=/payload KATA_RS_WORK=/var/lib/knode HOME=/root
  cd /tmp && exec sh /payload/harness/node-side.sh ) < /dev/null > /run/node-stdout 2> /run/node-stderr
RC=$?
log "node-side exited $RC at uptime $(up)s"
( sleep 5; kill $P1 $P2 2>/dev/null ) & W=$!
wait $P1 $P2 2>/dev/null
kill $W 2>/dev/null
report $RC
