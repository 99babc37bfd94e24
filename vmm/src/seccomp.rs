//! seccomp-bpf allow-lists, one per thread class (see "Seccomp" in `vmm/README.md`).
//!
//! Each thread installs its own filter once its setup is done and before it handles anything
//! the guest controls: a vCPU thread before its first `KVM_RUN`, the main thread after every
//! device exists and the vCPU threads are spawned (so it never needs `clone`, `open` or the
//! KVM setup ioctls). Filters are per thread (no TSYNC), so the main thread's filter is not
//! inherited by the vCPU threads and vice versa. Anything not listed kills the whole process
//! (`SECCOMP_RET_KILL_PROCESS`, i.e. SIGSYS). `PR_SET_NO_NEW_PRIVS` is set by
//! [`seccompiler::apply_filter`] before the filter goes in.
//!
//! The lists come from `strace -f` of real boots plus what the code can do on an error path
//! (a warning on stderr, a thread ending, a poisoned lock). `ioctl` is narrowed by request
//! number; `mmap`/`mprotect` may never ask for `PROT_EXEC`.

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

/// A filter could not be built or installed.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    /// seccompiler refused a rule or failed to compile the program.
    #[error("building the {0} seccomp filter: {1}")]
    Build(&'static str, seccompiler::BackendError),
    /// `prctl(PR_SET_NO_NEW_PRIVS)` or `seccomp(SET_MODE_FILTER)` failed.
    #[error("installing the {0} seccomp filter: {1}")]
    Install(&'static str, seccompiler::Error),
}

/// The thread classes of `kata-vmm`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThreadClass {
    /// The main thread: event loop (signals, exit, virtio queue notifications of the VMM's own
    /// devices but virtio-blk), process exit.
    Main {
        /// It serves the control socket (`--api-sock`): accept4.
        api: bool,
        /// The vsock device has a host socket (`--vsock-uds`): accept4.
        vsock_uds: bool,
        /// The control request `snapshot` can run (`--snapshot-root` with `--api-sock`): the
        /// KVM state reads of the VM and its vCPUs ([`snapshot_ioctls`]), and creating,
        /// writing, syncing and renaming files below the snapshot root's directory fd.
        snapshot: bool,
    },
    /// A virtio-blk queue worker thread (`blkN`, one per `--disk`): waits on its queue
    /// eventfds (an epoll of its own) and serves the requests (pread/pwrite/fdatasync on the disk file).
    BlockIo,
    /// A vCPU thread: `KVM_RUN`, port/MMIO exits, vhost-user activation of virtio-fs on
    /// DRIVER_OK.
    Vcpu {
        /// The VM has a vhost-user device (`--fs`): its DRIVER_OK and reset talk to the
        /// backend over the already connected socket (`sendmsg`, `recvmsg`).
        vhost_user: bool,
    },
}

impl ThreadClass {
    fn name(self) -> &'static str {
        match self {
            ThreadClass::Main { .. } => "main",
            ThreadClass::Vcpu { .. } => "vcpu",
            ThreadClass::BlockIo => "blk",
        }
    }
}

