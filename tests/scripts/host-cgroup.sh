# The sandbox's host cgroup (issue 11): the shim, kata-vmm and virtiofsd of a sandbox run in
# the cgroup its spec names (linux.cgroupsPath), so the pod's cgroup accounts and bounds them.
#   == plain: `ctr run` with containerd's own cgroupsPath (/<namespace>/<id>): where the
#      sandbox's host processes are, and that the cgroup is gone after delete.
#   == pod: a kubelet-style pod cgroup made beforehand with a memory limit, the sandbox under
#      it (`ctr run --cgroup <pod>/<id>`, the path CRI gives a pod sandbox): the processes in
#      it, the pod's memory.current against the VMM's and virtiofsd's RSS; then the guest
#      fills memory beyond the pod's limit: the host OOM-kills inside the pod cgroup, the
#      task ends, delete works, nothing is left.
#   == lost-shim: SIGKILL of the shim of a sandbox; containerd's cleanup (the shim's
#      `delete`) empties and removes the sandbox's cgroup.
#   == cancelled-create: containerd gives up on a Create (ctr --timeout) while the VM boots:
#      the shim finishes and undoes it (or rolls it back), nothing is left.
# Checked by tests/tests/host_cgroup.rs.
R=io.containerd.kata.v2
W=$KATA_RS_WORK
T="timeout -k 30 150"
CG=/sys/fs/cgroup
NS=${CONTAINERD_NAMESPACE:-kata-rs-test}
POD=/$NS/podcg
POD_MAX_MIB=${1:-200}
FILL_MIB=${2:-380}
cg_of() { sed -n 's/^0:://p' "/proc/$1/cgroup" 2>/dev/null; }
# names_in CGROUP: the names (comm) of the processes in CGROUP, sorted, comma-separated,
# each once; procs_in CGROUP: every process as PID:comm:state.
names_in() {
    for _p in $(cat "$CG$1/cgroup.procs" 2>/dev/null); do cat "/proc/$_p/comm" 2>/dev/null; done \
        | sort -u | tr '\n' ',' | sed 's/,$//'
}
procs_in() {
    for _p in $(cat "$CG$1/cgroup.procs" 2>/dev/null); do
        echo "$_p:$(cat "/proc/$_p/comm" 2>/dev/null):$(awk '/^State:/ { print $2 }' "/proc/$_p/status" 2>/dev/null)"
    done | tr '\n' ' '
}
# Anonymous + shared memory (guest RAM is a memfd with --fs) that the process itself made and
# its cgroup is charged for; not its file-backed pages (its binary's text may be charged to the
# cgroup of whichever process read it first, so VmRSS can exceed the pod's memory.current).
rss_kib() { awk '/^(RssAnon|RssShmem):/ { s += $2 } END { print s + 0 }' "/proc/$1/status" 2>/dev/null; }
gone() { [ -d "$CG$1" ] && echo present || echo gone; }
t0=$(kata_rs_uptime)

echo "== plain"
$T ctr run -d --runtime $R "$KATA_RS_IMAGE" cg1 sh -c 'while true; do sleep 1; done' < /dev/null 2>&1
kata_rs_wait_status cg1 RUNNING 120
echo "plain-status=$(kata_rs_task_status cg1)"
VMM=$(kata_rs_pids kata-vmm | head -n 1)
PLAIN=$(cg_of "$VMM")
echo "plain-vmm-cgroup=$PLAIN"
echo "plain-procs=$(names_in "$PLAIN")"
echo "plain-procs-all=$(procs_in "$PLAIN" | tr ' ' ',')"
echo "shim-cgroup=$(cg_of "$(kata_rs_pids containerd-shim-kata-v2 | head -n 1)")"
echo "virtiofsd-cgroup=$(cg_of "$(kata_rs_pids virtiofsd | head -n 1)")"
# The shim's own ttrpc socket (its address is in the bundle).
SOCK=$(sed 's|^unix://||' "$W/state/io.containerd.runtime.v2.task/$NS/cg1/address" 2>/dev/null)
echo "shim-socket-mode=$(stat -c %a "$SOCK" 2>/dev/null || echo "none($SOCK)")"
kata_rs_stop_task cg1 > /dev/null
ctr container rm cg1
echo "plain-after=$(gone "$PLAIN")"

echo "== pod"
# What the kubelet does before RunPodSandbox: the pod cgroup, memory controller on, a limit.
echo +memory > $CG/cgroup.subtree_control
mkdir -p "$CG/$NS" && echo +memory > "$CG/$NS/cgroup.subtree_control"
mkdir -p "$CG$POD"
echo $((POD_MAX_MIB * 1048576)) > "$CG$POD/memory.max"
echo "pod-memory-max-mib=$POD_MAX_MIB"
# A guest big enough to exceed the pod's limit from inside.
kata_rs_config mem_mib=512 > /etc/kata-rs/podcg.toml
$T ctr run -d --runtime $R --runtime-config-path /etc/kata-rs/podcg.toml --cgroup "$POD/sb2" \
    "$KATA_RS_IMAGE" sb2 sh -c 'while true; do sleep 1; done' < /dev/null 2>&1
