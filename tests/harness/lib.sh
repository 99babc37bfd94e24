# Helpers for test scripts run by tests/node-run (sourced before the script; POSIX sh).
#
# Variables:
#   KATA_RS_NODE_KIND      native | emulated
#   CONTAINERD_ADDRESS, CONTAINERD_NAMESPACE   the private containerd (ctr uses them)
#   KATA_RS_IMAGE          kata-rs.local/busybox:latest (imported)
#   KATA_RS_SHARE          /usr/local/share/kata-rs (vmlinux, kata-rs-initrd.img)
#   KATA_RS_HANG_INITRD    a guest image whose /init sleeps forever (agent never answers)
#   KATA_RS_CONTAINERD_LOG containerd's log file (shim stderr ends up there too)
#   KATA_RS_WORK           private scratch directory of this node run
KATA_RS_IMAGE=kata-rs.local/busybox:latest
KATA_RS_SHARE=/usr/local/share/kata-rs
KATA_RS_HANG_INITRD=/usr/local/share/kata-rs-tests/hang-initrd.img

# kata_rs_config [KEY=VALUE...]: print a kata-rs configuration.toml. Keys (defaults):
#   vmm=/usr/local/bin/kata-vmm kernel=$KATA_RS_SHARE/vmlinux
#   initrd=$KATA_RS_SHARE/kata-rs-initrd.img mem_mib=256 vcpus=1
#   dial_timeout=120 (seconds; emulated nodes are slow)
#   template_dir=DIR (VM templates on, kept in DIR: a [factory] section; default off)
#   restore_memory=copy|map (with template_dir: factory.restore_memory; default the shim's)
kata_rs_config() {
    _vmm=/usr/local/bin/kata-vmm _kernel=$KATA_RS_SHARE/vmlinux
    _initrd=$KATA_RS_SHARE/kata-rs-initrd.img _mem=256 _vcpus=1 _dial=120 _tpl= _rmem=
    for _kv in "$@"; do
        case $_kv in
            vmm=*) _vmm=${_kv#*=} ;; kernel=*) _kernel=${_kv#*=} ;; initrd=*) _initrd=${_kv#*=} ;;
            mem_mib=*) _mem=${_kv#*=} ;; vcpus=*) _vcpus=${_kv#*=} ;; dial_timeout=*) _dial=${_kv#*=} ;;
            template_dir=*) _tpl=${_kv#*=} ;; restore_memory=*) _rmem=${_kv#*=} ;;
            *) echo "kata_rs_config: unknown key: $_kv" >&2; return 1 ;;
        esac
    done
    sed -e "s|@VMM@|$_vmm|g" -e "s|@KERNEL@|$_kernel|g" -e "s|@INITRD@|$_initrd|g" \
        -e "s|@MEM_MIB@|$_mem|g" -e "s|@VCPUS@|$_vcpus|g" -e "s|@DIAL_TIMEOUT@|$_dial|g" \
        /usr/local/share/kata-rs-tests/configuration.toml.in
    if [ -n "$_tpl" ]; then
        printf '[factory]\ntemplate = true\ntemplate_dir = "%s"\n' "$_tpl"
        [ -z "$_rmem" ] || printf 'restore_memory = "%s"\n' "$_rmem"
    fi
}

