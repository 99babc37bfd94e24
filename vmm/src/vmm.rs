//! Builds the VM from a [`VmConfig`], runs one thread per vCPU and waits for the end.

use std::fs::OpenOptions;
use std::os::unix::io::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use kvm_bindings::{
    kvm_pit_config, kvm_userspace_memory_region, KVM_MAX_CPUID_ENTRIES, KVM_PIT_SPEAKER_DUMMY,
};
use kvm_ioctls::{Cap, IoEventAddress, Kvm, VcpuExit, VcpuFd, VmFd};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::api::{ApiServer, Command};
use crate::args::VmConfig;
use crate::cmdline::{self, MmioDeviceArg};
use crate::devices::console_log::{ConsoleLog, SharedLog, FLUSH_INTERVAL};
use crate::devices::serial::{ConsoleOut, ConsoleSerial};
use crate::devices::virtio::block::{BlkDevice, Disk};
use crate::devices::virtio::console::ConsoleDevice;
use crate::devices::virtio::fs::{self as vfs, FsDevice};
use crate::devices::virtio::net::{NetDevice, Tap};
use crate::devices::virtio::rng::RngDevice;
use crate::devices::virtio::transport::reg;
use crate::devices::virtio::vsock::{self as hvsock, HvsockDevice};
use crate::devices::virtio::{MmioTransport, VirtioDevice, VIRTIO_RING_F_EVENT_IDX};
use crate::devices::{Action, Devices, SharedTransport};
use crate::jail::limits;
use crate::layout::{self, EBDA_START, KVM_TSS_ADDR, SERIAL_IRQ, VIRTIO_MMIO_SIZE};
use crate::pause::{self, Pauser};
use crate::seccomp::{self, ThreadClass};
use crate::{boot, cpu, debug, jail, mptable};

/// How the VM ended; [`Exit::code`] maps it to the process exit status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    /// The guest reset, rebooted, powered off or triple faulted.
    GuestStopped,
    /// SIGTERM or SIGINT.
    Signal(i32),
    /// The guest stopped by itself (reset, triple fault, system event) within
    /// [`PANIC_WINDOW`] of a `Kernel panic` line on its console: most likely a kernel panic
    /// (`panic=1` resets one second after it). Only a hint: the text is guest output, which
    /// any guest process that can open the console device can print, so it never ends a VM
    /// that keeps running.
    Panic,
    /// A VMM error.
    Error(String),
}

impl Exit {
    /// Process exit status per `docs/design.md`.
    pub fn code(&self) -> i32 {
        match self {
            Exit::GuestStopped | Exit::Signal(_) => 0,
            Exit::Error(_) => 1,
            Exit::Panic => 2,
        }
    }
}

/// Shared between the vCPU threads, the console and the main thread: the first final exit
/// reason wins; the main thread is woken through `evt`.
pub struct ExitState {
    evt: EventFd,
    reason: Mutex<Option<Exit>>,
    /// When the console last showed the panic marker.
    panic_seen: Mutex<Option<Instant>>,
    /// The marker was reported on stderr (once).
    panic_told: AtomicBool,
}

impl ExitState {
    fn new() -> Result<Arc<Self>> {
        Ok(Arc::new(ExitState {
            evt: EventFd::new(EFD_NONBLOCK).context("eventfd")?,
            reason: Mutex::new(None),
            panic_seen: Mutex::new(None),
            panic_told: AtomicBool::new(false),
        }))
    }

    /// The console printed the panic marker (called on every sighting).
    fn console_panic_marker(&self) {
        *self.panic_seen.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
        if !self.panic_told.swap(true, Ordering::SeqCst) {
            eprintln!(
                "kata-vmm: the guest console printed \"Kernel panic\" (guest output, not \
                 trusted: it only labels a guest stop that follows within {}s)",
                PANIC_WINDOW.as_secs()
            );
        }
    }

    /// A guest stop right after the marker is reported as a panic.
    fn recent_panic_marker(&self) -> bool {
        self.panic_seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some_and(|t| t.elapsed() <= PANIC_WINDOW)
    }

