//! Command line of `kata-vmm` (see `docs/design.md`) and its validation.

use std::path::PathBuf;

use clap::{Parser, ValueEnum};

use crate::devices::console_log::LogLimits;
use crate::devices::virtio::block::{parse_disk, DiskConfig, MAX_DISKS};
use crate::devices::virtio::fs::{parse_fs, parse_fs_slot, FsConfig, FsSlotConfig};
use crate::devices::virtio::net::{parse_net, NetConfig, MAX_NETS};
use crate::jail::{JailConfig, DEFAULT_JAIL_ID};
use crate::layout::{MAX_MEM_MIB, MAX_VIRTIO_SLOTS, MIN_MEM_MIB};

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
    /// virtio-fs device served by a vhost-user-fs backend (virtiofsd) on the Unix socket
    /// PATH, which must be listening already (connected before the jail; the backend may
    /// still be starting if its launcher bound the socket for it, as with virtiofsd --fd);
    /// the guest mounts it with `mount -t virtiofs TAG DIR`. TAG: 1-36 printable ASCII
    /// characters, no space or comma; queue-size: a power of two (default 1024);
    /// handshake-timeout: seconds the backend may take to answer the startup handshake
    /// (default 30, at most 3600). At most one.
    #[arg(
        long = "fs",
        value_name = "socket=PATH,tag=TAG[,queue-size=N][,handshake-timeout=SECS]",
        value_parser = parse_fs
    )]
    pub fs: Option<FsConfig>,
    /// Cold boot of a VM to be saved as a template: a virtio-fs device with no backend yet,
    /// in --fs's slot. The guest's driver binds it (tag, queues) but nothing may be mounted
    /// on it; a restore of the snapshot with --fs (same tag and queue size) gives it its
    /// backend, and the restored guest mounts it without probing a device. Not with --fs or
    /// --restore.
    #[arg(
        long = "fs-slot",
        value_name = "tag=TAG[,queue-size=N]",
        value_parser = parse_fs_slot,
        conflicts_with_all = ["fs", "restore"]
    )]
    pub fs_slot: Option<FsSlotConfig>,
    /// Directory (absolute, existing) under which the control request `snapshot` may write
    /// snapshots; opened before the jail. Without it `snapshot` is refused.
    #[arg(long, value_name = "DIR")]
    pub snapshot_root: Option<PathBuf>,
    /// Start from the snapshot in DIR instead of booting: guest memory from DIR/memory (see
    /// --restore-memory), vCPU, VM and device state from DIR/state. The other arguments must
    /// describe the VM the snapshot was taken of (same kernel, initrds, memory, vCPUs and
    /// devices); what differs is named and refused. --fs, and --net/--disk beyond the
    /// snapshot's own, go into its placeholder slots (fs, nets, disks, in argument order).
    #[arg(long, value_name = "DIR")]
    pub restore: Option<PathBuf>,
    /// Cold boot only: this many empty virtio-mmio slots (DeviceID 0) after all devices,
    /// kept in snapshots, for devices a restore adds (0..=8).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub placeholder_slots: u64,
    /// With --restore: `map` maps guest RAM copy-on-write from DIR/memory; `copy` copies the
    /// memory file's data extents into a new memfd (shared guest RAM, as a vhost-user
    /// backend needs); `auto`: `copy` with --fs, else `map`.
    #[arg(long, value_name = "MODE", value_enum, default_value_t = RestoreMemoryArg::Auto)]
    pub restore_memory: RestoreMemoryArg,
    /// Cold boot: if no virtio device is activated by the guest SECS seconds after start (and
    /// again at twice that), log where each vCPU is (a warning; 0: never; at most a day).
    #[arg(long, value_name = "SECS", default_value_t = crate::boot_watch::DEFAULT_SECS)]
    pub boot_watch_secs: u64,
}

/// `--restore-memory` as given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RestoreMemoryArg {
    /// `MAP_PRIVATE` of the memory file.
    Map,
    /// A memfd with the memory file's data extents copied in.
    Copy,
    /// `map` (with `--fs` too: virtio-fs then forwards through a bounce area).
    Auto,
}

