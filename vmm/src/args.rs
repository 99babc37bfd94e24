//! Command line of `kata-vmm` (see `docs/design.md`) and its validation.

use std::path::PathBuf;

use clap::Parser;

use crate::devices::console_log::LogLimits;
use crate::devices::virtio::block::{parse_disk, DiskConfig, MAX_DISKS};
use crate::devices::virtio::fs::{parse_fs, FsConfig};
use crate::devices::virtio::net::{parse_net, NetConfig, MAX_NETS};
use crate::jail::{JailConfig, DEFAULT_JAIL_ID};
use crate::layout::{MAX_MEM_MIB, MIN_MEM_MIB};

/// Most vCPUs we start: the guest kernel is built with `CONFIG_NR_CPUS=64`.
pub const MAX_VCPUS: u8 = 64;

/// Raw command line arguments, as clap parses them.
#[derive(Parser, Debug, Clone)]
#[command(
    name = "kata-vmm",
    version,
    about = "kata-rs microVM monitor: boots a PVH vmlinux or a bzImage under KVM with a serial console, hybrid vsock (a Unix socket, --vsock-uds), virtio-rng, virtio-blk, virtio-net and virtio-fs (vhost-user), under seccomp"
)]
pub struct Args {
    /// Guest kernel: an ELF vmlinux with a PVH entry point, or a bzImage (detected).
    #[arg(long, value_name = "PATH")]
    pub kernel: PathBuf,
    /// Initramfs (newc cpio); repeat to concatenate several, in order.
    #[arg(long = "initrd", value_name = "PATH", required = true)]
    pub initrds: Vec<PathBuf>,
    /// Guest memory in MiB.
    #[arg(long, value_name = "N")]
    pub mem_mib: u64,
    /// Number of vCPUs.
    #[arg(long, value_name = "N")]
    pub vcpus: u64,
    /// Guest vsock context id (3 ..= 4294967294); only the guest sees it (hybrid vsock: no
    /// host AF_VSOCK address).
    #[arg(long, value_name = "CID")]
    pub vsock_cid: u64,
    /// The host side of the guest's vsock: a Unix socket created here (mode 0600) before the
    /// jail; a client writes `CONNECT <port>\n` and gets `OK <hostport>\n` once the guest
    /// accepted. The caller removes it after the VMM exits.
    #[arg(long, value_name = "PATH")]
    pub vsock_uds: Option<PathBuf>,
    /// File the guest console output (serial, and virtio-console) is written to: created
    /// (mode 0600) or truncated, never through a symlink. Bounded by --console-log-max-kib
    /// and --console-log-rate-kib.
    #[arg(long, value_name = "FILE")]
    pub console_log: PathBuf,
    /// Console log cap: at most this much guest output is kept, the first half as it came
    /// and the latest half (a marker line between them says how much was left out).
    #[arg(long, value_name = "KIB", default_value_t = DEFAULT_CONSOLE_LOG_MAX_KIB)]
    pub console_log_max_kib: u64,
    /// Console log rate limit in KiB per second (bursts of one second's worth); output over
    /// it is dropped and counted in the log. 0: no rate limit.
    #[arg(long, value_name = "KIB", default_value_t = DEFAULT_CONSOLE_LOG_RATE_KIB)]
    pub console_log_rate_kib: u64,
    /// Extra kernel command line arguments, appended after the VMM's own.
    #[arg(
        long,
        value_name = "EXTRA",
        default_value = "",
        allow_hyphen_values = true
    )]
    pub cmdline: String,
    /// Debugging only: do not confine the VMM's threads with seccomp filters.
    #[arg(long)]
    pub no_seccomp: bool,
    /// Debugging only: do not jail the VMM (by default, when started as root, it moves into
    /// its own namespaces with an empty root and drops to --jail-uid/--jail-gid once set up).
    #[arg(long)]
    pub no_jail: bool,
    /// User id the jailed VMM runs as (not 0).
    #[arg(long, value_name = "UID", default_value_t = DEFAULT_JAIL_ID)]
    pub jail_uid: u32,
    /// Group id the jailed VMM runs as (not 0).
    #[arg(long, value_name = "GID", default_value_t = DEFAULT_JAIL_ID)]
    pub jail_gid: u32,
    /// Control socket (Unix stream, line protocol: ping, pause, resume, state), mode 0600;
    /// the caller removes it after the VMM exits.
    #[arg(long, value_name = "PATH")]
    pub api_sock: Option<PathBuf>,
    /// Do not give the guest a virtio-rng device (on by default).
    #[arg(long)]
    pub no_rng: bool,
    /// Give the guest a virtio-console (hvc0) whose output is appended to --console-log too;
    /// add `console=hvc0` to --cmdline to use it.
    #[arg(long)]
    pub virtio_console: bool,
    /// virtio-blk disk backed by a host file or block device; `,ro` makes it read-only.
    /// Repeat for more disks (the guest sees them as /dev/vda, /dev/vdb, ... in order).
    #[arg(long = "disk", value_name = "PATH[,ro]", value_parser = parse_disk)]
    pub disks: Vec<DiskConfig>,
    /// virtio-net card on host tap device NAME (opened, or created if missing, before the
    /// jail; a tap the VMM created vanishes with it); `mac=` sets the guest's MAC (default: a
    /// random locally administered one). Repeat for more cards (eth0, eth1, ... in order).
    #[arg(long = "net", value_name = "tap=NAME[,mac=MAC]", value_parser = parse_net)]
    pub nets: Vec<NetConfig>,
    /// virtio-fs device served by a vhost-user-fs backend (virtiofsd) already listening on
    /// the Unix socket PATH (connected before the jail); the guest mounts it with
    /// `mount -t virtiofs TAG DIR`. TAG: 1-36 printable ASCII characters, no space or comma;
    /// queue-size: a power of two (default 1024). At most one.
    #[arg(
        long = "fs",
        value_name = "socket=PATH,tag=TAG[,queue-size=N]",
        value_parser = parse_fs
    )]
    pub fs: Option<FsConfig>,
    /// Directory (absolute, existing) under which the control request `snapshot` may write
    /// snapshots; opened before the jail. Without it `snapshot` is refused.
    #[arg(long, value_name = "DIR")]
    pub snapshot_root: Option<PathBuf>,
    /// Start from the snapshot in DIR instead of booting: guest memory mapped copy-on-write
    /// from DIR/memory, vCPU, VM and device state from DIR/state. The other arguments must
    /// describe the VM the snapshot was taken of (same kernel, initrds, memory, vCPUs and
    /// devices); what differs is named and refused.
    #[arg(long, value_name = "DIR")]
    pub restore: Option<PathBuf>,
}