    /// Records `exit` unless another reason came first, and wakes the main thread.
    pub fn set(&self, exit: Exit) {
        let exit = if exit == Exit::GuestStopped && self.recent_panic_marker() {
            Exit::Panic
        } else {
            exit
        };
        let mut r = self.reason.lock().unwrap_or_else(|p| p.into_inner());
        if r.is_none() {
            *r = Some(exit);
        }
        let _ = self.evt.write(1);
    }

    fn get(&self) -> Option<Exit> {
        self.reason
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// A guest stop this soon after the console's last `Kernel panic` line is exit status 2. The
/// guest kernel (`panic=1`) resets one second after its panic message ends; the window is
/// generous for slow (emulated) hosts. The text alone never ends the VM: a container that
/// can open ttyS0/hvc0 can print it.
const PANIC_WINDOW: Duration = Duration::from_secs(10);

fn register_memory(vm: &VmFd, mem: &GuestMemoryMmap) -> Result<()> {
    for (slot, r) in mem.iter().enumerate() {
        let region = kvm_userspace_memory_region {
            slot: slot as u32,
            flags: 0,
            guest_phys_addr: r.start_addr().0,
            memory_size: r.len(),
            userspace_addr: r.as_ptr() as u64,
        };
        // SAFETY: the region is a live mmap owned by `mem`, which outlives the VM (it is kept
        // in an Arc until the process exits), and slots do not overlap.
        unsafe { vm.set_user_memory_region(region) }
            .with_context(|| format!("KVM_SET_USER_MEMORY_REGION slot {slot}"))?;
    }
    Ok(())
}

fn block_signals() -> Result<libc::c_int> {
    // SAFETY: plain libc calls on a stack sigset; the mask is set before any thread is spawned
    // so every vCPU thread inherits it, and the signals are then only read via signalfd.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        let rc = libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        if rc != 0 {
            bail!("pthread_sigmask: {}", std::io::Error::from_raw_os_error(rc));
        }
        let fd = libc::signalfd(-1, &set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK);
        if fd < 0 {
            bail!("signalfd: {}", std::io::Error::last_os_error());
        }
        Ok(fd)
    }
}

fn read_signal(fd: libc::c_int) -> Option<i32> {
    // SAFETY: signalfd_siginfo is plain old data; read() writes at most its size into it.
    unsafe {
        let mut info: libc::signalfd_siginfo = std::mem::zeroed();
        let n = libc::read(
            fd,
            &mut info as *mut _ as *mut libc::c_void,
            std::mem::size_of::<libc::signalfd_siginfo>(),
        );
        (n == std::mem::size_of::<libc::signalfd_siginfo>() as isize)
            .then_some(info.ssi_signo as i32)
    }
}

