//! Builds the VM: a [`VmConfig`] in, a running [`Vmm`] out (guest memory loaded, devices
//! attached, the process jailed and limited, the vCPU threads running under their seccomp
//! filters and the main thread's filter installed). [`Vmm::run`] then serves it to the end.
//!
//! With `--restore DIR` the same steps build the VM from a snapshot instead of booting it:
//! the state file is read and checked against the configuration first, guest RAM is mapped
//! copy-on-write from the memory file, the kernel is not loaded, the VM's KVM state is
//! restored before the devices (whose restore may signal irqfds), each virtio-mmio transport
//! and COM1 get their saved state, and the vCPUs are created from theirs.
//!
//! The order of the steps is part of the contract: cheap user errors first (console log,
//! control socket, `/dev/kvm`, virtio-fs backend, then the kernel and initrd before any
//! device), every path opened before the jail, rlimits before the jail leaves root, the jail
//! before the vCPU threads start, the main thread's filter last.

use std::fs::OpenOptions;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use kvm_ioctls::VcpuFd;
use vm_memory::{Bytes, GuestAddress};

use crate::api::ApiServer;
use crate::args::VmConfig;
use crate::device_manager::{lock_transport, DeviceManager, ServedBy};
use crate::devices::console_log::ConsoleLog;
use crate::devices::serial::ConsoleOut;
use crate::devices::virtio::block::{BlkDevice, Disk};
use crate::devices::virtio::console::ConsoleDevice;
use crate::devices::virtio::fs::{self as vfs, FsDevice};
use crate::devices::virtio::net::{NetDevice, Tap};
use crate::devices::virtio::rng::RngDevice;
use crate::devices::virtio::vsock::{self as hvsock, HvsockDevice};
use crate::devices::virtio::worker::QueueWorker;
use crate::devices::virtio::VirtioDevice;
use crate::event_loop::{Control, EventLoop};
use crate::jail::limits;
use crate::layout::EBDA_START;
use crate::pause::{self, Pauser};
use crate::seccomp::{self, ThreadClass};
use crate::snapshot::take::{SnapshotRoot, Snapshotter};
use crate::snapshot::{self, ConfigFingerprint};
use crate::vmm::{block_signals, ExitState, Vmm};
use crate::vstate::{memory, vcpu, vcpu_state, vm::Vm, vm_state};
use crate::{boot, jail, mptable};
use tracing::debug;