mod kvm {
    use kvm_bindings::*;
    use vmm_sys_util::{ioctl_io_nr, ioctl_ior_nr, ioctl_iowr_nr};
    ioctl_io_nr!(KVM_RUN, KVMIO, 0x80);
    // The reads of a snapshot (vstate::vm_state::capture, vcpu_state::capture), as
    // kvm-ioctls defines them.
    ioctl_io_nr!(KVM_CHECK_EXTENSION, KVMIO, 0x03);
    ioctl_iowr_nr!(KVM_GET_IRQCHIP, KVMIO, 0x62, kvm_irqchip);
    ioctl_ior_nr!(KVM_GET_CLOCK, KVMIO, 0x7c, kvm_clock_data);
    ioctl_ior_nr!(KVM_GET_PIT2, KVMIO, 0x9f, kvm_pit_state2);
    ioctl_ior_nr!(KVM_GET_REGS, KVMIO, 0x81, kvm_regs);
    ioctl_ior_nr!(KVM_GET_SREGS, KVMIO, 0x83, kvm_sregs);
    ioctl_iowr_nr!(KVM_GET_MSRS, KVMIO, 0x88, kvm_msrs);
    ioctl_ior_nr!(KVM_GET_LAPIC, KVMIO, 0x8e, kvm_lapic_state);
    ioctl_iowr_nr!(KVM_GET_CPUID2, KVMIO, 0x91, kvm_cpuid2);
    ioctl_ior_nr!(KVM_GET_MP_STATE, KVMIO, 0x98, kvm_mp_state);
    ioctl_ior_nr!(KVM_GET_VCPU_EVENTS, KVMIO, 0x9f, kvm_vcpu_events);
    ioctl_ior_nr!(KVM_GET_DEBUGREGS, KVMIO, 0xa1, kvm_debugregs);
    ioctl_ior_nr!(KVM_GET_XSAVE, KVMIO, 0xa4, kvm_xsave);
    ioctl_ior_nr!(KVM_GET_XCRS, KVMIO, 0xa6, kvm_xcrs);
    ioctl_io_nr!(KVM_GET_TSC_KHZ, KVMIO, 0xa3);
}
use kvm::KVM_RUN;

/// ioctl requests the main thread may issue when it can take snapshots: reads only (the VM's
/// clock, irqchip, PIT; each parked vCPU's registers, MSRs, LAPIC, events, CPUID, TSC rate;
/// capability checks). Nothing that changes the VM.
pub fn snapshot_ioctls() -> Vec<u64> {
    use kvm::*;
    vec![
        KVM_CHECK_EXTENSION(),
        KVM_GET_IRQCHIP(),
        KVM_GET_CLOCK(),
        KVM_GET_PIT2(),
        KVM_GET_REGS(),
        KVM_GET_SREGS(),
        KVM_GET_MSRS(),
        KVM_GET_LAPIC(),
        KVM_GET_CPUID2(),
        KVM_GET_MP_STATE(),
        KVM_GET_VCPU_EVENTS(),
        KVM_GET_DEBUGREGS(),
        KVM_GET_XSAVE(),
        KVM_GET_XCRS(),
        KVM_GET_TSC_KHZ(),
    ]
}

/// ioctl requests the main thread may always issue: the boot watch's reads of a parked vCPU
/// (registers, special registers, run state).
pub fn boot_watch_ioctls() -> Vec<u64> {
    use kvm::*;
    vec![KVM_GET_REGS(), KVM_GET_SREGS(), KVM_GET_MP_STATE()]
}

/// ioctl requests a vCPU thread may issue after its filter is in: `KVM_RUN` only (the
/// vsock device is the VMM's own now; no vhost-vsock calls on DRIVER_OK).
pub fn vcpu_ioctls() -> Vec<u64> {
    vec![KVM_RUN()]
}

type Rules = Vec<(i64, Vec<SeccompRule>)>;

fn cond(
    arg: u8,
    op: SeccompCmpOp,
    value: u64,
) -> Result<SeccompCondition, seccompiler::BackendError> {
    SeccompCondition::new(arg, SeccompCmpArgLen::Dword, op, value)
}

/// Unconditional allow.
fn allow(nrs: &[i64]) -> Rules {
    nrs.iter().map(|n| (*n, vec![])).collect()
}