fn vcpu_loop(
    id: u8,
    mut vcpu: VcpuFd,
    devices: Devices,
    exit: Arc<ExitState>,
    filter: Option<(ThreadClass, seccompiler::BpfProgram)>,
    pauser: Arc<Pauser>,
) {
    pauser.register();
    // The vCPU is fully set up; jail the thread before the guest runs on it.
    if let Some((class, f)) = filter {
        if let Err(e) = seccomp::install(class, &f) {
            exit.set(Exit::Error(format!("vCPU {id}: {e}")));
            return;
        }
    }
    loop {
        pauser.park_while_paused();
        let stop = match vcpu.run() {
            Ok(VcpuExit::IoIn(port, data)) => {
                devices.pio_read(port, data);
                None
            }
            Ok(VcpuExit::IoOut(port, data)) => match devices.pio_write(port, data) {
                Action::Reset => {
                    debug!("vCPU {id}: i8042 reset");
                    Some(Exit::GuestStopped)
                }
                Action::Continue => None,
            },
            Ok(VcpuExit::MmioRead(addr, data)) => {
                devices.mmio_read(addr, data);
                None
            }
            Ok(VcpuExit::MmioWrite(addr, data)) => {
                devices.mmio_write(addr, data);
                None
            }
            // Not the guest's orderly reset (that is the i8042 write above): say which, so
            // a guest that dies before its agent answers is not a mystery.
            Ok(VcpuExit::Shutdown) => {
                eprintln!("kata-vmm: vCPU {id}: guest stopped: triple fault (KVM_EXIT_SHUTDOWN)");
                Some(Exit::GuestStopped)
            }
            Ok(VcpuExit::Hlt) => {
                eprintln!("kata-vmm: vCPU {id}: guest stopped: halted (KVM_EXIT_HLT)");
                Some(Exit::GuestStopped)
            }
            Ok(VcpuExit::SystemEvent(kind, _)) => {
                eprintln!("kata-vmm: vCPU {id}: guest stopped: KVM system event {kind}");
                Some(Exit::GuestStopped)
            }
            Ok(VcpuExit::FailEntry(reason, cpu)) => Some(Exit::Error(format!(
                "vCPU {id}: KVM entry failed (hardware reason {reason:#x}, cpu {cpu})"
            ))),
            Ok(VcpuExit::InternalError) => {
                Some(Exit::Error(format!("vCPU {id}: KVM internal error")))
            }
            Ok(other) => {
                debug!("vCPU {id}: ignored exit {other:?}");
                None
            }
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => None,
            Err(e) => Some(Exit::Error(format!("vCPU {id}: KVM_RUN: {e}"))),
        };
        if let Some(s) = stop {
            exit.set(s);
            return;
        }
    }
}