/// A validated VM configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmConfig {
    /// Path of the ELF kernel.
    pub kernel: PathBuf,
    /// Initrd paths, concatenated in this order.
    pub initrds: Vec<PathBuf>,
    /// Guest memory in bytes.
    pub mem_bytes: u64,
    /// Number of vCPUs.
    pub vcpus: u8,
    /// Guest vsock CID.
    pub vsock_cid: u64,
    /// Console log path.
    pub console_log: PathBuf,
    /// Size and rate bounds of the console log.
    pub console_limits: LogLimits,
    /// Extra kernel arguments.
    pub extra_cmdline: String,
    /// Install the per-thread seccomp filters (default; `--no-seccomp` turns them off).
    pub seccomp: bool,
    /// Give the guest a virtio-rng device fed from the host's getrandom(2).
    pub rng: bool,
    /// Give the guest a virtio-console (hvc0) writing to the console log.
    pub virtio_console: bool,
    /// virtio-blk disks, in guest order.
    pub disks: Vec<DiskConfig>,
    /// virtio-net cards, in guest order.
    pub nets: Vec<NetConfig>,
    /// Jail the VMM after setup (default; `--no-jail` turns it off).
    pub jail: Option<JailConfig>,
    /// Control socket path.
    pub api_sock: Option<PathBuf>,
    /// Host side of the vsock device (hybrid vsock Unix socket).
    pub vsock_uds: Option<PathBuf>,
    /// The virtio-fs device, if any.
    pub fs: Option<FsConfig>,
    /// `--snapshot-root`.
    pub snapshot_root: Option<PathBuf>,
    /// `--restore`: the snapshot directory to start from.
    pub restore: Option<PathBuf>,
}