/// Syscalls every thread needs: memory allocation (never executable), futexes of std's
/// locks, writes (console log, stderr, eventfds), closing fds when a thread or the process
/// ends, and the thread/process exit path.
fn common() -> Result<Rules, seccompiler::BackendError> {
    let mut r = allow(&[
        libc::SYS_brk,
        libc::SYS_munmap,
        libc::SYS_madvise,
        libc::SYS_mremap,
        libc::SYS_futex,
        libc::SYS_write,
        // The bounded console log writes at offsets (COM1 from vCPU threads, virtio-console
        // and the tail flush from main).
        libc::SYS_pwrite64,
        libc::SYS_close,
        libc::SYS_sigaltstack,
        libc::SYS_rt_sigprocmask,
        libc::SYS_rt_sigreturn,
        libc::SYS_clock_gettime,
        libc::SYS_sched_yield,
        libc::SYS_exit,
        libc::SYS_exit_group,
    ]);
    let no_exec = |arg| {
        SeccompRule::new(vec![cond(
            arg,
            SeccompCmpOp::MaskedEq(libc::PROT_EXEC as u64),
            0,
        )?])
    };
    r.push((libc::SYS_mmap, vec![no_exec(2)?]));
    r.push((libc::SYS_mprotect, vec![no_exec(2)?]));
    // std's OwnedFd drop checks the fd with F_GETFD in debug builds.
    r.push((
        libc::SYS_fcntl,
        vec![SeccompRule::new(vec![cond(
            1,
            SeccompCmpOp::Eq,
            libc::F_GETFD as u64,
        )?])?],
    ));
    Ok(r)
}

fn rules(class: ThreadClass) -> Result<Rules, seccompiler::BackendError> {
    let mut r = common()?;
    match class {
        ThreadClass::Main {
            api,
            vsock_uds,
            snapshot,
        } => {
            // The event loop's epoll (event-manager: wait, and register control socket
            // connections and device backend fds as they come and go) on the signalfd,
            // eventfds and backends; read them, fill virtio-rng buffers; the vsock device's
            // own epoll (its connections and deadline timerfd): register accepted
            // connections, arm the timer, half-close a connection (shutdown).
            r.extend(allow(&[
                libc::SYS_read,
                libc::SYS_getrandom,
                libc::SYS_epoll_wait,
                libc::SYS_epoll_pwait,
                libc::SYS_epoll_ctl,
                libc::SYS_timerfd_settime,
                libc::SYS_shutdown,
            ]));
            if api || vsock_uds {
                r.extend(allow(&[libc::SYS_accept4]));
            }
            // The boot watch (boot_watch.rs) stops the vCPUs (tgkill below) and reads their
            // registers, mode and run state; a snapshot reads more (a superset).
            let ioctls = if snapshot {
                snapshot_ioctls()
            } else {
                boot_watch_ioctls()
            };
            let ioctls = ioctls
                .into_iter()
                .map(|req| SeccompRule::new(vec![cond(1, SeccompCmpOp::Eq, req)?]))
                .collect::<Result<Vec<_>, _>>()?;
            r.push((libc::SYS_ioctl, ioctls));
            if snapshot {
                // Paths only relative to the snapshot root's fd (the jail has no other); the
                // snapshot's files: create (a new directory's mode set on its fd), size, write
                // (pwrite64 is common), sync, rename.
                r.extend(allow(&[
                    libc::SYS_openat,
                    libc::SYS_mkdirat,
                    libc::SYS_fchmod,
                    libc::SYS_unlinkat,
                    libc::SYS_renameat,
                    libc::SYS_ftruncate,
                    libc::SYS_fsync,
                ]));
            }
            {
                // The pause kick of its own vCPU threads (control `pause`, the boot watch).
                let pid = u64::from(std::process::id());
                let kick = crate::pause::kick_signal() as u64;
                r.push((
                    libc::SYS_tgkill,
                    vec![SeccompRule::new(vec![
                        cond(0, SeccompCmpOp::Eq, pid)?,
                        cond(2, SeccompCmpOp::Eq, kick)?,
                    ])?],
                ));
            }
        }
        ThreadClass::BlockIo => {
            // Its event loop's epoll on the queue eventfds (wait only: nothing is registered
            // after the filter is in), read them; the disk I/O (pwrite64 is common).
            r.extend(allow(&[
                libc::SYS_epoll_wait,
                libc::SYS_epoll_pwait,
                libc::SYS_read,
                libc::SYS_pread64,
                libc::SYS_pwrite64,
                libc::SYS_fdatasync,
            ]));
        }
        ThreadClass::Vcpu { vhost_user } => {
            if vhost_user {
                // vhost-user requests with their fds (SCM_RIGHTS) and the backend's replies;
                // the socket was connected before the jail.
                r.extend(allow(&[libc::SYS_sendmsg, libc::SYS_recvmsg]));
            }
            let ioctls = vcpu_ioctls()
                .into_iter()
                .map(|req| SeccompRule::new(vec![cond(1, SeccompCmpOp::Eq, req)?]))
                .collect::<Result<Vec<_>, _>>()?;
            r.push((libc::SYS_ioctl, ioctls));
        }
    }
    Ok(r)
}