/// Boots the VM described by `cfg` and runs it to the end.
pub fn run(cfg: &VmConfig) -> Result<Exit> {
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

    let kvm = Kvm::new().map_err(|e| anyhow!("cannot open /dev/kvm: {e}"))?;
    let vm = kvm.create_vm().map_err(|e| anyhow!("KVM_CREATE_VM: {e}"))?;

    // virtio-fs: connected now (a path, before the jail; a backend that is not there fails
    // fast, before any guest memory exists).
    let fs_backend = match &cfg.fs {
        Some(f) => Some(vfs::connect(&f.socket)?),
        None => None,
    };

    let ranges = layout::ram_ranges(cfg.mem_bytes);
    // With --fs guest RAM is a shared mapping of sealed memfds the backend maps too (see
    // "Memory map" in vmm/README.md); otherwise anonymous private memory as before.
    let mem = if cfg.fs.is_some() {
        vfs::shared_guest_memory(&ranges)
    } else {
        GuestMemoryMmap::<()>::from_ranges(&ranges).map_err(anyhow::Error::from)
    };
    let mem = Arc::new(mem.with_context(|| {
        format!(
            "cannot allocate {} MiB of guest memory",
            cfg.mem_bytes >> 20
        )
    })?);
    register_memory(&vm, &mem)?;

    vm.set_tss_address(KVM_TSS_ADDR)
        .map_err(|e| anyhow!("KVM_SET_TSS_ADDR: {e}"))?;
    vm.create_irq_chip()
        .map_err(|e| anyhow!("KVM_CREATE_IRQCHIP: {e}"))?;
    let pit = kvm_pit_config {
        flags: KVM_PIT_SPEAKER_DUMMY,
        ..Default::default()
    };
    vm.create_pit2(pit)
        .map_err(|e| anyhow!("KVM_CREATE_PIT2: {e}"))?;

    // Boot payload first: a bad kernel or initrd is the most likely user error.
    // virtio-mmio slots: 0 = vsock, then the VMM's own devices.
    let n_virtio = 1
        + usize::from(cfg.rng)
        + cfg.disks.len()
        + cfg.nets.len()
        + usize::from(cfg.virtio_console)
        + usize::from(cfg.fs.is_some());
    let mmio_args: Vec<MmioDeviceArg> = (0..n_virtio)
        .map(|i| MmioDeviceArg {
            base: layout::virtio_mmio_addr(i),
            size: VIRTIO_MMIO_SIZE,
            irq: layout::virtio_irq(i),
        })
        .collect();
    let cmdline = cmdline::build(&mmio_args, &cfg.extra_cmdline)?;
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

    // Exit plumbing.
    let exit = ExitState::new()?;

    // Serial console on IRQ 4.
    let serial_irq = EventFd::new(EFD_NONBLOCK).context("eventfd")?;
    vm.register_irqfd(&serial_irq, SERIAL_IRQ)
        .map_err(|e| anyhow!("KVM_IRQFD (serial): {e}"))?;
    let on_panic = |exit: Arc<ExitState>| -> Box<dyn Fn() + Send> {
        Box::new(move || exit.console_panic_marker())
    };
    // virtio-console output goes to the same bounded log (one cap and one rate for both)
    // with its own panic scan.
    let hvc_out = cfg
        .virtio_console
        .then(|| ConsoleOut::new(console_log.clone(), on_panic(exit.clone())));
    let out = ConsoleOut::new(console_log.clone(), on_panic(exit.clone()));
    let serial = Arc::new(Mutex::new(ConsoleSerial::new(serial_irq, out)));

    // vsock (slot 0): served by the VMM itself, its host side a Unix socket (hybrid vsock,
    // see devices/virtio/vsock), bound here, before the jail; no /dev/vhost-vsock.
    let vsock_uds = match &cfg.vsock_uds {
        Some(p) => Some(hvsock::bind(p).context("cannot create the vsock socket")?),
        None => None,
    };
    let vsock: Box<dyn VirtioDevice> =
        Box::new(HvsockDevice::new(cfg.vsock_cid, vsock_uds, mem.clone()).context("virtio-vsock")?);
    let mut virtio: Vec<SharedTransport> = Vec::new();
    let mut queue_events = Vec::new();
    let (t, evts) = own_device(&vm, 0, vsock, &mem).context("virtio-vsock")?;
    let mut backends = vec![t.clone()];
    virtio.push(t);
    queue_events.extend(evts);
    if cfg.rng {
        let rng: Box<dyn VirtioDevice> = Box::new(RngDevice::new(mem.clone()));
        let (t, evts) = own_device(&vm, virtio.len(), rng, &mem).context("virtio-rng")?;
        virtio.push(t);
        queue_events.extend(evts);
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
        let (t, evts) = own_device(&vm, virtio.len(), blk, &mem)
            .with_context(|| format!("virtio-blk {}", d.path.display()))?;
        virtio.push(t);
        queue_events.extend(evts);
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
        let (t, evts) = own_device(&vm, virtio.len(), net, &mem)
            .with_context(|| format!("virtio-net {}", n.tap))?;
        backends.push(t.clone());
        virtio.push(t);
        queue_events.extend(evts);
    }
    if let Some(out) = hvc_out {
        let hvc: Box<dyn VirtioDevice> = Box::new(ConsoleDevice::new(out, mem.clone()));
        let (t, evts) = own_device(&vm, virtio.len(), hvc, &mem).context("virtio-console")?;
        virtio.push(t);
        queue_events.extend(evts);
    }
    // virtio-fs: the last slot; vhost-style wiring like vsock (kicks and call go to the
    // backend, not through the VMM).
    let mut fs_watch = None;
    if let (Some(f), Some(backend)) = (&cfg.fs, fs_backend) {
        let index = virtio.len();
        let base = layout::virtio_mmio_addr(index);
        let call = EventFd::new(EFD_NONBLOCK).context("eventfd")?;
        vm.register_irqfd(&call, layout::virtio_irq(index))
            .map_err(|e| anyhow!("KVM_IRQFD (virtio-fs): {e}"))?;
        let mut kicks = Vec::new();
        for q in 0..vfs::NUM_QUEUES {
            let kick = EventFd::new(EFD_NONBLOCK).context("eventfd")?;
            vm.register_ioevent(
                &kick,
                &IoEventAddress::Mmio(base + reg::QUEUE_NOTIFY),
                q as u32,
            )
            .map_err(|e| anyhow!("KVM_IOEVENTFD (virtio-fs queue {q}): {e}"))?;
            kicks.push(kick);
        }
        debug!(
            "fs: tag {} socket {} backend features {:#x}",
            f.tag,
            f.socket.display(),
            backend.features()
        );
        fs_watch = Some(backend.raw_fd());
        let dev: Box<dyn VirtioDevice> =
            Box::new(FsDevice::new(f, backend, mem.clone(), kicks, call));
        virtio.push(Arc::new(Mutex::new(MmioTransport::new(dev, mem.clone()))));
    }

    // vCPUs.
    let base_cpuid = kvm
        .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
        .map_err(|e| anyhow!("KVM_GET_SUPPORTED_CPUID: {e}"))?;
    let tsc_deadline = kvm.check_extension(Cap::TscDeadlineTimer);
    let mut vcpus = Vec::new();
    for id in 0..cfg.vcpus {
        let vcpu = vm
            .create_vcpu(u64::from(id))
            .map_err(|e| anyhow!("KVM_CREATE_VCPU {id}: {e}"))?;
        cpu::configure(&vcpu, id, cfg.vcpus, &base_cpuid, tsc_deadline, &bi)?;
        vcpus.push(vcpu);
    }

    // Compiled up front so that a filter error is a plain startup error (exit 1).
    let vcpu_class = ThreadClass::Vcpu {
        vhost_user: cfg.fs.is_some(),
    };
    let (main_filter, vcpu_filter) = if cfg.seccomp {
        (
            Some(seccomp::filter(ThreadClass::Main {
                block_io: !cfg.disks.is_empty(),
                api: api.is_some(),
                vsock_uds: cfg.vsock_uds.is_some(),
            })?),
            Some(seccomp::filter(vcpu_class)?),
        )
    } else {
        (None, None)
    };
    let test_forbidden = std::env::var_os(seccomp::TEST_FORBIDDEN_ENV).is_some_and(|v| v == "1");

    let sigfd = block_signals()?;
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
        },
        vcpus: cfg.vcpus,
        largest_file: cfg.console_limits.max_file_size().max(largest_disk),
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
    // The VMM's own devices (all of them but virtio-fs), in slot order, for their exit
    // summaries.
    let own_devices = virtio.clone();
    debug_assert_eq!(virtio.len(), n_virtio);
    let devices = Devices { serial, virtio };
    let pauser = Arc::new(Pauser::new(vcpus.len()));
    if api.is_some() {
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
            .spawn(move || vcpu_loop(id as u8, vcpu, d, e, f, p))
            .context("spawning a vCPU thread")?;
        threads.push(t);
    }
    // Every device exists and every thread is spawned: jail the main thread before its event
    // loop handles anything the guest does.
    if let Some(f) = &main_filter {
        seccomp::install(
            ThreadClass::Main {
                block_io: false,
                api: false,
                vsock_uds: false,
            },
            f,
        )?;
        debug!("seccomp filters installed");
        if test_forbidden {
            seccomp::forbidden_syscall();
        }
    }
    debug!("VM set up in {:?}", t0.elapsed());
    let ended = event_loop(
        &exit,
        sigfd,
        &queue_events,
        fs_watch,
        &backends,
        api,
        &pauser,
        &console_log,
    );
    {
        let mut log = console_log.lock().unwrap_or_else(|p| p.into_inner());
        log.flush_tail();
        eprintln!("kata-vmm: {}", log.report());
    }
    for d in &own_devices {
        if let Some(report) = lock_transport(d).exit_report() {
            eprintln!("kata-vmm: {report}");
        }
    }
    ended
}