/// A command line value that cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ArgError {
    /// `--mem-mib` is outside the supported range.
    #[error("--mem-mib {0} is out of range ({MIN_MEM_MIB}..={MAX_MEM_MIB})")]
    MemSize(u64),
    /// `--vcpus` is outside the supported range.
    #[error("--vcpus {0} is out of range (1..={MAX_VCPUS})")]
    Vcpus(u64),
    /// `--vsock-cid` is a reserved or too large CID.
    #[error("--vsock-cid {0} is invalid (0, 1 and 2 are reserved; valid: 3..=4294967294)")]
    Cid(u64),
    /// `--cmdline` contains a NUL or a newline.
    #[error("--cmdline must not contain NUL or newline characters")]
    CmdlineChars,
    /// `--jail-uid`/`--jail-gid` 0 (root) or 4294967295 (the "unchanged" value of set*id).
    #[error("--jail-{0} {1} is invalid (not 0 and not 4294967295; --no-jail turns the jail off)")]
    JailId(&'static str, u32),
    /// More `--disk` than virtio-mmio slots we give to disks.
    #[error("too many --disk ({0}, at most {MAX_DISKS})")]
    TooManyDisks(usize),
    /// More `--net` than virtio-mmio slots we give to network cards.
    #[error("too many --net ({0}, at most {MAX_NETS})")]
    TooManyNets(usize),
    /// `--console-log-max-kib` is outside the supported range.
    #[error("--console-log-max-kib {0} is out of range ({MIN_CONSOLE_LOG_MAX_KIB}..={MAX_CONSOLE_LOG_MAX_KIB})")]
    ConsoleLogMax(u64),
    /// `--console-log-rate-kib` is too large.
    #[error(
        "--console-log-rate-kib {0} is out of range (0..={MAX_CONSOLE_LOG_RATE_KIB}, 0 = no limit)"
    )]
    ConsoleLogRate(u64),
}

/// Default `--console-log-max-kib` (512 KiB head + 512 KiB tail).
pub const DEFAULT_CONSOLE_LOG_MAX_KIB: u64 = 1024;
/// Smallest `--console-log-max-kib`.
pub const MIN_CONSOLE_LOG_MAX_KIB: u64 = crate::devices::console_log::MIN_MAX_BYTES / 1024;
/// Largest `--console-log-max-kib` (the tail half is kept in memory).
pub const MAX_CONSOLE_LOG_MAX_KIB: u64 = 64 * 1024;
/// Default `--console-log-rate-kib`.
pub const DEFAULT_CONSOLE_LOG_RATE_KIB: u64 = 64;
/// Largest `--console-log-rate-kib`.
pub const MAX_CONSOLE_LOG_RATE_KIB: u64 = 1024 * 1024;

impl Args {
    /// Checks the ranges of all values and turns them into a [`VmConfig`].
    ///
    /// File paths are only checked later, when they are opened, so that the error names the
    /// operating system's reason.
    pub fn validate(self) -> Result<VmConfig, ArgError> {
        if !(MIN_MEM_MIB..=MAX_MEM_MIB).contains(&self.mem_mib) {
            return Err(ArgError::MemSize(self.mem_mib));
        }
        if self.vcpus == 0 || self.vcpus > u64::from(MAX_VCPUS) {
            return Err(ArgError::Vcpus(self.vcpus));
        }
        if self.vsock_cid <= 2 || self.vsock_cid >= u64::from(u32::MAX) {
            return Err(ArgError::Cid(self.vsock_cid));
        }
        if self.cmdline.contains(['\0', '\n', '\r']) {
            return Err(ArgError::CmdlineChars);
        }
        if self.disks.len() > MAX_DISKS {
            return Err(ArgError::TooManyDisks(self.disks.len()));
        }
        if self.nets.len() > MAX_NETS {
            return Err(ArgError::TooManyNets(self.nets.len()));
        }
        if !(MIN_CONSOLE_LOG_MAX_KIB..=MAX_CONSOLE_LOG_MAX_KIB).contains(&self.console_log_max_kib)
        {
            return Err(ArgError::ConsoleLogMax(self.console_log_max_kib));
        }
        if self.console_log_rate_kib > MAX_CONSOLE_LOG_RATE_KIB {
            return Err(ArgError::ConsoleLogRate(self.console_log_rate_kib));
        }
        for (what, id) in [("uid", self.jail_uid), ("gid", self.jail_gid)] {
            if id == 0 || id == u32::MAX {
                return Err(ArgError::JailId(what, id));
            }
        }
        Ok(VmConfig {
            kernel: self.kernel,
            initrds: self.initrds,
            mem_bytes: self.mem_mib << 20,
            vcpus: self.vcpus as u8,
            vsock_cid: self.vsock_cid,
            console_log: self.console_log,
            console_limits: LogLimits {
                max_bytes: self.console_log_max_kib * 1024,
                rate_bytes_per_sec: self.console_log_rate_kib * 1024,
            },
            extra_cmdline: self.cmdline,
            seccomp: !self.no_seccomp,
            rng: !self.no_rng,
            virtio_console: self.virtio_console,
            disks: self.disks,
            nets: self.nets,
            jail: (!self.no_jail).then_some(JailConfig {
                uid: self.jail_uid,
                gid: self.jail_gid,
            }),
            api_sock: self.api_sock,
            vsock_uds: self.vsock_uds,
            fs: self.fs,
            snapshot_root: self.snapshot_root,
            restore: self.restore,
        })
    }
}

#[cfg(test)]
mod tests {
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
}