/// A thread class's compiled seccomp programs, installed together by [`install`].
#[derive(Clone)]
pub struct ThreadFilter {
    programs: Vec<BpfProgram>,
}

impl ThreadFilter {
    /// Sets `PR_SET_NO_NEW_PRIVS` and installs the programs on the calling thread.
    pub fn apply(&self) -> Result<(), seccompiler::Error> {
        self.programs
            .iter()
            .try_for_each(|p| seccompiler::apply_filter(p))
    }
}

/// Compiles the x86_64 allow-list of `class`; anything else kills the process. In classes
/// that may not open files (all but a main thread that takes snapshots), `open`/`openat`
/// fail with `EACCES` instead of killing: glibc opens files on its own, late and rarely (its
/// allocator reads `/proc/sys/vm/overcommit_memory` the first time it shrinks a thread's
/// heap, seen at the exit of a VM restored with virtio-fs bounce mode). The jail's root is
/// empty, so such an open could not reach anything anyway.
pub fn filter(class: ThreadClass) -> Result<ThreadFilter, SeccompError> {
    let build = |e| SeccompError::Build(class.name(), e);
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> =
        rules(class).map_err(build)?.into_iter().collect();
    let mut programs = Vec::new();
    if !rules.contains_key(&libc::SYS_openat) {
        // Let opens past the allow-list, to the second program's EACCES (of two filters the
        // kernel applies the stricter action).
        for nr in OPENS {
            rules.insert(nr, vec![]);
        }
        let opens = OPENS.iter().map(|nr| (*nr, vec![])).collect();
        let fail = SeccompFilter::new(
            opens,
            SeccompAction::Allow,
            SeccompAction::Errno(libc::EACCES as u32),
            TargetArch::x86_64,
        )
        .map_err(build)?;
        programs.push(fail.try_into().map_err(build)?);
    }
    let f = SeccompFilter::new(
        rules,
        SeccompAction::KillProcess,
        SeccompAction::Allow,
        TargetArch::x86_64,
    )
    .map_err(build)?;
    // Last: once the allow-list is in, installing another filter is not allowed.
    programs.push(f.try_into().map_err(build)?);
    Ok(ThreadFilter { programs })
}

/// The syscalls that open a file by path.
const OPENS: [i64; 2] = [libc::SYS_open, libc::SYS_openat];

/// Sets `PR_SET_NO_NEW_PRIVS` and installs `filter`'s programs on the calling thread.
pub fn install(class: ThreadClass, filter: &ThreadFilter) -> Result<(), SeccompError> {
    filter
        .apply()
        .map_err(|e| SeccompError::Install(class.name(), e))
}

/// Test hook: with `KATA_VMM_TEST_FORBIDDEN_SYSCALL=1` in the environment, the main thread
/// makes a syscall outside its allow-list right after installing its filter, so a test can
/// check that the process dies of SIGSYS. Not for any other use.
pub const TEST_FORBIDDEN_ENV: &str = "KATA_VMM_TEST_FORBIDDEN_SYSCALL";

/// Makes a syscall no filter allows (`getppid`).
pub fn forbidden_syscall() {
    // SAFETY: getppid has no arguments and no side effects; under our filter it never returns.
    unsafe { libc::syscall(libc::SYS_getppid) };
}

#[cfg(test)]
mod tests {
    use super::*;