/// How long a `pause` command waits for every vCPU to leave `KVM_RUN`.
const PAUSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Runs one control command; the reply line.
fn api_command(cmd: Command, pauser: &Pauser) -> String {
    match cmd {
        Command::Ping => "ok pong".into(),
        Command::Pause => match pauser.pause(PAUSE_TIMEOUT) {
            Ok(()) => {
                debug!("paused");
                "ok paused".into()
            }
            Err(e) => format!("error pause: {e}"),
        },
        Command::Resume => {
            pauser.resume();
            debug!("resumed");
            "ok running".into()
        }
        Command::State if pauser.is_paused() => "ok paused".into(),
        Command::State => "ok running".into(),
    }
}

/// `KATA_VMM_NO_EVENT_IDX=1`: the VMM's own devices do not offer `VIRTIO_RING_F_EVENT_IDX`
/// (to measure or debug notification suppression; the driver then kicks and is interrupted
/// for every buffer).
pub const NO_EVENT_IDX_ENV: &str = "KATA_VMM_NO_EVENT_IDX";

/// A queue of one of the VMM's own virtio devices: its QueueNotify ioeventfd.
struct QueueEvent {
    evt: EventFd,
    transport: SharedTransport,
    queue: usize,
}

/// Puts `dev` (served by the VMM, not vhost) in virtio-mmio slot `index`: an irqfd on its IRQ
/// for the transport, one ioeventfd per queue on QueueNotify (datamatch = queue index).
fn own_device(
    vm: &VmFd,
    index: usize,
    dev: Box<dyn VirtioDevice>,
    mem: &Arc<GuestMemoryMmap>,
) -> Result<(SharedTransport, Vec<QueueEvent>)> {
    let base = layout::virtio_mmio_addr(index);
    let irq = EventFd::new(EFD_NONBLOCK).context("eventfd")?;
    vm.register_irqfd(&irq, layout::virtio_irq(index))
        .map_err(|e| anyhow!("KVM_IRQFD: {e}"))?;
    let queues = dev.queue_max_sizes().len();
    let mut t = MmioTransport::new(dev, mem.clone());
    t.set_irq(irq);
    if std::env::var_os(NO_EVENT_IDX_ENV).is_some_and(|v| v == "1") {
        t.withhold_features(1 << VIRTIO_RING_F_EVENT_IDX);
    }
    let mut evts = Vec::new();
    for q in 0..queues {
        let evt = EventFd::new(EFD_NONBLOCK).context("eventfd")?;
        vm.register_ioevent(
            &evt,
            &IoEventAddress::Mmio(base + reg::QUEUE_NOTIFY),
            q as u32,
        )
        .map_err(|e| anyhow!("KVM_IOEVENTFD (queue {q}): {e}"))?;
        evts.push(evt);
    }
    // The transport re-signals a queue through the same eventfd (see rekick_queues).
    let clones = evts
        .iter()
        .map(|e| e.try_clone().context("eventfd dup"))
        .collect::<Result<Vec<_>>>()?;
    t.set_queue_events(clones);
    let t: SharedTransport = Arc::new(Mutex::new(t));
    let events = evts
        .into_iter()
        .enumerate()
        .map(|(queue, evt)| QueueEvent {
            evt,
            transport: t.clone(),
            queue,
        })
        .collect();
    Ok((t, events))
}

