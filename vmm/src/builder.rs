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
use crate::args::{RestoreMemory, VmConfig};
use crate::boot_watch::{BootWatch, VcpuProbe};
use crate::device_manager::{lock_transport, DeviceManager};
use crate::devices::console_log::ConsoleLog;
use crate::devices::serial::ConsoleOut;
use crate::devices::virtio::fs as vfs;
use crate::devices::virtio::vsock as hvsock;
use crate::devices::virtio::worker::QueueWorker;
use crate::event_loop::{Control, EventLoop};
use crate::jail::limits;
use crate::layout::EBDA_START;
use crate::pause::{self, Pauser};
use crate::seccomp::{self, ThreadClass};
use crate::snapshot::take::{SnapshotRoot, Snapshotter};
use crate::snapshot::{self, ConfigFingerprint};
use crate::vmm::{block_signals, ExitState, Vmm};
use crate::vstate::{memory, vcpu, vcpu_state, vm::Vm, vm_state};
use crate::{boot, jail, mptable, slots};
use tracing::debug;

mod attach;

/// Boots the VM described by `cfg` up to the point where the guest runs and only the main
/// thread's event loop is left (see the module documentation).
pub fn build(cfg: &VmConfig) -> Result<Vmm> {
    let t0 = Instant::now();
    let mut phases = Phases::new(t0);
    // The KVM VM is made on a thread of its own while the configuration's files are read
    // (KVM_CREATE_VM took 17-51 ms of a restore on the emulated node, about what the console,
    // control socket, fingerprint and state file take), joined where the VM is first needed.
    let vm_maker = std::thread::Builder::new()
        .name("vm".into())
        .spawn(Vm::new)
        .context("starting the thread that makes the KVM VM")?;
    // The main and vCPU seccomp filters depend on the configuration only: compiled on a
    // thread of their own while the VM is made (6-11 ms of a restore on the emulated node),
    // joined before any other thread starts.
    let vcpu_class = ThreadClass::Vcpu {
        vhost_user: cfg.fs.is_some(),
    };
    let filters = if cfg.seccomp {
        let main = ThreadClass::Main {
            api: cfg.api_sock.is_some(),
            vsock_uds: cfg.vsock_uds.is_some(),
            snapshot: cfg.snapshot_root.is_some() && cfg.api_sock.is_some(),
        };
        let compile = move || {
            Ok::<_, seccomp::SeccompError>((seccomp::filter(main)?, seccomp::filter(vcpu_class)?))
        };
        Some(
            std::thread::Builder::new()
                .name("filters".into())
                .spawn(compile)
                .context("starting the thread that compiles the seccomp filters")?,
        )
    } else {
        None
    };
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
    phases.mark("console, api, fingerprint");
    // --restore: the state file first (the most likely user error: another configuration).
    let restore = match (&cfg.restore, &fingerprint) {
        (Some(dir), Some(fp)) => {
            let state = snapshot::load(&dir.join(snapshot::STATE_FILE), fp)?;
            let mem_path = dir.join(snapshot::MEMORY_FILE);
            let mem_file = std::fs::File::open(&mem_path)
                .with_context(|| format!("snapshot memory file {}", mem_path.display()))?;
            Some((state, mem_file))
        }
        _ => None,
    };
    // Which device goes into which virtio-mmio slot: at a restore the snapshot's order, the
    // per-sandbox devices in its placeholder slots (virtio-fs in the snapshot's own virtio-fs
    // slot when it has one, `--fs-slot`).
    phases.mark("state file");
    let plan = match &restore {
        Some((state, _)) => {
            let saved: Vec<u32> = state.devices.iter().map(|d| d.device_type).collect();
            slots::restore(cfg, &saved).map_err(|e| anyhow!("snapshot: {e}"))?
        }
        None => slots::cold_boot(cfg),
    };

    let vm = Arc::new(
        vm_maker
            .join()
            .map_err(|_| anyhow!("the thread making the KVM VM panicked"))??,
    );
    phases.mark("VM");

    // virtio-fs: connected now (a path, before the jail; a backend that is not there fails
    // fast, before any guest memory exists); the handshake runs on its own thread while
    // guest RAM is made (a backend started at the same time as the VMM is still starting).
    // virtio-fs in bounce mode when guest RAM is not shared memfds the backend could map
    // (a restore mapping the memory file copy-on-write): devices/virtio/fs/bounce.rs. The
    // thread then also sets the backend's shadow rings up.
    let fs_bounce = cfg.restore.is_some() && cfg.restore_memory == RestoreMemory::Map;
    let fs_pending = match &cfg.fs {
        Some(f) => Some(vfs::connect(
            &f.socket,
            f.handshake_timeout,
            fs_bounce.then_some(f.queue_size),
        )?),
        None => None,
    };

    // With --fs guest RAM is a shared mapping of sealed memfds the backend maps too (see
    // "Memory map" in vmm/README.md); otherwise anonymous private memory. A restore maps the
    // memory file copy-on-write or copies it into such memfds (--restore-memory).
    let mem = match &restore {
        Some((state, file)) => {
            let dir = cfg.restore.as_deref().unwrap_or(std::path::Path::new(""));
            let named = |e| {
                anyhow!(
                    "snapshot {}: {e}",
                    dir.join(snapshot::MEMORY_FILE).display()
                )
            };
            match cfg.restore_memory {
                RestoreMemory::Map => {
                    let (mem, extents) =
                        snapshot::memory::restore(file, &state.memory, cfg.mem_bytes)
                            .map_err(named)?;
                    debug!("guest RAM: {extents} data extents of the memory file mapped copy-on-write, the rest anonymous");
                    mem
                }
                RestoreMemory::Copy => {
                    let t = Instant::now();
                    let (mem, copied) =
                        snapshot::memory::restore_copy(file, &state.memory, cfg.mem_bytes)
                            .map_err(named)?;
                    debug!(
                        "guest RAM copied into memfds: {copied} bytes of data extents in {:?}",
                        t.elapsed()
                    );
                    mem
                }
            }
        }
        None => memory::create(cfg.mem_bytes, cfg.fs.is_some())?,
    };
    phases.mark("guest RAM");
    memory::register(&vm.fd, &mem)?;
    vm.setup_platform()?;
    if let Some((state, _)) = &restore {
        vm_state::restore(&vm.fd, &state.vm).context("restoring the VM's KVM state")?;
    }

    // Boot payload first: a bad kernel or initrd is the most likely user error.
    // virtio-mmio slots as planned (cold boot: 0 = vsock, then the VMM's own devices,
    // virtio-fs, the placeholders last).
    phases.mark("RAM slots, KVM state");
    let mut dm = DeviceManager::new();
    dm.allocate_mmio_slots(plan.len());
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

    // vsock: served by the VMM itself, its host side a Unix socket (hybrid vsock, see
    // devices/virtio/vsock), bound here, before the jail; no /dev/vhost-vsock.
    let vsock_uds = match &cfg.vsock_uds {
        Some(p) => Some(hvsock::bind(p).context("cannot create the vsock socket")?),
        None => None,
    };
    let fs_backend = fs_pending.map(vfs::PendingBackend::finish).transpose()?;
    phases.mark("payload, fs handshake");
    let mut devs = attach::Devices {
        vsock_uds,
        fs_backend,
        fs_bounce,
        hvc_out,
        largest_disk: 0,
    };
    for (i, slot) in plan.iter().enumerate() {
        attach::slot(&mut dm, &vm.fd, cfg, &mem, slot.device, &mut devs)
            .with_context(|| format!("virtio-mmio slot {i}"))?;
    }
    phases.mark("devices");
    let largest_disk = devs.largest_disk;

    let vcpus = match (&restore, &bi) {
        (Some((state, _)), _) => vcpu::create_restored(&vm, &state.vcpus)?,
        (None, Some(bi)) => vcpu::create(&vm, cfg.vcpus, bi)?,
        (None, None) => bail!("no boot information"),
    };
    let vcpus: Vec<Arc<Mutex<VcpuFd>>> =
        vcpus.into_iter().map(|v| Arc::new(Mutex::new(v))).collect();
    phases.mark("vCPUs");
    // The devices' state after the vCPUs': restoring a device may raise its interrupt (the
    // used buffers a restored guest must hear of, vsock's transport reset), and a vCPU's
    // restored LAPIC state would wipe an interrupt delivered before it (seen: the guest then
    // handled the vsock reset only at the device's next interrupt, racing the first host
    // connection).
    if let Some((state, _)) = &restore {
        let transports = dm.transports();
        for (i, ((t, saved), slot)) in transports.iter().zip(&state.devices).zip(&plan).enumerate()
        {
            if slot.fills_placeholder {
                // A new device in a placeholder slot starts reset; the guest probes it when
                // the slot is bound again.
                debug!(
                    "virtio-mmio slot {i}: placeholder filled with {:?}",
                    slot.device
                );
                continue;
            }
            lock_transport(t)
                .restore_state(saved)
                .map_err(|e| anyhow!("snapshot: virtio-mmio slot {i}: {e}"))?;
        }
    }

    if restore.is_some() {
        phases.mark("device state");
    }
    // What the guest will read in each slot (DeviceID and Status registers): a filled
    // placeholder shows its device, reset.
    if tracing::enabled!(tracing::Level::DEBUG) {
        debug!(
            "virtio-mmio slots (DeviceID/Status): {}",
            slot_registers(&dm)
        );
    }

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

    // Compiled before the threads start so that a filter error is a plain startup error
    // (exit 1). (The thread's classes above: a snapshotter exactly with --snapshot-root.)
    debug_assert_eq!(snapshotter.is_some(), cfg.snapshot_root.is_some());
    let (main_filter, vcpu_filter) = match filters {
        Some(t) => {
            let (main, vcpu) = t
                .join()
                .map_err(|_| anyhow!("the thread compiling the seccomp filters panicked"))??;
            (Some(main), Some(vcpu))
        }
        None => (None, None),
    };
    phases.mark("filters compiled");
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
    // A cold boot is watched until the guest activates a virtio device (boot_watch.rs).
    let boot_watch = BootWatch::new(
        t0,
        cfg.boot_watch.filter(|_| restore.is_none()),
        VcpuProbe::new(vcpus.clone(), pauser.clone()),
        dm.transports().to_vec(),
    );
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
        boot_watch,
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
    phases.mark("limits");
    if let Some(j) = cfg.jail {
        let jailed = jail::enter(j, c"/dev")?;
        debug!("jail: {jailed:?}, uid {} gid {}", j.uid, j.gid);
    }
    // The kick that stops vCPUs: control `pause` and the boot watch.
    pause::install_kick_handler().context("installing the vCPU kick signal handler")?;
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
    phases.mark("jail, threads, filters");
    debug!(
        "VM {} in {:?} ({})",
        if cfg.restore.is_some() {
            "restored"
        } else {
            "set up"
        },
        t0.elapsed(),
        phases
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

/// `slot:DeviceID/Status` of every slot, read through the transports' register windows.
fn slot_registers(dm: &DeviceManager) -> String {
    use crate::devices::virtio::transport::reg;
    let read = |t: &crate::devices::SharedTransport, offset| {
        let mut b = [0u8; 4];
        lock_transport(t).read(offset, &mut b);
        u32::from_le_bytes(b)
    };
    dm.transports()
        .iter()
        .enumerate()
        .map(|(i, t)| format!("{i}:{}/{}", read(t, reg::DEVICE_ID), read(t, reg::STATUS)))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Where the build's time went (the `VM set up in`/`VM restored in` debug line).
struct Phases {
    last: Instant,
    done: Vec<(&'static str, std::time::Duration)>,
}

impl Phases {
    fn new(start: Instant) -> Self {
        Phases {
            last: start,
            done: Vec::new(),
        }
    }

    /// The phase `name` ended now.
    fn mark(&mut self, name: &'static str) {
        let now = Instant::now();
        self.done.push((name, now - self.last));
        self.last = now;
    }
}

impl std::fmt::Display for Phases {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, (name, d)) in self.done.iter().enumerate() {
            let sep = if i == 0 { "" } else { ", " };
            write!(f, "{sep}{name} {:.1} ms", d.as_secs_f64() * 1000.0)?;
        }
        Ok(())
    }
}
