//! Unit tests of `args.rs`.

use super::*;

fn parse(extra: &[&str]) -> Result<Args, clap::Error> {
    let mut argv = vec![
        "kata-vmm",
        "--kernel",
        "vmlinux",
        "--initrd",
        "a.cpio",
        "--console-log",
        "c.log",
    ];
    argv.extend_from_slice(extra);
    Args::try_parse_from(argv)
}

fn ok_args() -> Vec<&'static str> {
    vec!["--mem-mib", "256", "--vcpus", "2", "--vsock-cid", "3"]
}

#[test]
fn parses_the_design_command_line() {
    let mut extra = ok_args();
    extra.extend_from_slice(&["--initrd", "b.cpio", "--cmdline", "-x foo=bar"]);
    let cfg = parse(&extra).unwrap().validate().unwrap();
    assert_eq!(
        cfg.initrds,
        vec![PathBuf::from("a.cpio"), PathBuf::from("b.cpio")]
    );
    assert_eq!(cfg.mem_bytes, 256 << 20);
    assert_eq!(cfg.vcpus, 2);
    assert_eq!(cfg.vsock_cid, 3);
    assert_eq!(cfg.extra_cmdline, "-x foo=bar");
    assert!(cfg.seccomp && cfg.rng);
    let mut extra = ok_args();
    extra.extend_from_slice(&["--no-seccomp", "--no-rng"]);
    let cfg = parse(&extra).unwrap().validate().unwrap();
    assert!(!cfg.seccomp && !cfg.rng);
    assert!(!cfg.virtio_console);
    let mut extra = ok_args();
    extra.push("--virtio-console");
    assert!(parse(&extra).unwrap().validate().unwrap().virtio_console);
    assert!(cfg.disks.is_empty());
    assert_eq!(cfg.jail, Some(JailConfig::default()));
    assert_eq!(cfg.api_sock, None);
    let mut extra = ok_args();
    extra.extend_from_slice(&["--api-sock", "/run/x.sock"]);
    let cfg = parse(&extra).unwrap().validate().unwrap();
    assert_eq!(cfg.api_sock, Some(PathBuf::from("/run/x.sock")));
    assert_eq!(cfg.vsock_uds, None);
    let mut extra = ok_args();
    extra.extend_from_slice(&["--vsock-uds", "/run/v.sock"]);
    let cfg = parse(&extra).unwrap().validate().unwrap();
    assert_eq!(cfg.vsock_uds, Some(PathBuf::from("/run/v.sock")));
}

#[test]
fn jail_ids() {
    let mut extra = ok_args();
    extra.extend_from_slice(&["--jail-uid", "1000", "--jail-gid", "100"]);
    let cfg = parse(&extra).unwrap().validate().unwrap();
    assert_eq!(
        cfg.jail,
        Some(JailConfig {
            uid: 1000,
            gid: 100
        })
    );
    let mut extra = ok_args();
    extra.push("--no-jail");
    assert_eq!(parse(&extra).unwrap().validate().unwrap().jail, None);
    for (flag, bad) in [("--jail-uid", "0"), ("--jail-gid", "4294967295")] {
        let mut extra = ok_args();
        extra.extend_from_slice(&[flag, bad]);
        let e = parse(&extra).unwrap().validate().unwrap_err();
        assert!(matches!(e, ArgError::JailId(..)), "{e}");
    }
    let mut extra = ok_args();
    extra.extend_from_slice(&["--jail-uid", "-1"]);
    assert!(parse(&extra).is_err());
}

#[test]
fn disks() {
    let mut extra = ok_args();
    extra.extend_from_slice(&["--disk", "a.img", "--disk", "/b,c.img,ro"]);
    let cfg = parse(&extra).unwrap().validate().unwrap();
    assert_eq!(
        cfg.disks,
        vec![
            DiskConfig {
                path: "a.img".into(),
                read_only: false
            },
            DiskConfig {
                path: "/b,c.img".into(),
                read_only: true
            }
        ]
    );
    let mut extra = ok_args();
    extra.extend_from_slice(&["--disk", "a.img,rox"]);
    assert!(parse(&extra).is_err());
    let mut extra = ok_args();
    for _ in 0..=MAX_DISKS {
        extra.extend_from_slice(&["--disk", "d"]);
    }
    assert_eq!(
        parse(&extra).unwrap().validate(),
        Err(ArgError::TooManyDisks(MAX_DISKS + 1))
    );
}

