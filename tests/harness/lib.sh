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
kata_rs_config() {
    _vmm=/usr/local/bin/kata-vmm _kernel=$KATA_RS_SHARE/vmlinux
    _initrd=$KATA_RS_SHARE/kata-rs-initrd.img _mem=256 _vcpus=1 _dial=120
    for _kv in "$@"; do
        case $_kv in
            vmm=*) _vmm=${_kv#*=} ;; kernel=*) _kernel=${_kv#*=} ;; initrd=*) _initrd=${_kv#*=} ;;
            mem_mib=*) _mem=${_kv#*=} ;; vcpus=*) _vcpus=${_kv#*=} ;; dial_timeout=*) _dial=${_kv#*=} ;;
            *) echo "kata_rs_config: unknown key: $_kv" >&2; return 1 ;;
        esac
    done
    sed -e "s|@VMM@|$_vmm|g" -e "s|@KERNEL@|$_kernel|g" -e "s|@INITRD@|$_initrd|g" \
        -e "s|@MEM_MIB@|$_mem|g" -e "s|@VCPUS@|$_vcpus|g" -e "s|@DIAL_TIMEOUT@|$_dial|g" \
        /usr/local/share/kata-rs-tests/configuration.toml.in
}

# kata_rs_leftovers: print every leftover kata-vmm / containerd-shim-kata-v2 process, kata-rs
# mount (or a container rootfs still mounted in containerd's state dir) and socket under
# /run/kata-rs; return 1 if there is any, else print "leftovers: none" and return 0.
kata_rs_leftovers() {
    _n=0
    for _p in /proc/[0-9]*; do
        _cmd=$(cat "$_p/cmdline" 2>/dev/null | tr '\0' ' ')     # (it may have just exited)
        _exe=${_cmd%% *}; _exe=${_exe##*/}
        case $_exe in
            kata-vmm|containerd-shim-kata-v2|containerd-shim-katabad-v2)
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
        for _f in /run/kata-rs/console/*.log; do
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
