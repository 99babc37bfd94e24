# The VMM's own contract, without agent or shim: a missing or corrupt kernel is exit 1 with
# one "kata-vmm: error: ..." line naming it; with KATA_VMM_TEST_FORBIDDEN_SYSCALL=1 the VMM
# makes a syscall its seccomp filter forbids and dies of SIGSYS (shell status 159); the guest
# kernel boots to /init (a test guest that prints a marker and sleeps); SIGTERM ends kata-vmm
# with exit 0; a guest that activates no virtio device gets its vCPU's state logged
# (--boot-watch-secs); with arguments, tests/scripts/vmm-fs.sh runs here too (virtio-fs through
# virtiofsd). Checked by tests/tests/vmm.rs.
LOG=$KATA_RS_WORK/vmm-boot-console.log
secs() { awk -v a="$1" -v b="$(kata_rs_uptime)" 'BEGIN { printf "%.1f", b - a }'; }

echo "== missing-kernel"
timeout 60 kata-vmm --kernel /nonexistent/kata-rs/vmlinux-missing --initrd "$KATA_RS_HANG_INITRD" \
    --mem-mib 256 --vcpus 1 --vsock-cid 8 --console-log "$LOG" > out 2>&1
echo "missing-kernel-rc=$?"
sed 's/^/missing-kernel| /' out

echo "== corrupt-kernel"
# An ELF vmlinux cut short and a file that is no kernel at all: exit 1, one line naming it.
head -c 4096 "$KATA_RS_SHARE/vmlinux" > vmlinux-cut
printf 'not a kernel at all\n' > not-a-kernel
for k in vmlinux-cut not-a-kernel; do
    timeout 60 kata-vmm --kernel "$PWD/$k" --initrd "$KATA_RS_HANG_INITRD" \
        --mem-mib 256 --vcpus 1 --vsock-cid 8 --console-log "$LOG" > out 2>&1
    echo "corrupt-$k-rc=$?"
    sed "s/^/corrupt-$k| /" out
done

echo "== sigsys"
# The hook fires right after the main thread's filter is in: the process dies at once. A VMM
# that survives it would run the sleeping guest forever; give it 60 s.
: > "$LOG"
KATA_VMM_TEST_FORBIDDEN_SYSCALL=1 kata-vmm --kernel "$KATA_RS_SHARE/vmlinux" \
    --initrd "$KATA_RS_HANG_INITRD" --mem-mib 256 --vcpus 1 --vsock-cid 10 \
    --console-log "$LOG" > out 2>&1 &
VPID=$!
kata_rs_wait_exit $VPID 60 sigsys-rc
sed 's/^/sigsys| /' out
dmesg 2>/dev/null | grep -E 'type=1326|sig=31' | tail -n 2 | sed 's/^/sigsys-dmesg| /'

echo "== boot"
: > "$LOG"
t0=$(kata_rs_uptime)
kata-vmm --kernel "$KATA_RS_SHARE/vmlinux" --initrd "$KATA_RS_HANG_INITRD" \
    --mem-mib 256 --vcpus 1 --vsock-cid 9 --console-log "$LOG" > out 2>&1 &
VPID=$!
init=no i=0
while [ $i -lt 1800 ] && kill -0 $VPID 2>/dev/null; do
    if grep -q 'kata-rs-test: hang guest /init running' "$LOG"; then init=yes; break; fi
    sleep 0.1; i=$((i + 1))
done
echo "guest-init=$init"
echo "guest-init-seconds=$(secs "$t0")"
kill -TERM $VPID
kata_rs_wait_exit $VPID 30 sigterm-rc
sed 's/^/boot| /' out
tail -n 10 "$LOG" | sed 's/^/console| /'

echo "== boot-watch"
# A guest whose virtio-mmio driver never loads (initcall_blacklist) activates no device:
# with --boot-watch-secs 2, kata-vmm logs where its vCPU is at 2 s and at 4 s, and the VM runs
# on (the hang guest still reaches /init); SIGUSR1 logs it once more.
: > "$LOG"
kata-vmm --kernel "$KATA_RS_SHARE/vmlinux" --initrd "$KATA_RS_HANG_INITRD" \
    --mem-mib 256 --vcpus 1 --vsock-cid 11 --console-log "$LOG" --boot-watch-secs 2 \
    --cmdline initcall_blacklist=virtio_mmio_init > out 2>&1 &
VPID=$!
init=no i=0
while [ $i -lt 1800 ] && kill -0 $VPID 2>/dev/null; do
    if grep -q 'kata-rs-test: hang guest /init running' "$LOG" && [ "$(grep -c 'guest not up' out)" -ge 2 ]; then
        init=yes; break
    fi
    sleep 0.1; i=$((i + 1))
done
echo "watch-guest-init=$init"
# SIGUSR1 (what the shim sends when an agent never answers): the same sample, on request.
kill -USR1 $VPID
i=0
until grep -q 'vCPU state (SIGUSR1)' out || [ $i -ge 100 ]; do sleep 0.1; i=$((i + 1)); done
kill -TERM $VPID
kata_rs_wait_exit $VPID 30 watch-sigterm-rc
sed 's/^/watch| /' out
# virtio-fs on the same node boot (args: VIRTIOFSD FS_INITRD VMM_FS_SCRIPT, see vmm-fs.sh).
if [ $# -ge 3 ]; then . "$KATA_RS_PAYLOAD/extra$3"; fi
kata_rs_leftovers
echo "leftovers-rc=$?"