#[test]
fn nets() {
    let mut extra = ok_args();
    extra.extend_from_slice(&[
        "--net",
        "tap=tap0",
        "--net",
        "tap=kata-1,mac=02:00:00:aa:bb:cc",
    ]);
    let cfg = parse(&extra).unwrap().validate().unwrap();
    assert_eq!(
        cfg.nets,
        vec![
            NetConfig {
                tap: "tap0".into(),
                mac: None
            },
            NetConfig {
                tap: "kata-1".into(),
                mac: Some([2, 0, 0, 0xaa, 0xbb, 0xcc])
            }
        ]
    );
    for bad in [
        "tap0",
        "tap=",
        "tap=a/b",
        "tap=waytoolongtapname",
        "tap=t,mac=01:00:00:00:00:01",
        "tap=t,mac=00:00:00:00:00:00",
        "tap=t,mac=02:00:00:00:00",
        "tap=t,mac=02:00:00:00:00:zz",
        "tap=t,tap=u",
        "mac=02:00:00:00:00:01",
        "tap=t,vhost=on",
    ] {
        let mut extra = ok_args();
        extra.extend_from_slice(&["--net", bad]);
        assert!(parse(&extra).is_err(), "{bad}");
    }
    let mut extra = ok_args();
    for _ in 0..=MAX_NETS {
        extra.extend_from_slice(&["--net", "tap=t"]);
    }
    assert_eq!(
        parse(&extra).unwrap().validate(),
        Err(ArgError::TooManyNets(MAX_NETS + 1))
    );
}

#[test]
fn fs() {
    let cfg = parse(&ok_args()).unwrap().validate().unwrap();
    assert_eq!(cfg.fs, None);
    let mut extra = ok_args();
    extra.extend_from_slice(&["--fs", "socket=/run/vfs.sock,tag=kataShared"]);
    let cfg = parse(&extra).unwrap().validate().unwrap();
    assert_eq!(
        cfg.fs,
        Some(FsConfig {
            socket: "/run/vfs.sock".into(),
            tag: "kataShared".into(),
            queue_size: crate::devices::virtio::fs::DEFAULT_QUEUE_SIZE,
            handshake_timeout: crate::devices::virtio::fs::HANDSHAKE_TIMEOUT,
        })
    );
    // At most one --fs; a bad value is a parse error.
    let mut extra = ok_args();
    extra.extend_from_slice(&["--fs", "socket=a,tag=a", "--fs", "socket=b,tag=b"]);
    assert!(parse(&extra).is_err());
    for bad in [
        "socket=a",
        "tag=a",
        "socket=a,tag=a,b",
        "socket=a,tag=a,queue-size=3",
    ] {
        let mut extra = ok_args();
        extra.extend_from_slice(&["--fs", bad]);
        assert!(parse(&extra).is_err(), "{bad}");
    }
}

#[test]
fn initrd_is_required() {
    let r = Args::try_parse_from([
        "kata-vmm",
        "--kernel",
        "k",
        "--mem-mib",
        "64",
        "--vcpus",
        "1",
        "--vsock-cid",
        "3",
        "--console-log",
        "c",
    ]);
    assert!(r.is_err());
}

#[test]
fn rejects_bad_memory() {
    for bad in ["0", "63", "65537"] {
        let a = parse(&["--mem-mib", bad, "--vcpus", "1", "--vsock-cid", "3"]).unwrap();
        assert!(matches!(a.validate(), Err(ArgError::MemSize(_))), "{bad}");
    }
    assert!(parse(&["--mem-mib", "-5", "--vcpus", "1", "--vsock-cid", "3"]).is_err());
    assert!(parse(&["--mem-mib", "lots", "--vcpus", "1", "--vsock-cid", "3"]).is_err());
    let a = parse(&["--mem-mib", "65536", "--vcpus", "1", "--vsock-cid", "3"]).unwrap();
    assert!(a.validate().is_ok());
}

#[test]
fn rejects_bad_vcpus() {
    for bad in ["0", "65", "100000"] {
        let a = parse(&["--mem-mib", "128", "--vcpus", bad, "--vsock-cid", "3"]).unwrap();
        assert_eq!(a.validate(), Err(ArgError::Vcpus(bad.parse().unwrap())));
    }
}

#[test]
fn rejects_reserved_cids() {
    for bad in ["0", "1", "2", "4294967295", "4294967296"] {
        let a = parse(&["--mem-mib", "128", "--vcpus", "1", "--vsock-cid", bad]).unwrap();
        assert!(matches!(a.validate(), Err(ArgError::Cid(_))), "{bad}");
    }
    let msg = ArgError::Cid(2).to_string();
    assert!(msg.contains("--vsock-cid 2"), "{msg}");
}

#[test]
fn rejects_control_characters_in_cmdline() {
    let mut extra = ok_args();
    extra.extend_from_slice(&["--cmdline", "a\nb"]);
    assert_eq!(
        parse(&extra).unwrap().validate(),
        Err(ArgError::CmdlineChars)
    );
}

#[test]
fn console_log_limits() {
    let cfg = parse(&ok_args()).unwrap().validate().unwrap();
    assert_eq!(cfg.console_limits.max_bytes, 1024 * 1024);
    assert_eq!(cfg.console_limits.rate_bytes_per_sec, 64 * 1024);
    let mut extra = ok_args();
    extra.extend_from_slice(&["--console-log-max-kib", "64", "--console-log-rate-kib", "0"]);
    let cfg = parse(&extra).unwrap().validate().unwrap();
    assert_eq!(cfg.console_limits.max_bytes, 64 * 1024);
    assert_eq!(cfg.console_limits.rate_bytes_per_sec, 0);
    for bad in ["0", "15", "65537"] {
        let mut extra = ok_args();
        extra.extend_from_slice(&["--console-log-max-kib", bad]);
        assert_eq!(
            parse(&extra).unwrap().validate(),
            Err(ArgError::ConsoleLogMax(bad.parse().unwrap()))
        );
    }
    let mut extra = ok_args();
    extra.extend_from_slice(&["--console-log-rate-kib", "1048577"]);
    assert_eq!(
        parse(&extra).unwrap().validate(),
        Err(ArgError::ConsoleLogRate(1048577))
    );
}