# kata_rs_leftovers: print every leftover kata-vmm / virtiofsd / containerd-shim-kata-v2 process, kata-rs
# mount (or a container rootfs still mounted in containerd's state dir), socket under
# /run/kata-rs, sandbox state directory, console log, containerd task bundle, tap or ingress
# qdisc (KATA_RS_TC: a tc that shows them, default busybox's) and host cgroup; return 1 if
# there is any, else print "leftovers: none" and return 0.
kata_rs_leftovers() {
    _n=0
    for _p in /proc/[0-9]*; do
        _cmd=$(cat "$_p/cmdline" 2>/dev/null | tr '\0' ' ')     # (it may have just exited)
        _exe=${_cmd%% *}; _exe=${_exe##*/}
        case $_exe in
            kata-vmm|virtiofsd|containerd-shim-kata-v2|containerd-shim-katabad-v2)
                echo "leftover process: ${_p#/proc/} $_cmd"; _n=$((_n + 1)) ;;
        esac
    done
    while read -r _src _mnt _fs _rest; do
        case $_mnt in
            *kata-rs*|*kata_rs*|"$KATA_RS_WORK"/state/*) echo "leftover mount: $_src on $_mnt ($_fs)"; _n=$((_n + 1)) ;;
        esac
    done < /proc/mounts
    if [ -d /run/kata-rs ]; then
        for _s in $(find /run/kata-rs -type s 2>/dev/null); do echo "leftover socket: $_s"; _n=$((_n + 1)); done
    fi
    # A sandbox's state directory, its console log (runtime.debug keeps it on purpose: a test
    # that sets it removes the log itself), containerd's bundle of a task.
    for _s in /run/kata-rs/sandboxes/* /var/log/kata-rs/console/* \
        "$KATA_RS_WORK/state/io.containerd.runtime.v2.task/${CONTAINERD_NAMESPACE:-kata-rs-test}"/*; do
        [ -e "$_s" ] || continue
        echo "leftover state: $_s"; _n=$((_n + 1))
    done
    # The pod network the shim makes in a network namespace: the tap and the ingress qdiscs
    # of its tc redirects (in the node's namespace and every named one).
    for _ns in "" /var/run/netns/*; do
        [ -z "$_ns" ] || [ -e "$_ns" ] || continue
        _in=${_ns:+nsenter --net=$_ns}
        $_in ip link show tap0_kata > /dev/null 2>&1 && { echo "leftover tap: tap0_kata in ${_ns:-the node}"; _n=$((_n + 1)); }
        _q=$($_in "${KATA_RS_TC:-tc}" qdisc show 2>/dev/null | grep -c 'qdisc ingress')
        [ "${_q:-0}" -eq 0 ] || { echo "leftover qdisc: $_q ingress in ${_ns:-the node}"; _n=$((_n + 1)); }
    done
    # Host cgroups: every leaf cgroup under kata-rs's default parent and under containerd's
    # namespace cgroup (ctr's /<namespace>/<id>, the CRI tests' pod parents) is a leftover
    # (runc and kata-rs both remove a sandbox's or container's cgroup at delete); the CRI
    # tests' pod parents themselves (cri-*) are kept, their children are not.
    for _r in /sys/fs/cgroup/kata-rs "/sys/fs/cgroup/${CONTAINERD_NAMESPACE:-kata-rs-test}"; do
        [ -d "$_r" ] || continue
        for _d in $(find "$_r" -mindepth 1 -type d 2>/dev/null); do
            [ -z "$(find "$_d" -mindepth 1 -maxdepth 1 -type d 2>/dev/null)" ] || continue
            case ${_d##*/} in cri-*) continue ;; esac
            echo "leftover cgroup: ${_d#/sys/fs/cgroup} (processes: $(tr '\n' ' ' < "$_d/cgroup.procs" 2>/dev/null))"
            _n=$((_n + 1))
        done
    done
    if [ $_n -gt 0 ]; then echo "leftovers: $_n"; return 1; fi
    echo "leftovers: none"
}

# kata_rs_wait_for FILE PATTERN SECONDS: wait until FILE contains PATTERN (grep -E); 1 on timeout.
kata_rs_wait_for() {
    _i=0
    while [ $_i -lt $(($3 * 10)) ]; do
        grep -qE "$2" "$1" 2>/dev/null && return 0
        sleep 0.1; _i=$((_i + 1))
    done
    return 1
}

# kata_rs_task_status ID: the task's status as `ctr task ls` shows it (RUNNING, STOPPED, ...).
kata_rs_task_status() { ctr task ls 2>/dev/null | awk -v id="$1" '$1 == id { print $3 }'; }

# kata_rs_deadline SECONDS: the uptime SECONDS from now; kata_rs_before DEADLINE: whether
# that time has not come yet. Waits are bounded by time, not by a count of tries: a try (a
# ctr call, a /proc scan) can take seconds on a loaded emulated node.
kata_rs_deadline() { awk -v s="$1" '{ printf "%.1f", $1 + s }' /proc/uptime; }
kata_rs_before() { awk -v d="$1" '{ exit !($1 < d) }' /proc/uptime; }

