//! What each parity case's line must contain (tests/scripts/parity.sh prints the lines):
//! the same expectations for runc and kata (tests/tests/parity.rs) and for a kata sandbox from a
//! cold boot and from a VM template (tests/tests/template.rs).

/// Each parity case and the strings its line must contain.
pub const PARITY_EXPECTED: &[(&str, &[&str])] = &[
    ("env-cwd", &["rc=0", "FOO=bar ; /tmp/newdir ; drwxr-xr-x"]),
    ("exit-status", &["rc=7 out=err"]),
    (
        "devices-default",
        &[
            "rc=0",
            "mknod-c=0",
            "mknod-b=0",
            "kata-rs-ttyS0: Operation not permitted",
            "kata-rs-sda: Operation not permitted",
            "read-b=1",
            "null=0",
        ],
    ),
    ("devices-privileged", &["rc=0 out=mknod=0 ; open-kmsg=0"]),
    (
        "caps-default",
        &[
            "rc=0",
            "CapInh:\t0000000000000000",
            "CapPrm:\t00000000a80425fb",
            "CapEff:\t00000000a80425fb",
            "CapBnd:\t00000000a80425fb",
            "CapAmb:\t0000000000000000",
            "NoNewPrivs:\t1",
            "Seccomp:\t0",
        ],
    ),
    (
        "caps-add-drop",
        &[
            "rc=0",
            "CapEff:\t00000000a82425fa",
            "NoNewPrivs:\t0",
            "Operation not permitted",
            "chown=1",
        ],
    ),
    (
        "read-only",
        &["rc=0", "Read-only file system", "touch=1", "tmp=1"],
    ),
    (
        "masked-readonly",
        &[
            "rc=0",
            "kcore=hidden",
            "firmware=0",
            "Read-only file system",
            "procsys=1",
        ],
    ),
    ("rlimit-default", &["rc=0", "nofile=1024 hard=1024"]),
    (
        "cgroup-limits",
        &["rc=0", "memory.max=67108864 cpu.max=50000 100000"],
    ),
    (
        "seccomp-default",
        &["rc=0", "Seccomp:\t2", "NoNewPrivs:\t1", "ls=0"],
    ),
    (
        "seccomp-deny-mkdir",
        &["rc=0", "Operation not permitted", "mkdir=1", "touch=0"],
    ),
    (
        "mount-under-symlink",
        &[
            "rc=0 out=token-data ; token-data ; /run/secrets/kubernetes.io/serviceaccount ; ",
            "Read-only file system ; touch=1",
        ],
    ),
    (
        "mount-escape-symlink",
        &["rc=0 out=secret-data ; secret-data ; /tmp/kata-rs-parity-secret"],
    ),
    ("stdin", &["rc=0 out=got=line1,line2"]),
    ("oom-kill", &["rc=137", "oom-event=yes"]),
    ("run-tty", &["rc=3", "/dev/pts/0"]),
    ("exec-tty", &["rc=0", "/dev/pts/0"]),
    ("sigterm-trapped", &["rc=42", "ready ; got-term"]),
    ("sigkill", &["rc=137", "out=ready"]),
    (
        "exec",
        &[
            "rc=0",
            "uid=1000(kata) gid=1000(kata)",
            " ; /tmp ; ",
            "CapEff:\t0000000000000000",
            "NoNewPrivs:\t1",
            "pid1=sleep 100000",
        ],
    ),
    ("exec-status", &["rc=5 out=five"]),
    ("exec-stdin", &["rc=0 out=got=in"]),
    (
        "pause-resume",
        &["ps-lines=2 ; paused=PAUSED ; resumed=RUNNING"],
    ),
    (
        "hostname-pids",
        &["rc=0", "parity-host", "fork-limited=yes"],
    ),
    (
        "sysctl",
        &[
            "rc=0",
            "out=1 ; 30000\t40000 ; ",
            "Read-only file system ; write=1",
        ],
    ),
    (
        "no-path",
        &["rc=1 out=exec: \"sh\": executable file not found in $PATH"],
    ),
    (
        "config-user",
        &[
            "rc=0",
            "uid=1000(kata) gid=1000(kata) groups=10,20",
            " ; 0022 ; ",
            "nofile=512 hard=2048",
            "oom=500",
            "cgroup=0::/",
            "touch=0",
            "owner=1000:1000",
        ],
    ),
];