fn with(extra: &[&str]) -> Result<VmConfig, ArgError> {
    let mut a = ok_args();
    a.extend_from_slice(extra);
    parse(&a).unwrap().validate()
}

#[test]
fn boot_watch_secs() {
    use std::time::Duration;
    assert_eq!(
        with(&[]).unwrap().boot_watch,
        Some(Duration::from_secs(crate::boot_watch::DEFAULT_SECS))
    );
    assert_eq!(with(&["--boot-watch-secs", "0"]).unwrap().boot_watch, None);
    assert_eq!(
        with(&["--boot-watch-secs", "86400"]).unwrap().boot_watch,
        Some(Duration::from_secs(86_400))
    );
    // Beyond a day is refused (a huge value would overflow the watch's deadlines).
    let huge = u64::MAX.to_string();
    assert_eq!(
        with(&["--boot-watch-secs", &huge]),
        Err(ArgError::BootWatchSecs(u64::MAX))
    );
    assert!(ArgError::BootWatchSecs(86_401)
        .to_string()
        .contains("--boot-watch-secs 86401 is out of range (0..=86400)"));
}

#[test]
fn placeholder_slots() {
    assert_eq!(with(&[]).unwrap().placeholder_slots, 0);
    assert_eq!(
        with(&["--placeholder-slots", "8"])
            .unwrap()
            .placeholder_slots,
        8
    );
    assert_eq!(
        with(&["--placeholder-slots", "9"]),
        Err(ArgError::PlaceholderSlots(9))
    );
    assert!(ArgError::PlaceholderSlots(9)
        .to_string()
        .contains("--placeholder-slots 9 is out of range (0..=8)"));
    let mut a = ok_args();
    a.extend_from_slice(&["--placeholder-slots", "-1"]);
    assert!(parse(&a).is_err());
    // The snapshot brings its own.
    assert_eq!(
        with(&["--restore", "/s", "--placeholder-slots", "2"]),
        Err(ArgError::PlaceholdersAtRestore(2))
    );
    // Every slot needs an IRQ: 1 vsock + 1 rng + 8 disks + 4 nets + 5 placeholders = 19 fit,
    // one more does not.
    let mut extra: Vec<&str> = Vec::new();
    for _ in 0..MAX_DISKS {
        extra.extend_from_slice(&["--disk", "d"]);
    }
    for _ in 0..MAX_NETS {
        extra.extend_from_slice(&["--net", "tap=t"]);
    }
    extra.extend_from_slice(&["--placeholder-slots", "5"]);
    assert_eq!(with(&extra).unwrap().placeholder_slots, 5);
    extra.push("--virtio-console");
    let e = with(&extra).unwrap_err();
    assert_eq!(
        e,
        ArgError::TooManySlots {
            slots: 20,
            devices: 15,
            placeholders: 5
        }
    );
    assert!(
        e.to_string()
            .starts_with("20 virtio-mmio slots (15 devices and 5 --placeholder-slots), at most 19"),
        "{e}"
    );
}

#[test]
fn restore_memory_modes() {
    let fs = ["--fs", "socket=/v.sock,tag=t"];
    assert_eq!(
        with(&["--restore", "/s"]).unwrap().restore_memory,
        RestoreMemory::Map
    );
    let mut a = vec!["--restore", "/s"];
    a.extend_from_slice(&fs);
    assert_eq!(
        with(&a).unwrap().restore_memory,
        RestoreMemory::Map,
        "auto with --fs: map (virtio-fs in bounce mode)"
    );
    for (mode, want) in [("map", RestoreMemory::Map), ("copy", RestoreMemory::Copy)] {
        assert_eq!(
            with(&["--restore", "/s", "--restore-memory", mode])
                .unwrap()
                .restore_memory,
            want
        );
    }
    a.extend_from_slice(&["--restore-memory", "copy"]);
    assert_eq!(with(&a).unwrap().restore_memory, RestoreMemory::Copy);
    let mut a = vec!["--restore", "/s", "--restore-memory", "map"];
    a.extend_from_slice(&fs);
    assert_eq!(with(&a).unwrap().restore_memory, RestoreMemory::Map);
    assert_eq!(
        with(&["--restore-memory", "copy"]),
        Err(ArgError::RestoreMemoryWithoutRestore)
    );
    let mut a = ok_args();
    a.extend_from_slice(&["--restore", "/s", "--restore-memory", "share"]);
    assert!(parse(&a).is_err(), "an unknown mode is a parse error");
}