# kata_rs_template_key DIR: the name of the (one) VM template directory in DIR, empty if none.
kata_rs_template_key() { ls "$1" 2>/dev/null | grep -E '^[0-9a-f]{16}-[0-9]+m-[0-9]+c$' | head -n1; }
# kata_rs_wait_template DIR LOG SECS [KEY]: until a template in DIR (KEY's, or the one there
# is) has a state file bigger than 4 KiB (status 0); 1 after SECS, or at once when the shims'
# log LOG gains a "could not be made" line (e.g. a rig fault of the template VM).
kata_rs_wait_template() {
    _wt_end=$(kata_rs_deadline "$3")
    _wt_failed=$(grep -c 'could not be made' "$2")
    while kata_rs_before "$_wt_end"; do
        [ "$(grep -c 'could not be made' "$2")" -gt "$_wt_failed" ] && return 1
        _wt_k=${4:-$(kata_rs_template_key "$1")}
        if [ -n "$_wt_k" ] && [ "$(stat -c %s "$1/$_wt_k/state" 2>/dev/null || echo 0)" -gt 4096 ]; then
            return 0
        fi
        sleep 0.5
    done
    return 1
}

# kata_rs_wait_status ID STATUS SECONDS: wait until the task has STATUS; 1 on timeout.
kata_rs_wait_status() {
    _dl=$(kata_rs_deadline "$3")
    while :; do
        [ "$(kata_rs_task_status "$1")" = "$2" ] && return 0
        kata_rs_before "$_dl" || return 1
        sleep 0.2
    done
}

# kata_rs_stop_task ID: SIGKILL the task, wait until it is stopped, delete it (the status is
# `ctr task delete`'s); 3 if there is no task. Each ctr call is bounded by $T if set.
kata_rs_stop_task() {
    [ -n "$(kata_rs_task_status "$1")" ] || { echo "no task $1"; return 3; }
    ${T:-} ctr task kill -s KILL "$1" 2>&1
    kata_rs_wait_status "$1" STOPPED 60
    ${T:-} ctr task delete "$1" 2>&1
}