    const VCPU: ThreadClass = ThreadClass::Vcpu { vhost_user: false };
    const VCPU_FS: ThreadClass = ThreadClass::Vcpu { vhost_user: true };

    const CLASSES: [ThreadClass; 7] = [
        ThreadClass::Main {
            api: false,
            vsock_uds: false,
            snapshot: false,
        },
        ThreadClass::BlockIo,
        ThreadClass::Main {
            api: true,
            vsock_uds: false,
            snapshot: false,
        },
        VCPU,
        VCPU_FS,
        ThreadClass::Main {
            api: false,
            vsock_uds: true,
            snapshot: false,
        },
        ThreadClass::Main {
            api: true,
            vsock_uds: true,
            snapshot: true,
        },
    ];

    #[test]
    fn filters_compile_for_x86_64() {
        for class in CLASSES {
            let f = filter(class).unwrap();
            assert!(!f.programs.is_empty());
            for prog in &f.programs {
                assert!(!prog.is_empty());
                assert!(prog.len() < 4096, "BPF_MAXINSNS");
            }
        }
    }

    #[test]
    fn ioctl_numbers() {
        let v = vcpu_ioctls();
        assert_eq!(v, [0xae80], "KVM_RUN only: no vhost-vsock any more");
    }

    #[test]
    fn block_io_only_on_block_threads() {
        fn pread() {
            let mut b = [0u8; 1];
            // SAFETY: fd -1 is rejected by the kernel; b is a valid buffer.
            unsafe { libc::pread(-1, b.as_mut_ptr().cast(), 1, 0) };
        }
        let st = in_child(BLK, pread);
        assert!(libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 0, "{st:#x}");
        for class in [MAIN, VCPU] {
            let st = in_child(class, pread);
            assert!(libc::WIFSIGNALED(st) && libc::WTERMSIG(st) == libc::SIGSYS);
        }
        // Nothing else a main thread does: no accept4, no getrandom, no ioctl.
        fn accept() {
            // SAFETY: fd -1 is rejected by the kernel.
            unsafe { libc::accept4(-1, std::ptr::null_mut(), std::ptr::null_mut(), 0) };
        }
        let st = in_child(BLK, accept);
        assert!(libc::WIFSIGNALED(st) && libc::WTERMSIG(st) == libc::SIGSYS);
    }

    #[test]
    fn event_loops_wait_on_epoll_only() {
        fn epoll_wait() {
            let mut ev = [libc::epoll_event { events: 0, u64: 0 }; 1];
            // SAFETY: fd -1 is rejected by the kernel; ev is a valid buffer.
            unsafe { libc::epoll_wait(-1, ev.as_mut_ptr(), 1, 0) };
        }
        fn poll() {
            // SAFETY: no fds, no wait.
            unsafe { libc::poll(std::ptr::null_mut(), 0, 0) };
        }
        fn epoll_ctl() {
            // SAFETY: fds -1 are rejected by the kernel; a null event is allowed for DEL.
            unsafe { libc::epoll_ctl(-1, libc::EPOLL_CTL_DEL, -1, std::ptr::null_mut()) };
        }
        for class in [MAIN, BLK] {
            let st = in_child(class, epoll_wait);
            assert!(libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 0, "{st:#x}");
            let st = in_child(class, poll);
            assert!(libc::WIFSIGNALED(st) && libc::WTERMSIG(st) == libc::SIGSYS);
        }
        let st = in_child(MAIN, epoll_ctl);
        assert!(libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 0, "{st:#x}");
        let st = in_child(BLK, epoll_ctl);
        assert!(libc::WIFSIGNALED(st) && libc::WTERMSIG(st) == libc::SIGSYS);
    }

    const MAIN: ThreadClass = CLASSES[0];
    const BLK: ThreadClass = CLASSES[1];
    const MAIN_API: ThreadClass = CLASSES[2];

