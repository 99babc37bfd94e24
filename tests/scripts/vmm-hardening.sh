# What a hostile guest can make the host do, bounded (issue 11): a privileged kata container
# makes the serial console device (mknod /dev/kt-ttyS0 c 4 64) and floods it with fake
# "Kernel panic - not syncing" lines, and the host checks what a user would see:
#   - the console log stays under its cap (runtime.console_log_max_kib = 64 here) and the rate
#     limit (console_log_rate_kib = 1: the emulated node's serial port moves ~6 KB/s) dropped
#     the excess; the log is in /var/log/kata-rs/console
#     (0700), mode 0600;
#   - the container and its VM keep running and exec still works (the fake panic text does
#     not end the VM: before issue 11 kata-vmm exited with status 2 five seconds after it);
#   - the VMM's /proc/PID/limits shows RLIMIT_FSIZE/NOFILE/NPROC, its /proc/PID/status is
#     root's although it runs as its jail uid (non-dumpable, with fs.suid_dumpable=1 set on the
#     node, which the uid change would otherwise turn into "dumpable"), and /proc/PID/fd holds
#     only what a VMM needs (no fd of the shim or containerd);
#   - a normal stop (SIGKILL of the container, delete) gives the container's status 137 and the
#     VMM exit status 0, and nothing is left (processes, mounts, sockets, the console log).
# Markers: tests/tests/hardening.rs.
R=io.containerd.kata.v2
W=$KATA_RS_WORK
T="timeout -k 30 180"
ID=hard
MAX_KIB=64
RATE_KIB=1
DIR=/var/log/kata-rs/console
LOG=$DIR/$ID.log
secs() { cut -d. -f1 /proc/uptime; }

echo "== setup"
{ kata_rs_config; printf '[runtime]\nconsole_log_max_kib = %s\nconsole_log_rate_kib = %s\n' $MAX_KIB $RATE_KIB; } > /etc/kata-rs/hardening.toml
OLD_DUMP=$(cat /proc/sys/fs/suid_dumpable)
echo 1 > /proc/sys/fs/suid_dumpable
echo "suid-dumpable=$(cat /proc/sys/fs/suid_dumpable)"

$T ctr run -d --privileged --runtime $R --runtime-config-path /etc/kata-rs/hardening.toml \
    "$KATA_RS_IMAGE" $ID sh -c 'while true; do sleep 1; done' < /dev/null 2>&1
echo "run-rc=$?"
kata_rs_wait_status $ID RUNNING 120
echo "status-before=$(kata_rs_task_status $ID)"
PID=$(ctr task ls 2>/dev/null | awk -v id=$ID '$1 == id { print $2 }')
echo "vmm-comm=$(cat /proc/$PID/comm 2>/dev/null)"

echo "== console-dir"
echo "console-dir-mode=$(stat -c %a $DIR 2>/dev/null)"
echo "console-log-mode=$(stat -c %a $LOG 2>/dev/null)"
echo "console-log-owner=$(stat -c %u:%g $LOG 2>/dev/null)"
echo "console-log-fs=$(stat -f -c %T $DIR 2>/dev/null)"
echo "old-console-dir=$([ -e /run/kata-rs/console/$ID.log ] && echo used || echo unused)"

echo "== limits"
grep -E '^Max (file size|open files|processes)' /proc/$PID/limits | sed 's/^/limits| /'
lim() { awk -v k="$1" 'index($0, k) == 1 { n = split(substr($0, length(k) + 1), f, " "); print f[1] "/" f[2] }' /proc/$PID/limits; }
echo "limit-fsize=$(lim 'Max file size')"
echo "limit-nofile=$(lim 'Max open files')"
echo "limit-nproc=$(lim 'Max processes')"
echo "vmm-threads=$(awk '/^Threads:/ { print $2 }' /proc/$PID/status)"
echo "vmm-uid=$(awk '/^Uid:/ { print $2 }' /proc/$PID/status)"
echo "proc-status-owner=$(stat -c %u:%g /proc/$PID/status)"
echo "proc-dir-owner=$(stat -c %u:%g /proc/$PID)"