# kata_rs_count_procs NAME: how many processes have an argv[0] whose basename is NAME.
kata_rs_count_procs() {
    _n=0
    for _p in /proc/[0-9]*; do
        _c=$(tr '\0' ' ' 2>/dev/null < "$_p/cmdline")
        _e=${_c%% *}; _e=${_e##*/}
        [ "$_e" = "$1" ] && _n=$((_n + 1))
    done
    echo $_n
}

# kata_rs_wait_procs NAME COUNT SECONDS: wait until COUNT processes are NAME; 1 on timeout.
kata_rs_wait_procs() {
    _dl=$(kata_rs_deadline "$3")
    while :; do
        [ "$(kata_rs_count_procs "$1")" = "$2" ] && return 0
        kata_rs_before "$_dl" || return 1
        sleep 0.2
    done
}

# kata_rs_wait_exit PID SECS MARKER: waits up to SECS for the background job PID (a child of
# this shell) to end and prints MARKER=<its exit status>; if it is still running then, prints
# MARKER=still-running and SIGKILLs it.
kata_rs_wait_exit() {
    _i=0
    while kill -0 "$1" 2>/dev/null && [ $_i -lt $(($2 * 10)) ]; do sleep 0.1; _i=$((_i + 1)); done
    if kill -0 "$1" 2>/dev/null; then
        echo "$3=still-running"; kill -KILL "$1"; wait "$1" 2>/dev/null
    else
        wait "$1"; echo "$3=$?"
    fi
}

# kata_rs_shim_warnings PREFIX: prints the warnings and errors the kata shim logged through
# containerd (its log), each line as `PREFIX| ...`: after an unexpected exit status, what the
# shim saw (a failed WaitProcess, the VMM dying) is what explains it.
kata_rs_shim_warnings() {
    [ -n "${KATA_RS_CONTAINERD_LOG:-}" ] || return 0
    grep -E 'level=(warning|error)' "$KATA_RS_CONTAINERD_LOG" | grep -E 'kata|shim' \
        | tail -n 20 | cut -c1-400 | sed "s/^/$1| /"
}

# kata_rs_uptime: seconds since the node booted (for timings in scripts).
kata_rs_uptime() { cut -d' ' -f1 /proc/uptime; }

# kata_rs_diag WHAT: after a timeout or failure, print (to stderr) what a person needs to see
# why: the processes, what each kata-vmm thread is doing, the live guest console logs, the
# node kernel's last messages and containerd's last log lines.
kata_rs_diag() {
    {
        echo "==== diagnostics: $*"
        ps -o pid,ppid,stat,etime,args 2>/dev/null || ps
        for _p in $(pidof kata-vmm containerd-shim-kata-v2 2>/dev/null); do
            echo "-- pid $_p $(tr '\0' ' ' < "/proc/$_p/cmdline" 2>/dev/null | cut -c1-200)"
            grep -E '^(State|Threads|SigPnd|ShdPnd)' "/proc/$_p/status" 2>/dev/null | tr '\n' ' '; echo
            for _t in /proc/"$_p"/task/*; do
                echo "   task ${_t##*/} $(cat "$_t/comm" 2>/dev/null) state=$(cut -d' ' -f3 "$_t/stat" 2>/dev/null) wchan=$(cat "$_t/wchan" 2>/dev/null)"
            done
        done
        for _f in /var/log/kata-rs/console/*.log; do
            [ -f "$_f" ] || continue
            echo "-- guest console $_f (last 25 lines)"; tail -n 25 "$_f"
        done
        echo "-- node kernel (last 20 lines)"; dmesg 2>/dev/null | tail -n 20
        if [ -n "${KATA_RS_CONTAINERD_LOG:-}" ]; then
            echo "-- containerd log (last 30 lines)"
            grep -v 'msg="loading plugin' "$KATA_RS_CONTAINERD_LOG" | tail -n 30
        fi
        echo "==== end of diagnostics"
    } >&2
}

# kata_rs_start_cri_containerd: starts a second containerd with the CRI plugin (the node's
# containerd has it disabled), own root/state/sockets under $KATA_RS_WORK/cri, log in
# $KATA_RS_CRI_LOG, and runtime handlers `runc` (default, io.containerd.runc.v2) and `kata`
# (io.containerd.kata.v2, as in deploy/containerd-config.toml). No registry: the sandbox image
# kata-rs.local/pause:latest is made here from the test image (its layer, a config whose
# entrypoint sleeps) and, with $KATA_RS_IMAGE, imported into CRI's namespace k8s.io. No CNI:
# pods must use the host network. Sets KATA_RS_CRI_SOCKET (for a CRI client) and
# KATA_RS_CRI_PID; stop it with kata_rs_stop_cri_containerd. Returns 1 (and prints the log
# tail) if containerd does not come up within 60 s or an import fails.
KATA_RS_PAUSE_IMAGE=kata-rs.local/pause:latest
kata_rs_start_cri_containerd() {
    _c=$KATA_RS_WORK/cri
    mkdir -p "$_c/cni/bin" "$_c/cni/net.d" || return 1
    KATA_RS_CRI_SOCKET=$_c/containerd.sock KATA_RS_CRI_LOG=$_c/containerd.log
    cat > "$_c/containerd.toml" <<TOML
version = 2
root = "$_c/root"
state = "$_c/state"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs",
  "io.containerd.internal.v1.tracing", "io.containerd.tracing.processor.v1.otlp"]
[grpc]
  address = "$KATA_RS_CRI_SOCKET"
[ttrpc]
  address = "$KATA_RS_CRI_SOCKET.ttrpc"
[debug]
  address = ""
  level = "info"
[metrics]
  address = ""
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$KATA_RS_PAUSE_IMAGE"
  disable_apparmor = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.kata]
      runtime_type = "io.containerd.kata.v2"
      pod_annotations = ["io.katacontainers.*"]
      container_annotations = ["io.katacontainers.*"]
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.kata.options]
        ConfigPath = "/etc/kata-rs/configuration.toml"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "$_c/cni/bin"
    conf_dir = "$_c/cni/net.d"
TOML
    containerd --config "$_c/containerd.toml" > "$KATA_RS_CRI_LOG" 2>&1 &
    KATA_RS_CRI_PID=$!
    _i=0
    until ctr --address "$KATA_RS_CRI_SOCKET" version > /dev/null 2>&1; do
        if ! kill -0 "$KATA_RS_CRI_PID" 2>/dev/null || [ $_i -ge 600 ]; then
            echo "kata_rs_start_cri_containerd: containerd with CRI did not come up; its log:" >&2
            tail -n 30 "$KATA_RS_CRI_LOG" >&2
            return 1
        fi
        sleep 0.1; _i=$((_i + 1))
    done
    _kata_rs_pause_oci "$_c/pause-oci.tar" || return 1
    for _t in "$KATA_RS_PAYLOAD/image/busybox-oci.tar" "$_c/pause-oci.tar"; do
        if ! _out=$(ctr --address "$KATA_RS_CRI_SOCKET" -n k8s.io image import "$_t" 2>&1); then
            echo "kata_rs_start_cri_containerd: ctr image import $_t failed: $_out" >&2
            return 1
        fi
    done
}

# kata_rs_stop_cri_containerd: SIGTERM to the CRI containerd, SIGKILL after 10 s.
kata_rs_stop_cri_containerd() {
    [ -n "${KATA_RS_CRI_PID:-}" ] || return 0
    kill -TERM "$KATA_RS_CRI_PID" 2>/dev/null
    _i=0
    while kill -0 "$KATA_RS_CRI_PID" 2>/dev/null && [ $_i -lt 100 ]; do sleep 0.1; _i=$((_i + 1)); done
    kill -KILL "$KATA_RS_CRI_PID" 2>/dev/null
    wait "$KATA_RS_CRI_PID" 2>/dev/null
    KATA_RS_CRI_PID=
}

# kata_rs_cri_finish RC T0: the end of a CRI script: prints what the pods left mounted under
# the CRI containerd's dirs (leftover-mount| lines, cri-mounts=N), kata_rs_leftovers and
# leftovers-rc, the CRI containerd's log tail when RC (the clients' status) is not 0, stops
# that containerd and prints total-seconds since T0.
kata_rs_cri_finish() {
    _n=$(awk -v d="$KATA_RS_WORK/cri/" 'index($2, d) == 1 { print; n++ } END { exit 0 }' /proc/mounts \
        | tee "$KATA_RS_WORK/cri-mounts" | wc -l)
    sed 's/^/leftover-mount| /' "$KATA_RS_WORK/cri-mounts"
    echo "cri-mounts=$_n"
    kata_rs_leftovers
    echo "leftovers-rc=$?"
    if [ "$1" -ne 0 ]; then
        echo "== cri containerd log (last 40 lines)"
        grep -v 'msg="loading plugin' "$KATA_RS_CRI_LOG" | tail -n 40
    fi
    kata_rs_stop_cri_containerd
    echo "total-seconds=$(awk -v a="$2" -v b="$(kata_rs_uptime)" 'BEGIN { printf "%.1f", b - a }')"
}

# _kata_rs_pause_oci OUT: an OCI archive of $KATA_RS_PAUSE_IMAGE: the test image's layer with
# a config whose entrypoint sleeps (a pause container), made with sh, sed, sha256sum and tar.
_kata_rs_pause_oci() {
    _p=$KATA_RS_WORK/cri/pause-oci
    rm -rf "$_p"; mkdir -p "$_p" && tar -xf "$KATA_RS_PAYLOAD/image/busybox-oci.tar" -C "$_p" || return 1
    _b=$_p/blobs/sha256
    # tests/image/build.sh writes compact JSON: one manifest in index.json; in the manifest the
    # config digest comes first and the (uncompressed) layer's last.
    _m=$(sed -n 's/.*"digest":"sha256:\([0-9a-f]\{64\}\)".*/\1/p' "$_p/index.json")
    _l=$(grep -o '"digest":"sha256:[0-9a-f]*","size":[0-9]*' "$_b/$_m" | tail -n 1)
    _ld=$(echo "$_l" | sed 's/.*sha256:\([0-9a-f]*\)".*/\1/'); _ls=${_l##*:}
    if [ -z "$_m" ] || [ ! -f "$_b/$_ld" ]; then
        echo "_kata_rs_pause_oci: cannot read the test image's manifest/layer" >&2; return 1
    fi
    rm -f "$_b/$_m"
    printf '{"architecture":"amd64","os":"linux","config":{"Entrypoint":["/bin/sleep","2147483647"],"WorkingDir":"/"},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' "$_ld" > "$_p/config.json"
    _cd=$(sha256sum < "$_p/config.json" | cut -d' ' -f1); _cs=$(wc -c < "$_p/config.json" | tr -d " ")
    mv "$_p/config.json" "$_b/$_cd"
    printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%d},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:%s","size":%d}]}' \
        "$_cd" "$_cs" "$_ld" "$_ls" > "$_p/manifest.json"
    _md=$(sha256sum < "$_p/manifest.json" | cut -d' ' -f1); _ms=$(wc -c < "$_p/manifest.json" | tr -d " ")
    mv "$_p/manifest.json" "$_b/$_md"
    printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%d,"platform":{"architecture":"amd64","os":"linux"},"annotations":{"io.containerd.image.name":"%s","org.opencontainers.image.ref.name":"latest"}}]}' \
        "$_md" "$_ms" "$KATA_RS_PAUSE_IMAGE" > "$_p/index.json"
    for _f in "$_b"/*; do
        case ${_f##*/} in "$_ld"|"$_cd"|"$_md") ;; *) rm -f "$_f" ;; esac
    done
    (cd "$_p" && tar -cf "$1" oci-layout index.json blobs)
}