    #[test]
    fn api_syscalls_only_with_the_api() {
        fn accept() {
            // SAFETY: fd -1 is rejected by the kernel.
            unsafe { libc::accept4(-1, std::ptr::null_mut(), std::ptr::null_mut(), 0) };
        }
        let st = in_child(MAIN_API, accept);
        assert!(libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 0, "{st:#x}");
        let st = in_child(CLASSES[5], accept);
        assert!(libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 0, "{st:#x}");
        let st = in_child(MAIN, accept);
        assert!(libc::WIFSIGNALED(st) && libc::WTERMSIG(st) == libc::SIGSYS);
    }

    #[test]
    fn vhost_user_messages_only_with_fs() {
        fn talk() {
            // SAFETY: fd -1 is rejected by the kernel; the msghdr is zeroed (no buffers).
            unsafe {
                let mut m: libc::msghdr = std::mem::zeroed();
                libc::sendmsg(-1, &m, libc::MSG_NOSIGNAL);
                libc::recvmsg(-1, &mut m, 0);
            }
        }
        let st = in_child(VCPU_FS, talk);
        assert!(libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 0, "{st:#x}");
        for class in [VCPU, MAIN] {
            let st = in_child(class, talk);
            assert!(libc::WIFSIGNALED(st) && libc::WTERMSIG(st) == libc::SIGSYS);
        }
    }

    #[test]
    fn tgkill_only_kicks_own_threads() {
        // The filter is compiled in the parent (its pid), like the VMM's; in the forked child
        // the allowed pid is the parent's, so: kill with another signal or pid -> SIGSYS.
        fn bad_signal() {
            // SAFETY: tgkill to a nonexistent thread id; the filter stops it first.
            unsafe { libc::syscall(libc::SYS_tgkill, 1, 0x7fff_fff0, libc::SIGKILL) };
        }
        let st = in_child(MAIN_API, bad_signal);
        assert!(libc::WIFSIGNALED(st) && libc::WTERMSIG(st) == libc::SIGSYS);
    }

    /// Forks, installs `class`'s filter in the child, runs `f`, exits 0; returns the wait status.
    fn in_child(class: ThreadClass, f: fn()) -> libc::c_int {
        let filter = filter(class).unwrap();
        // SAFETY: the child only makes raw syscalls (prctl, seccomp, `f`'s, _exit) and touches
        // no lock or allocator, so forking a multi-threaded test process is fine.
        unsafe {
            let pid = libc::fork();
            assert!(pid >= 0);
            if pid == 0 {
                if filter.apply().is_err() {
                    libc::_exit(3);
                }
                f();
                libc::_exit(0);
            }
            let mut status = 0;
            assert_eq!(libc::waitpid(pid, &mut status, 0), pid);
            status
        }
    }

    /// Only a main thread that can take snapshots may open, create or rename files (below the
    /// snapshot root's fd) and read KVM state; the others die of SIGSYS, but an open fails
    /// with EACCES (glibc opens files on its own).
    #[test]
    fn snapshot_syscalls_only_with_snapshot() {
        const SNAP: ThreadClass = CLASSES[6];
        assert!(matches!(SNAP, ThreadClass::Main { snapshot: true, .. }));
        fn openat() {
            // SAFETY: openat of a NUL-terminated path that does not exist: ENOENT.
            unsafe { libc::openat(libc::AT_FDCWD, c"/nonexistent/kata-vmm".as_ptr(), 0) };
        }
        fn get_xsave() {
            // SAFETY: KVM_GET_XSAVE on fd -1 is rejected by the kernel (EBADF) before any
            // pointer is read; `xsave` is a valid buffer anyway.
            unsafe {
                let mut xsave = kvm_bindings::kvm_xsave::default();
                libc::ioctl(-1, kvm::KVM_GET_XSAVE() as _, &mut xsave);
            }
        }
        for f in [openat as fn(), get_xsave] {
            let st = in_child(SNAP, f);
            assert!(libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 0, "{st:#x}");
        }
        for class in [MAIN, MAIN_API, BLK] {
            let st = in_child(class, get_xsave);
            assert!(libc::WIFSIGNALED(st) && libc::WTERMSIG(st) == libc::SIGSYS);
        }
        fn mkdirat() {
            // SAFETY: mkdirat of a NUL-terminated path below a directory that does not exist.
            unsafe { libc::mkdirat(libc::AT_FDCWD, c"/nonexistent/kata-vmm".as_ptr(), 0o700) };
        }
        let st = in_child(MAIN, mkdirat);
        assert!(libc::WIFSIGNALED(st) && libc::WTERMSIG(st) == libc::SIGSYS);
    }