echo "== fds"
# Every fd of the VMM: what it points to. Expected: 0/1 /dev/null, 2 a pipe (stderr to the
# shim), then KVM and anon inodes, the console log, guest RAM memfds and Unix sockets of its
# own (the vsock listener and connections in the sandbox's state dir, the unnamed vhost-user
# connection to virtiofsd). A socket's path comes from the host's /proc/net/unix.
unexpected=0; total=0
for f in /proc/$PID/fd/*; do
    n=${f##*/}; t=$(readlink "$f" 2>/dev/null) || continue
    total=$((total + 1))
    ok=no
    case "$n:$t" in
        0:/dev/null|1:/dev/null|2:pipe:*) ok=yes ;;
        [0-2]:*) ok=no ;;
        *:anon_inode:*|*/dev/kvm|*:/memfd:*|*/$ID.log) ok=yes ;;
        *:socket:*)
            ino=${t#socket:[}; ino=${ino%]}
            path=$(awk -v i="$ino" '$7 == i { print $8 }' /proc/net/unix)
            case $path in ""|/run/kata-rs/sandboxes/$ID/*) ok=yes ;; esac
            t="$t path=${path:-none}" ;;
    esac
    echo "fd| $n $t $ok"
    [ $ok = yes ] || unexpected=$((unexpected + 1))
done
echo "fd-total=$total"
echo "fd-unexpected=$unexpected"

echo "== flood"
# 64 KiB chunks of fake panic lines into the serial console device: 320 KiB (5 times the
# console log's 64 KiB cap; the test needs 4), in at most BUDGET s.
BUDGET=90
FLOOD='
yes "Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000009 (fake, printed by a container)" | head -c 65536 > /tmp/chunk
mknod /dev/kt-ttyS0 c 4 64 || { echo mknod=failed; exit 9; }
echo mknod=ok
end=$(( $(date +%s) + '$BUDGET' )); n=0
while [ $n -lt 327680 ] && [ $(date +%s) -lt $end ]; do
    cat /tmp/chunk > /dev/kt-ttyS0 || { echo write=failed; break; }
    n=$((n + 65536))
done
echo flood-bytes=$n
'
T0=$(secs)
timeout -k 10 $((BUDGET + 60)) ctr task exec --exec-id flood $ID sh -c "$FLOOD" > "$W/flood.out" 2>&1
echo "flood-rc=$?"
echo "flood-secs=$(( $(secs) - T0 ))"
sed 's/^/flood| /' "$W/flood.out"
grep -E '^(mknod|flood-bytes|write)=' "$W/flood.out"
# Before issue 11 the VMM ended the VM 5 s after the first fake panic line; give it time.
sleep 8
echo "status-after=$(kata_rs_task_status $ID)"
echo "vmm-alive=$(kill -0 $PID 2>/dev/null && echo yes || echo no)"
echo "exec-after=$($T ctr task exec --exec-id alive $ID sh -c 'echo alive' 2>&1)"
# A real guest kernel oops (not console text) ends the VM at once: panic_on_oops is on.
echo "guest-panic-on-oops=$($T ctr task exec --exec-id oops $ID cat /proc/sys/kernel/panic_on_oops 2>&1)"
# The tail is written at most a second after the guest went quiet.
sleep 2
echo "console-log-size=$(stat -c %s $LOG 2>/dev/null)"
echo "console-log-cap-line=$(grep -c 'kata-vmm: console log cap reached' $LOG 2>/dev/null)"
echo "console-log-rate-notes=$(grep -c 'console bytes dropped by the rate limit' $LOG 2>/dev/null)"
echo "console-log-agent-ready=$(grep -c 'kata-rs-agent: ready' $LOG 2>/dev/null)"
echo "console-log-fake-lines=$(grep -c 'fake, printed by a container' $LOG 2>/dev/null)"
tail -c 240 $LOG 2>/dev/null | od -c | sed 's/^/console-tail| /'
echo "disk-free-kib=$(df -k $DIR | awk 'NR == 2 { print $4 }')"

echo "== stop"
# Past the window in which a guest stop right after console panic text is labelled a panic.
sleep 10
$T ctr task kill -s KILL $ID 2>&1
kata_rs_wait_status $ID STOPPED 60
# ctr task delete says "task ID exit with non-zero exit code N" (nothing for 0).
DEL=$($T ctr task delete $ID 2>&1)
echo "delete-rc=$?"
echo "$DEL" | sed 's/^/delete| /'
echo "container-exit=$(echo "$DEL" | sed -n 's/.*exit with non-zero exit code \([0-9]*\).*/\1/p' | grep . || echo 0)"
$T ctr container delete $ID 2>&1
grep -F "pid=$PID" "$KATA_RS_CONTAINERD_LOG" | grep -oE 'VMM (exited with status [0-9]+|was killed by signal [0-9]+)' | tail -n 1 \
    | sed -e 's/.* status /status-/' -e 's/.* signal /signal-/' -e 's/^/vmm-exit=/'
grep -F "pid=$PID" "$KATA_RS_CONTAINERD_LOG" | grep -oE 'console log: received=[0-9]+ rate_dropped=[0-9]+ cap_left_out=[0-9]+ write_errors=[0-9]+' | tail -n 1 | sed 's/^/summary| /'
S=$(grep -F "pid=$PID" "$KATA_RS_CONTAINERD_LOG" | grep -oE 'console log: received=[0-9]+ rate_dropped=[0-9]+ cap_left_out=[0-9]+ write_errors=[0-9]+' | tail -n 1)
for k in received rate_dropped cap_left_out write_errors; do
    echo "log-$k=$(echo "$S" | sed -n "s/.*$k=\([0-9]*\).*/\1/p")"
done
grep -F "pid=$PID" "$KATA_RS_CONTAINERD_LOG" | grep -c 'guest console printed' | sed 's/^/panic-hint-lines=/'
echo "console-log-left=$([ -e $LOG ] && echo yes || echo no)"
echo $OLD_DUMP > /proc/sys/fs/suid_dumpable
kata_rs_leftovers > "$W/left"; r=$?
sed 's/^/leftovers| /' "$W/left"
echo "leftovers-rc=$r"