# kata_rs_pids NAME: pids of the processes whose executable's base name is NAME.
kata_rs_pids() {
    for _p in /proc/[0-9]*; do
        _c=$(tr '\0' ' ' 2>/dev/null < "$_p/cmdline")
        _e=${_c%% *}; _e=${_e##*/}
        [ "$_e" = "$1" ] && echo "${_p#/proc/}"
    done
}
# kata_rs_mountinfo_all: the node's mount table and those of the kata shims (a shim may mount
# in a mount namespace of its own).
kata_rs_mountinfo_all() {
    for _p in self $(kata_rs_pids containerd-shim-kata-v2); do cat "/proc/$_p/mountinfo" 2>/dev/null; done | sort -u
}
# kata_rs_share_dir ID: the host directory the sandbox's virtio-fs share is exported from:
# virtiofsd's --shared-dir (or -o source=), else the parent of the mount of ID's rootfs at
# <share>/ID/rootfs (containerd's own rootfs mount in the bundle, under $KATA_RS_WORK/state,
# does not count).
kata_rs_share_dir() {
    for _p in $(kata_rs_pids virtiofsd); do
        _d=$(tr '\0' '\n' < "/proc/$_p/cmdline" 2>/dev/null | awk '
            f { print; exit } $0 == "--shared-dir" || $0 == "-o" { f = 1; next }
            /^--shared-dir=/ { sub(/^--shared-dir=/, ""); print; exit }' | sed 's/^source=//; s/,.*//')
        [ -n "$_d" ] && { echo "$_d"; return 0; }
    done
    kata_rs_mountinfo_all | awk -v id="$1" -v st="$KATA_RS_WORK/state/" '
        index($5, st) != 1 && $5 ~ ("/" id "/rootfs$") { sub("/" id "/rootfs$", "", $5); print $5; exit }'
}
# kata_rs_mount_count: how many mounts (node's and shims') lie under /run/kata-rs.
kata_rs_mount_count() { kata_rs_mountinfo_all | awk 'index($5, "/run/kata-rs") == 1 { n++ } END { print n + 0 }'; }