/// Boots the VM described by `cfg` up to the point where the guest runs and only the main
/// thread's event loop is left (see the module documentation).
pub fn build(cfg: &VmConfig) -> Result<Vmm> {
    let t0 = Instant::now();
    // Created 0600 (or truncated: the shim creates it empty with O_EXCL), never through a
    // symlink; written by the bounded log only.
    let console = {
        use std::os::unix::fs::OpenOptionsExt;
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&cfg.console_log)
            .with_context(|| format!("cannot open console log {}", cfg.console_log.display()))?
    };
    let console_log = ConsoleLog::new(console, cfg.console_limits).shared();

    // Before anything slow: a bad path fails fast. Bound before the jail (a path is needed).
    let api = match &cfg.api_sock {
        Some(p) => Some(ApiServer::bind(p).context("cannot create the control socket")?),
        None => None,
    };

    // The configuration a snapshot is tagged with: the files' metadata is read here, before
    // the jail hides them.
    let fingerprint = if cfg.snapshot_root.is_some() || cfg.restore.is_some() {
        Some(
            ConfigFingerprint::of(&cfg.kernel, &cfg.initrds, cfg.mem_bytes >> 20, cfg.vcpus)
                .context(
                    "reading the kernel's and initrds' metadata for the snapshot fingerprint",
                )?,
        )
    } else {
        None
    };
    let snapshot_root = match &cfg.snapshot_root {
        Some(p) => Some(
            SnapshotRoot::open(p).with_context(|| format!("--snapshot-root {}", p.display()))?,
        ),
        None => None,
    };
    // --restore: the state file first (the most likely user error: another configuration).
    let restore = match (&cfg.restore, &fingerprint) {
        (Some(dir), Some(fp)) => {
            if cfg.fs.is_some() {
                bail!("--restore with --fs: snapshots of virtio-fs are not supported yet");
            }
            let state = snapshot::load(&dir.join(snapshot::STATE_FILE), fp)?;
            let mem_path = dir.join(snapshot::MEMORY_FILE);
            let mem_file = std::fs::File::open(&mem_path)
                .with_context(|| format!("snapshot memory file {}", mem_path.display()))?;
            Some((state, mem_file))
        }
        _ => None,
    };

    let vm = Arc::new(Vm::new()?);

    // virtio-fs: connected now (a path, before the jail; a backend that is not there fails
    // fast, before any guest memory exists).
    let fs_backend = match &cfg.fs {
        Some(f) => Some(vfs::connect(&f.socket)?),
        None => None,
    };

    // With --fs guest RAM is a shared mapping of sealed memfds the backend maps too (see
    // "Memory map" in vmm/README.md); otherwise anonymous private memory.
    let mem = match &restore {
        Some((state, file)) => {
            let dir = cfg.restore.as_deref().unwrap_or(std::path::Path::new(""));
            snapshot::memory::restore(file, &state.memory, cfg.mem_bytes).map_err(|e| {
                anyhow!(
                    "snapshot {}: {e}",
                    dir.join(snapshot::MEMORY_FILE).display()
                )
            })?
        }
        None => memory::create(cfg.mem_bytes, cfg.fs.is_some())?,
    };
    memory::register(&vm.fd, &mem)?;
    vm.setup_platform()?;
    if let Some((state, _)) = &restore {
        vm_state::restore(&vm.fd, &state.vm).context("restoring the VM's KVM state")?;
    }

    // Boot payload first: a bad kernel or initrd is the most likely user error.
    // virtio-mmio slots: 0 = vsock, then the VMM's own devices, virtio-fs last.
    let mut dm = DeviceManager::new();
    dm.allocate_mmio_slots(
        1 + usize::from(cfg.rng)
            + cfg.disks.len()
            + cfg.nets.len()
            + usize::from(cfg.virtio_console)
            + usize::from(cfg.fs.is_some()),
    );
    let cmdline = dm.kernel_cmdline(&cfg.extra_cmdline)?;
    // A restored guest's memory has its kernel, initrd and boot tables already.
    let bi = if restore.is_none() {
        let bi = boot::load(&mem, &cfg.kernel, &cfg.initrds, &cmdline)?;
        mem.write_slice(
            &mptable::build(EBDA_START as u32, cfg.vcpus),
            GuestAddress(EBDA_START),
        )
        .context("writing the MP table")?;
        debug!(
            "kernel ({:?}) entry {:#x}, initrd {:#x}+{:#x}, cmdline: {cmdline}",
            bi.protocol, bi.entry.0, bi.initrd_addr.0, bi.initrd_size
        );
        Some(bi)
    } else {
        None
    };

    // Exit plumbing.
    let exit = ExitState::new()?;

    // Serial console on IRQ 4.
    let on_panic = |exit: Arc<ExitState>| -> Box<dyn Fn() + Send> {
        Box::new(move || exit.console_panic_marker())
    };
    // virtio-console output goes to the same bounded log (one cap and one rate for both)
    // with its own panic scan.
    let hvc_out = cfg
        .virtio_console
        .then(|| ConsoleOut::new(console_log.clone(), on_panic(exit.clone())));
    let out = ConsoleOut::new(console_log.clone(), on_panic(exit.clone()));
    dm.attach_serial(&vm.fd, out, restore.as_ref().map(|(s, _)| &s.serial))?;

    // vsock (slot 0): served by the VMM itself, its host side a Unix socket (hybrid vsock,
    // see devices/virtio/vsock), bound here, before the jail; no /dev/vhost-vsock.
    let vsock_uds = match &cfg.vsock_uds {
        Some(p) => Some(hvsock::bind(p).context("cannot create the vsock socket")?),
        None => None,
    };
    let vsock: Box<dyn VirtioDevice> =
        Box::new(HvsockDevice::new(cfg.vsock_cid, vsock_uds, mem.clone()).context("virtio-vsock")?);
    dm.attach_virtio(&vm.fd, vsock, &mem, ServedBy::MainLoop)
        .context("virtio-vsock")?;
    if cfg.rng {
        let rng: Box<dyn VirtioDevice> = Box::new(RngDevice::new(mem.clone()));
        dm.attach_virtio(&vm.fd, rng, &mem, ServedBy::MainLoop)
            .context("virtio-rng")?;
    }
    let mut largest_disk = 0u64;
    for (i, d) in cfg.disks.iter().enumerate() {
        let disk = Disk::open(d, &format!("kata-rs-disk{i}")).map_err(|e| anyhow!(e))?;
        largest_disk = largest_disk.max(disk.sectors().saturating_mul(512));
        debug!(
            "disk {i}: {} ({} sectors{})",
            d.path.display(),
            disk.sectors(),
            if d.read_only { ", read-only" } else { "" }
        );
        let blk: Box<dyn VirtioDevice> = Box::new(BlkDevice::new(disk, mem.clone()));
        dm.attach_virtio(&vm.fd, blk, &mem, ServedBy::OwnThread(format!("blk{i}")))
            .with_context(|| format!("virtio-blk {}", d.path.display()))?;
    }
    // Taps are opened (or created) here, in the host's network namespace, before the jail
    // moves the process into a new one; the fd keeps working there.
    for (i, n) in cfg.nets.iter().enumerate() {
        let tap = Tap::open(&n.tap).map_err(|e| anyhow!(e))?;
        let mac = n
            .mac
            .unwrap_or_else(crate::devices::virtio::net::random_mac);
        debug!(
            "net {i}: tap {} mac {}",
            tap.name(),
            mac.map(|b| format!("{b:02x}")).join(":")
        );
        let net: Box<dyn VirtioDevice> = Box::new(NetDevice::new(tap, mac, mem.clone()));
        dm.attach_virtio(&vm.fd, net, &mem, ServedBy::MainLoop)
            .with_context(|| format!("virtio-net {}", n.tap))?;
    }
    if let Some(out) = hvc_out {
        let hvc: Box<dyn VirtioDevice> = Box::new(ConsoleDevice::new(out, mem.clone()));
        dm.attach_virtio(&vm.fd, hvc, &mem, ServedBy::MainLoop)
            .context("virtio-console")?;
    }
    // virtio-fs: the last slot; vhost-style wiring (kicks and call go to the backend, not
    // through the VMM).
    if let (Some(f), Some(backend)) = (&cfg.fs, fs_backend) {
        let (kicks, call) = dm.vhost_user_eventfds(&vm.fd, vfs::NUM_QUEUES, "virtio-fs")?;
        debug!(
            "fs: tag {} socket {} backend features {:#x}",
            f.tag,
            f.socket.display(),
            backend.features()
        );
        let watch = backend.raw_fd();
        let dev: Box<dyn VirtioDevice> =
            Box::new(FsDevice::new(f, backend, mem.clone(), kicks, call));
        dm.attach_vhost_user(dev, &mem, watch)?;
    }

    if let Some((state, _)) = &restore {
        let slots = dm.transports();
        if state.devices.len() != slots.len() {
            bail!(
                "snapshot: {} virtio devices in the snapshot, {} configured (the device \
                 arguments must be the snapshot's)",
                state.devices.len(),
                slots.len()
            );
        }
        for (i, (t, saved)) in slots.iter().zip(&state.devices).enumerate() {
            lock_transport(t)
                .restore_state(saved)
                .map_err(|e| anyhow!("snapshot: virtio-mmio slot {i}: {e}"))?;
        }
    }

    let vcpus = match (&restore, &bi) {
        (Some((state, _)), _) => vcpu::create_restored(&vm, &state.vcpus)?,
        (None, Some(bi)) => vcpu::create(&vm, cfg.vcpus, bi)?,
        (None, None) => bail!("no boot information"),
    };
    let vcpus: Vec<Arc<Mutex<VcpuFd>>> =
        vcpus.into_iter().map(|v| Arc::new(Mutex::new(v))).collect();
    // What a snapshot reads: the MSR list from /dev/kvm now (no such ioctl after the filter).
    let snapshotter = match (snapshot_root, fingerprint) {
        (Some(root), Some(fingerprint)) => Some(Snapshotter {
            vm: vm.clone(),
            vcpus: vcpus.clone(),
            msr_indices: vcpu_state::msrs_to_save(&vm.kvm).context("snapshot: MSR list")?,
            mem: mem.clone(),
            devices: dm.transports().to_vec(),
            serial: dm.serial().context("no serial console attached")?,
            fingerprint,
            root,
        }),
        _ => None,
    };

    // Compiled up front so that a filter error is a plain startup error (exit 1).
    let vcpu_class = ThreadClass::Vcpu {
        vhost_user: cfg.fs.is_some(),
    };
    let (main_filter, vcpu_filter) = if cfg.seccomp {
        (
            Some(seccomp::filter(ThreadClass::Main {
                api: api.is_some(),
                vsock_uds: cfg.vsock_uds.is_some(),
                snapshot: snapshotter.is_some() && api.is_some(),
            })?),
            Some(seccomp::filter(vcpu_class)?),
        )
    } else {
        (None, None)
    };
    // The queue worker threads' event managers (an epoll fd each) and the main thread's, all
    // created before the fd limit below counts the open fds.
    let workers = dm
        .take_workers()
        .into_iter()
        .map(|(name, dev)| QueueWorker::new(name, dev, exit.clone()))
        .collect::<Result<Vec<_>>>()?;
    let worker_filter = if cfg.seccomp && !workers.is_empty() {
        Some(seccomp::filter(ThreadClass::BlockIo)?)
    } else {
        None
    };
    let test_forbidden = std::env::var_os(seccomp::TEST_FORBIDDEN_ENV).is_some_and(|v| v == "1");

    let sigfd = block_signals()?;
    debug_assert!(dm.all_slots_attached());
    let devices = dm.bus()?;
    let pauser = Arc::new(Pauser::new(vcpus.len()));
    let sources = dm.into_event_sources();
    let events = EventLoop::new(
        exit.clone(),
        sigfd,
        sources.devices,
        sources.vhost_user_watch,
        api.map(|server| Control {
            server,
            pauser: pauser.clone(),
            snapshotter,
        }),
        console_log.clone(),
    )?;
    // Everything is open: bound what the process can still open, create and write (see
    // jail/limits.rs), before it leaves root and before any filter or vCPU thread.
    // SAFETY: geteuid has no side effects.
    let euid = unsafe { libc::geteuid() };
    let needs = limits::Needs {
        highest_fd: limits::open_fds()
            .context("listing /proc/self/fd")?
            .last()
            .copied()
            .unwrap_or(2),
        accepted_fds: if cfg.vsock_uds.is_some() {
            hvsock::muxer::MAX_CONNS as u64 + 1
        } else {
            0
        } + if cfg.api_sock.is_some() {
            crate::api::MAX_CLIENTS as u64 + 1
        } else {
            0
        } + if cfg.snapshot_root.is_some() {
            // A snapshot's directories and files, open one path at a time.
            8
        } else {
            0
        },
        vcpus: cfg.vcpus,
        io_threads: workers.len() as u64,
        largest_file: cfg.console_limits.max_file_size().max(largest_disk).max(
            if cfg.snapshot_root.is_some() {
                cfg.mem_bytes
            } else {
                0
            },
        ),
        jail_uid: cfg.jail.filter(|_| euid == 0).map(|j| j.uid),
    };
    let lim = limits::compute(&needs);
    limits::apply(&lim).context("resource limits")?;
    debug!("limits: {lim:?} for {needs:?}");
    // Everything is open and every vCPU exists; the process still has one thread. Jail it
    // now so that the vCPU threads start inside (same namespaces, root, uid/gid, no caps).
    if let Some(j) = cfg.jail {
        let jailed = jail::enter(j, c"/dev")?;
        debug!("jail: {jailed:?}, uid {} gid {}", j.uid, j.gid);
    }
    if cfg.api_sock.is_some() {
        pause::install_kick_handler().context("installing the vCPU kick signal handler")?;
    }
    let mut threads = Vec::new();
    for (id, vcpu) in vcpus.into_iter().enumerate() {
        let d = devices.clone();
        let e = exit.clone();
        let f = vcpu_filter.clone().map(|f| (vcpu_class, f));
        let p = pauser.clone();
        let t = std::thread::Builder::new()
            .name(format!("vcpu{id}"))
            .spawn(move || vcpu::vcpu_loop(id as u8, vcpu, d, e, f, p))
            .context("spawning a vCPU thread")?;
        threads.push(t);
    }
    for w in workers {
        let e = exit.clone();
        let f = worker_filter.clone().map(|f| (ThreadClass::BlockIo, f));
        let t = std::thread::Builder::new()
            .name(w.name.clone())
            .spawn(move || w.run(f, e))
            .context("spawning a queue worker thread")?;
        threads.push(t);
    }
    // Every device exists and every thread is spawned: jail the main thread before its event
    // loop handles anything the guest does.
    if let Some(f) = &main_filter {
        seccomp::install(
            ThreadClass::Main {
                api: false,
                vsock_uds: false,
                snapshot: false,
            },
            f,
        )?;
        debug!("seccomp filters installed");
        if test_forbidden {
            seccomp::forbidden_syscall();
        }
    }
    debug!(
        "VM {} in {:?}",
        if cfg.restore.is_some() {
            "restored"
        } else {
            "set up"
        },
        t0.elapsed()
    );
    Ok(Vmm {
        events,
        console_log,
        own: sources.own,
        _vm: vm,
        _mem: mem,
        _threads: threads,
    })
}