fn lock_transport(
    t: &SharedTransport,
) -> std::sync::MutexGuard<'_, MmioTransport<Box<dyn VirtioDevice>>> {
    t.lock().unwrap_or_else(|p| p.into_inner())
}

/// The main thread's loop (under its seccomp filter): serves queue notifications of the VMM's
/// own devices and waits for the first exit reason or a signal; writes the console log's
/// tail once the guest has been quiet for a second.
#[allow(clippy::too_many_arguments)]
fn event_loop(
    exit: &ExitState,
    sigfd: libc::c_int,
    queues: &[QueueEvent],
    fs_watch: Option<RawFd>,
    backends: &[SharedTransport],
    mut api: Option<ApiServer>,
    pauser: &Pauser,
    console_log: &SharedLog,
) -> Result<Exit> {
    let pollin = |fd| libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let mut fds = vec![pollin(exit.evt.as_raw_fd()), pollin(sigfd)];
    fds.extend(queues.iter().map(|q| pollin(q.evt.as_raw_fd())));
    // The vhost-user socket, watched for a hang-up only (no events asked: the vCPU thread
    // doing a DRIVER_OK owns its traffic; POLLHUP/POLLERR are always reported).
    let fs_at = fds.len();
    fds.push(libc::pollfd {
        fd: fs_watch.unwrap_or(-1),
        events: 0,
        revents: 0,
    });
    let fixed = fds.len();
    let lock_log = || console_log.lock().unwrap_or_else(|p| p.into_inner());
    loop {
        if let Some(r) = exit.get() {
            return Ok(r);
        }
        // A console log tail not yet in the file: wake up once the guest is quiet.
        let timeout = if lock_log().dirty() {
            FLUSH_INTERVAL.as_millis() as i32
        } else {
            -1
        };
        // Device backends (taps) are polled only for what the device can take now (fd -1:
        // not at all, so a tap without RX buffers cannot wake the loop); the control socket's
        // fds change as connections come and go.
        fds.truncate(fixed);
        for b in backends {
            let want = lock_transport(b).backend_poll();
            fds.push(match want {
                Some((fd, ev)) if ev != 0 => libc::pollfd {
                    fd,
                    events: ev,
                    revents: 0,
                },
                _ => pollin(-1),
            });
        }
        let api_at = fds.len();
        if let Some(a) = &api {
            fds.extend(a.fds().into_iter().map(pollin));
        }
        for f in &mut fds {
            f.revents = 0;
        }
        // SAFETY: `fds` is a valid array of pollfd for the duration of the call.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                bail!("poll: {e}");
            }
            continue;
        }
        if n == 0 {
            lock_log().flush_tail();
        }
        if fds[0].revents & libc::POLLIN != 0 {
            let _ = exit.evt.read();
        }
        if fds[1].revents & libc::POLLIN != 0 {
            if let Some(sig) = read_signal(sigfd) {
                debug!("signal {sig}");
                exit.set(Exit::Signal(sig));
            }
        }
        for (f, q) in fds[2..fs_at].iter().zip(queues) {
            if f.revents & libc::POLLIN != 0 {
                // The counter is the number of guest kicks since the last read (plus the
                // transport's own re-kicks, which it subtracts).
                let kicks = q.evt.read().unwrap_or(0);
                lock_transport(&q.transport).notify_queue(q.queue, kicks);
            }
        }
        if fds[fs_at].fd >= 0 && fds[fs_at].revents != 0 {
            eprintln!(
                "kata-vmm: warning: virtio-fs: the vhost-user backend closed its socket \
                 (virtiofsd gone?); the guest's virtio-fs requests are no longer served"
            );
            // Once: a hung-up socket stays readable-for-HUP forever.
            fds[fs_at].fd = -1;
        }
        for (f, b) in fds[fixed..api_at].iter().zip(backends) {
            if f.fd >= 0 && f.revents != 0 {
                lock_transport(b).backend_ready(f.revents);
            }
        }
        if let Some(a) = &mut api {
            // POLLHUP/POLLERR count too: the read then sees the end and drops the connection.
            let ready: Vec<bool> = fds[api_at..].iter().map(|f| f.revents != 0).collect();
            a.serve(&ready, &mut |cmd| api_command(cmd, pauser));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn console_panic_text_is_only_a_label_for_a_guest_stop() {
        // The text alone ends nothing: no exit reason is recorded.
        let e = ExitState::new().unwrap();
        e.console_panic_marker();
        e.console_panic_marker();
        assert_eq!(e.get(), None);
        // A guest stop right after it is labelled a panic (status 2) ...
        e.set(Exit::GuestStopped);
        assert_eq!(e.get(), Some(Exit::Panic));
        assert_eq!(Exit::Panic.code(), 2);
        // ... a signal (the shim's SIGTERM) stays a signal, status 0 ...
        let e = ExitState::new().unwrap();
        e.console_panic_marker();
        e.set(Exit::Signal(libc::SIGTERM));
        assert_eq!(e.get().map(|x| x.code()), Some(0));
        // ... and a stop long after the last marker is a plain stop.
        let e = ExitState::new().unwrap();
        *e.panic_seen.lock().unwrap() = Instant::now().checked_sub(PANIC_WINDOW * 2);
        e.set(Exit::GuestStopped);
        assert_eq!(e.get(), Some(Exit::GuestStopped));
        // Without any marker: a plain stop.
        let e = ExitState::new().unwrap();
        e.set(Exit::GuestStopped);
        assert_eq!(e.get(), Some(Exit::GuestStopped));
    }
}