kata_rs_wait_status sb2 RUNNING 120
echo "pod-status=$(kata_rs_task_status sb2)"
VMM=$(kata_rs_pids kata-vmm | head -n 1)
FSD=$(kata_rs_pids virtiofsd | head -n 1)
echo "pod-vmm-cgroup=$(cg_of "$VMM")"
echo "pod-procs=$(names_in "$POD/sb2")"
# The processes' memory first, the cgroup's after: the running guest keeps touching pages,
# so a cgroup read first can be a few pages behind (CI once saw 60 KiB).
echo "vmm-rss-kib=$(rss_kib "$VMM")"
echo "virtiofsd-rss-kib=$(rss_kib "$FSD")"
echo "pod-memory-kib=$(($(cat "$CG$POD/memory.current") / 1024))"
echo "pod-oom-kill-before=$(awk '$1 == "oom_kill" { print $2 }' "$CG$POD/memory.events")"
# The guest touches FILL_MIB of anonymous memory (dd's buffer): guest RAM the host must back.
$T ctr task exec --exec-id fill sb2 dd if=/dev/zero of=/dev/null bs=${FILL_MIB}M count=1 > "$W/fill.out" 2>&1 < /dev/null
echo "fill-rc=$?"
sed 's/^/fill| /' "$W/fill.out"
kata_rs_wait_status sb2 STOPPED 60
echo "pod-status-after-fill=$(kata_rs_task_status sb2)"
echo "pod-oom-kill=$(awk '$1 == "oom_kill" { print $2 }' "$CG$POD/memory.events")"
echo "pod-memory-peak-kib=$(($(cat "$CG$POD/memory.peak" 2>/dev/null || echo 0) / 1024))"
echo "vmm-alive=$(kill -0 "$VMM" 2>/dev/null && echo yes || echo no)"
kata_rs_stop_task sb2 > "$W/rm.out" 2>&1
echo "pod-delete-rc=$?"
sed 's/^/pod-delete| /' "$W/rm.out"
ctr container rm sb2
kata_rs_wait_procs kata-vmm 0 30
echo "pod-sandbox-after=$(gone "$POD/sb2")"
echo "pod-parent-after=$(gone "$POD")"
rmdir "$CG$POD"

echo "== lost-shim"
$T ctr run -d --runtime $R "$KATA_RS_IMAGE" cg3 sleep 100000 < /dev/null 2>&1
kata_rs_wait_status cg3 RUNNING 120
LOST=$(cg_of "$(kata_rs_pids kata-vmm | head -n 1)")
echo "lost-cgroup=$LOST"
echo "lost-procs=$(names_in "$LOST")"
kill -KILL "$(kata_rs_pids containerd-shim-kata-v2)"
i=0; while [ "$(kata_rs_task_status cg3)" = RUNNING ] && [ $i -lt 300 ]; do sleep 0.2; i=$((i + 1)); done
st=$(kata_rs_task_status cg3)
echo "lost-status=${st:-gone}"
[ -z "$st" ] || ctr task rm cg3 > /dev/null 2>&1
ctr container rm cg3
kata_rs_wait_procs kata-vmm 0 30
echo "lost-after=$(gone "$LOST")"
[ -d "$CG$LOST" ] && echo "lost-left| procs=$(cat "$CG$LOST/cgroup.procs" | tr '\n' ' ') events=$(tr '\n' ' ' < "$CG$LOST/cgroup.events")"
grep -a 'host cgroup' "$KATA_RS_CONTAINERD_LOG" | tail -n 5 | cut -c1-400 | sed 's/^/lost-log| /'

echo "== cancelled-create"
# containerd gives up on Create (ctr's deadline, shorter than a boot on this node): the
# shim's Create runs on, then undoes itself; containerd shuts the shim down.
$T ctr --timeout 2s run -d --runtime $R "$KATA_RS_IMAGE" cc1 sleep 100000 < /dev/null > "$W/cc.out" 2>&1
echo "cancelled-run-rc=$?"
sed 's/^/cancelled| /' "$W/cc.out"
kata_rs_wait_procs containerd-shim-kata-v2 0 180
echo "cancelled-shims=$(kata_rs_count_procs containerd-shim-kata-v2)"
echo "cancelled-vmms=$(kata_rs_count_procs kata-vmm)"
echo "cancelled-task=$(kata_rs_task_status cc1)"
ctr task rm cc1 > /dev/null 2>&1
ctr container rm cc1 > /dev/null 2>&1
echo "cancelled-state=$(ls -A /run/kata-rs/sandboxes 2>/dev/null | tr '\n' ' ')"
echo "cancelled-cgroup=$(gone "/$NS/cc1")"
grep -aE 'cc1|abandoned' "$KATA_RS_CONTAINERD_LOG" | tail -n 12 | cut -c1-300 | sed 's/^/cancelled-log| /'

echo "== after"
kata_rs_leftovers
echo "leftovers-rc=$?"
echo "total-seconds=$(awk -v a="$t0" -v b="$(kata_rs_uptime)" 'BEGIN { printf "%.1f", b - a }')"