/// How a restore gets guest RAM (`--restore-memory`, `auto` resolved).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestoreMemory {
    /// Guest RAM mapped copy-on-write (`MAP_PRIVATE`) from the memory file: shared page
    /// cache between VMs restored from one snapshot.
    Map,
    /// Guest RAM in memfds (shared mappings) into which the memory file's data extents are
    /// copied: what a vhost-user backend can map directly (no bounce area).
    Copy,
}

/// Most `--placeholder-slots`.
pub const MAX_PLACEHOLDER_SLOTS: u64 = 8;
/// Most `--boot-watch-secs` (a day; its second sample comes at twice that).
pub const MAX_BOOT_WATCH_SECS: u64 = 86_400;

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
    /// `--fs-slot`: a virtio-fs device without a backend (cold boot of a template VM).
    pub fs_slot: Option<FsSlotConfig>,
    /// `--snapshot-root`.
    pub snapshot_root: Option<PathBuf>,
    /// `--restore`: the snapshot directory to start from.
    pub restore: Option<PathBuf>,
    /// `--placeholder-slots` (cold boot).
    pub placeholder_slots: usize,
    /// `--restore-memory`, resolved (meaningful with `restore` only).
    pub restore_memory: RestoreMemory,
    /// `--boot-watch-secs` (None: 0, never).
    pub boot_watch: Option<std::time::Duration>,
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
    /// `--placeholder-slots` is too large.
    #[error("--placeholder-slots {0} is out of range (0..={MAX_PLACEHOLDER_SLOTS})")]
    PlaceholderSlots(u64),
    /// `--boot-watch-secs` is beyond [`MAX_BOOT_WATCH_SECS`].
    #[error("--boot-watch-secs {0} is out of range (0..={MAX_BOOT_WATCH_SECS})")]
    BootWatchSecs(u64),
    /// `--placeholder-slots` with `--restore`.
    #[error(
        "--placeholder-slots {0} with --restore: a restored VM has the snapshot's placeholder slots"
    )]
    PlaceholdersAtRestore(u64),
    /// More virtio-mmio slots than IRQs for them.
    #[error(
        "{slots} virtio-mmio slots ({devices} devices and {placeholders} --placeholder-slots), \
         at most {MAX_VIRTIO_SLOTS}"
    )]
    TooManySlots {
        /// All slots.
        slots: usize,
        /// Slots with a device.
        devices: usize,
        /// `--placeholder-slots`.
        placeholders: usize,
    },
    /// `--restore-memory` without `--restore`.
    #[error("--restore-memory is for --restore only")]
    RestoreMemoryWithoutRestore,
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
        if self.boot_watch_secs > MAX_BOOT_WATCH_SECS {
            return Err(ArgError::BootWatchSecs(self.boot_watch_secs));
        }
        if self.placeholder_slots > MAX_PLACEHOLDER_SLOTS {
            return Err(ArgError::PlaceholderSlots(self.placeholder_slots));
        }
        let placeholders = self.placeholder_slots as usize;
        let restore_memory = match (self.restore.is_some(), self.restore_memory) {
            (false, RestoreMemoryArg::Auto) => RestoreMemory::Map,
            (false, _) => return Err(ArgError::RestoreMemoryWithoutRestore),
            (true, _) if placeholders > 0 => {
                return Err(ArgError::PlaceholdersAtRestore(self.placeholder_slots))
            }
            (true, RestoreMemoryArg::Map | RestoreMemoryArg::Auto) => RestoreMemory::Map,
            (true, RestoreMemoryArg::Copy) => RestoreMemory::Copy,
        };
        // At a restore the snapshot's slot count is checked instead (slots::restore).
        let devices = 1
            + usize::from(!self.no_rng)
            + self.disks.len()
            + self.nets.len()
            + usize::from(self.virtio_console)
            + usize::from(self.fs.is_some() || self.fs_slot.is_some());
        if self.restore.is_none() && devices + placeholders > MAX_VIRTIO_SLOTS {
            return Err(ArgError::TooManySlots {
                slots: devices + placeholders,
                devices,
                placeholders,
            });
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
            fs_slot: self.fs_slot,
            snapshot_root: self.snapshot_root,
            restore: self.restore,
            placeholder_slots: placeholders,
            restore_memory,
            boot_watch: (self.boot_watch_secs > 0)
                .then(|| std::time::Duration::from_secs(self.boot_watch_secs)),
        })
    }
}

#[cfg(test)]
mod tests;