    /// Where opening is not allowed, `open` and `openat` fail with EACCES (and do not open
    /// even a file that exists) instead of killing the process.
    #[test]
    fn opens_fail_with_eacces_outside_the_snapshot_class() {
        fn open_maps() {
            // SAFETY: both calls take a NUL-terminated path; a returned fd is a real failure.
            unsafe {
                let fd = libc::openat(libc::AT_FDCWD, c"/proc/self/maps".as_ptr(), 0);
                let errno = *libc::__errno_location();
                if fd >= 0 || errno != libc::EACCES {
                    libc::_exit(4);
                }
                let fd = libc::syscall(libc::SYS_open, c"/proc/self/maps".as_ptr(), 0);
                if fd >= 0 || *libc::__errno_location() != libc::EACCES {
                    libc::_exit(5);
                }
            }
        }
        for class in CLASSES {
            if matches!(class, ThreadClass::Main { snapshot: true, .. }) {
                continue;
            }
            let st = in_child(class, open_maps);
            assert!(
                libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 0,
                "{class:?}: {st:#x}"
            );
        }
    }

    #[test]
    fn the_boot_watch_reads_vcpus_in_every_main_class() {
        fn get_regs() {
            // SAFETY: KVM_GET_REGS on fd -1 is rejected by the kernel (EBADF) before any
            // pointer is read; `regs` is a valid buffer anyway.
            unsafe {
                let mut regs = kvm_bindings::kvm_regs::default();
                libc::ioctl(-1, kvm::KVM_GET_REGS() as _, &mut regs);
            }
        }
        for class in CLASSES {
            let st = in_child(class, get_regs);
            if matches!(class, ThreadClass::Main { .. }) {
                assert!(
                    libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 0,
                    "{class:?}: {st:#x}"
                );
            } else {
                assert!(
                    libc::WIFSIGNALED(st) && libc::WTERMSIG(st) == libc::SIGSYS,
                    "{class:?}"
                );
            }
        }
    }

    #[test]
    fn forbidden_syscall_kills_with_sigsys() {
        for class in CLASSES {
            let st = in_child(class, forbidden_syscall);
            assert!(libc::WIFSIGNALED(st), "{class:?}: status {st:#x}");
            assert_eq!(libc::WTERMSIG(st), libc::SIGSYS);
        }
    }

    #[test]
    fn allowed_syscalls_pass() {
        fn main_work() {
            let mut b = [0u8; 16];
            // SAFETY: b is a valid 16-byte buffer.
            let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
            if n != 16 {
                // SAFETY: plain exit.
                unsafe { libc::_exit(4) };
            }
        }
        let st = in_child(MAIN, main_work);
        assert!(libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 0, "{st:#x}");

        fn vcpu_work() {
            // Not a KVM fd: the ioctl passes the filter and fails with EBADF/ENOTTY.
            // SAFETY: KVM_RUN takes no argument; fd -1 is rejected by the kernel.
            unsafe { libc::ioctl(-1, KVM_RUN() as _, 0) };
        }
        let st = in_child(VCPU, vcpu_work);
        assert!(libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 0, "{st:#x}");

        fn vcpu_bad_ioctl() {
            // SAFETY: as above; the request is not on the list (KVM_CREATE_VCPU).
            unsafe { libc::ioctl(-1, 0xae41 as _, 0) };
        }
        let st = in_child(VCPU, vcpu_bad_ioctl);
        assert!(libc::WIFSIGNALED(st) && libc::WTERMSIG(st) == libc::SIGSYS);
    }
}
