//! The jail: least privilege for the running VMM, in the spirit of Firecracker's jailer, but
//! done by `kata-vmm` itself (see "Jail" in `vmm/README.md`).
//!
//! [`enter`] runs on the main thread once everything the VM needs is open (kernel and initrds
//! read into guest RAM, disks, console log, `/dev/kvm`, the vsock and control listeners, every
//! vCPU created)
//! and before any other thread exists. It
//! 1. unshares the mount, IPC, UTS, network and cgroup namespaces,
//! 2. makes the mount tree private and pivots into an empty read-only tmpfs (so no host file
//!    is reachable by path any more; the old root is detached),
//! 3. drops every capability from the bounding and ambient sets,
//! 4. leaves root for `--jail-uid`/`--jail-gid` (no supplementary groups), which clears the
//!    effective and permitted capabilities, then clears the inheritable ones, and becomes
//!    non-dumpable (after the uid change, which resets that flag),
//! 5. sets `no_new_privs`,
//! 6. re-arms the parent-death signal (a credential change clears it) and dies with it if the
//!    parent went away meanwhile.
//!
//! Credentials and namespaces are per thread in the kernel; because the process has exactly
//! one thread here (checked), every vCPU thread spawned afterwards inherits all of it.

use std::ffi::CStr;
use std::io;

pub mod limits;

/// The default unprivileged user and group of a jailed VMM: 65534 (`nobody`/`nogroup`).
pub const DEFAULT_JAIL_ID: u32 = 65534;

/// Namespaces the jail unshares. None of them costs the VMM anything: after setup it needs no
/// path (mount), no SysV IPC, no hostname, no network (the vsock device's Unix listener was
/// bound before, a tap fd keeps its device), and no view of the host's cgroup paths.
pub const NAMESPACES: libc::c_int = libc::CLONE_NEWNS
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWNET
    | libc::CLONE_NEWCGROUP;

/// Who the jailed VMM runs as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JailConfig {
    /// User id (never 0).
    pub uid: u32,
    /// Group id (never 0).
    pub gid: u32,
}

impl Default for JailConfig {
    fn default() -> Self {
        JailConfig {
            uid: DEFAULT_JAIL_ID,
            gid: DEFAULT_JAIL_ID,
        }
    }
}

/// A jail step failed; the VMM does not run unjailed by accident (exit 1).
#[derive(Debug, thiserror::Error)]
pub enum JailError {
    /// A system call of the jail setup failed.
    #[error("jail: {0}: {1} (run as root with CAP_SYS_ADMIN, or pass --no-jail)")]
    Sys(&'static str, io::Error),
    /// Another thread exists; credentials would only change on this one.
    #[error("jail: the process has {0} threads, the jail must be entered with exactly one")]
    Threads(usize),
}

/// What [`enter`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Jailed {
    /// Not root: nothing to drop, no mount namespace possible; only seccomp confines the VMM.
    NotRoot,
    /// Namespaces, empty root (by `pivot_root`, or `chroot` where the host root is not a
    /// mount point, e.g. an initramfs), unprivileged ids, no capabilities, no_new_privs.
    Full {
        /// `pivot_root` worked (else `chroot` into the empty tmpfs).
        pivoted: bool,
    },
}

fn sys(what: &'static str, rc: libc::c_long) -> Result<libc::c_long, JailError> {
    if rc < 0 {
        Err(JailError::Sys(what, io::Error::last_os_error()))
    } else {
        Ok(rc)
    }
}

fn threads() -> Result<usize, JailError> {
    let s = std::fs::read_to_string("/proc/self/status")
        .map_err(|e| JailError::Sys("reading /proc/self/status", e))?;
    s.lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| {
            JailError::Sys(
                "reading /proc/self/status",
                io::Error::other("no Threads: line"),
            )
        })
}

/// The highest capability number the running kernel knows.
fn last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(63)
}

/// `_LINUX_CAPABILITY_VERSION_3`: two 32-bit words per set.
const CAP_V3: u32 = 0x2008_0522;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Default, Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// The calling thread's (effective, permitted, inheritable) capability sets.
pub fn capabilities() -> io::Result<(u64, u64, u64)> {
    let mut hdr = CapHeader {
        version: CAP_V3,
        pid: 0,
    };
    let mut d = [CapData::default(); 2];
    // SAFETY: capget with a v3 header writes two CapData entries, which `d` holds.
    let rc = unsafe { libc::syscall(libc::SYS_capget, &mut hdr, d.as_mut_ptr()) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    let join = |lo: u32, hi: u32| u64::from(lo) | (u64::from(hi) << 32);
    Ok((
        join(d[0].effective, d[1].effective),
        join(d[0].permitted, d[1].permitted),
        join(d[0].inheritable, d[1].inheritable),
    ))
}

fn clear_capabilities() -> Result<(), JailError> {
    let mut hdr = CapHeader {
        version: CAP_V3,
        pid: 0,
    };
    let d = [CapData::default(); 2];
    // SAFETY: capset with a v3 header reads two CapData entries from `d`.
    sys("capset", unsafe {
        libc::syscall(libc::SYS_capset, &mut hdr, d.as_ptr())
    })?;
    Ok(())
}

/// Mount namespace, empty read-only root. `mountpoint` must be an existing directory; the
/// tmpfs is stacked on it inside the new (private) namespace only, the host never sees it.
fn empty_root(mountpoint: &CStr) -> Result<bool, JailError> {
    let none = std::ptr::null::<libc::c_char>();
    // SAFETY: mount/chdir/pivot_root/umount2/chroot take NUL-terminated strings that live
    // for the call (static or `mountpoint`) or NULL where the kernel allows it.
    unsafe {
        sys(
            "making the mount tree private",
            libc::mount(
                none,
                c"/".as_ptr(),
                none,
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            )
            .into(),
        )?;
        sys(
            "mounting the empty root tmpfs",
            libc::mount(
                c"kata-vmm-jail".as_ptr(),
                mountpoint.as_ptr(),
                c"tmpfs".as_ptr(),
                libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                c"size=4k,mode=0555".as_ptr().cast(),
            )
            .into(),
        )?;
        sys("chdir", libc::chdir(mountpoint.as_ptr()).into())?;
        let dot = c".".as_ptr();
        // pivot_root(".", "."): the old root ends up stacked on "." and is detached below.
        let pivoted = libc::syscall(libc::SYS_pivot_root, dot, dot) == 0;
        if pivoted {
            sys(
                "detaching the old root",
                libc::umount2(dot, libc::MNT_DETACH).into(),
            )?;
        } else {
            let e = io::Error::last_os_error();
            // EINVAL: the current root is not a mount point (an initramfs root); a chroot into
            // the tmpfs is as good once no capability is left to leave it.
            if e.raw_os_error() != Some(libc::EINVAL) {
                return Err(JailError::Sys("pivot_root", e));
            }
            sys("chroot", libc::chroot(dot).into())?;
        }
        sys("chdir /", libc::chdir(c"/".as_ptr()).into())?;
        Ok(pivoted)
    }
}

fn drop_privileges(cfg: JailConfig) -> Result<(), JailError> {
    let last = last_cap();
    // SAFETY: plain prctl/set*id calls with integer arguments; the process is single-threaded
    // (checked by `enter`), so the per-thread credential syscalls cover the whole process.
    unsafe {
        for cap in 0..=last {
            let rc = libc::prctl(libc::PR_CAPBSET_DROP, libc::c_ulong::from(cap), 0, 0, 0);
            // EINVAL: the kernel does not know this capability; fine.
            if rc < 0 && io::Error::last_os_error().raw_os_error() != Some(libc::EINVAL) {
                return Err(JailError::Sys(
                    "PR_CAPBSET_DROP",
                    io::Error::last_os_error(),
                ));
            }
        }
        // Ambient capabilities may be unsupported (EINVAL) on old kernels: nothing to clear.
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0,
            0,
            0,
        );
        sys("setgroups", libc::setgroups(0, std::ptr::null()).into())?;
        sys(
            "setresgid",
            libc::setresgid(cfg.gid, cfg.gid, cfg.gid).into(),
        )?;
        sys(
            "setresuid",
            libc::setresuid(cfg.uid, cfg.uid, cfg.uid).into(),
        )?;
    }
    // Leaving uid 0 cleared the effective and permitted sets; the inheritable set survives
    // a uid change, so clear it too.
    clear_capabilities()?;
    // After the uid change, not before: a credential change resets the dumpable flag to the
    // host's fs.suid_dumpable (1 = "dumpable by the owner" on some hosts), which would give
    // ptrace and /proc/<pid>/mem of the VMM to any process of the jail uid.
    // SAFETY: prctl with integer arguments.
    sys("PR_SET_DUMPABLE", unsafe {
        libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0).into()
    })?;
    // SAFETY: prctl with integer arguments.
    sys("PR_SET_NO_NEW_PRIVS", unsafe {
        libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0).into()
    })?;
    Ok(())
}

/// Enters the jail (see the module docs). A no-op returning [`Jailed::NotRoot`] when the
/// effective uid is not 0. `mountpoint` is the directory the empty tmpfs is stacked on before
/// pivoting into it (in the private mount namespace): `/dev`, which exists wherever
/// `/dev/kvm` could be opened.
pub fn enter(cfg: JailConfig, mountpoint: &CStr) -> Result<Jailed, JailError> {
    // SAFETY: geteuid/getppid/prctl(PR_GET_PDEATHSIG) have no memory side effects besides
    // writing the signal number into `pdeath`, a live local.
    let (euid, ppid, pdeath) = unsafe {
        let mut sig: libc::c_int = 0;
        libc::prctl(
            libc::PR_GET_PDEATHSIG,
            &mut sig as *mut libc::c_int,
            0,
            0,
            0,
        );
        (libc::geteuid(), libc::getppid(), sig)
    };
    if euid != 0 {
        return Ok(Jailed::NotRoot);
    }
    let n = threads()?;
    if n != 1 {
        return Err(JailError::Threads(n));
    }
    // SAFETY: unshare with namespace flags only affects this (single) thread's namespaces.
    sys("unshare", unsafe { libc::unshare(NAMESPACES).into() })?;
    let pivoted = empty_root(mountpoint)?;
    drop_privileges(cfg)?;
    if pdeath != 0 {
        // SAFETY: prctl/getppid/raise with integer arguments.
        unsafe {
            sys(
                "PR_SET_PDEATHSIG",
                libc::prctl(libc::PR_SET_PDEATHSIG, pdeath as libc::c_ulong, 0, 0, 0).into(),
            )?;
            // The parent may have died while the signal was cleared: deliver it ourselves.
            if libc::getppid() != ppid {
                libc::raise(pdeath);
            }
        }
    }
    Ok(Jailed::Full { pivoted })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_and_default_ids() {
        assert_eq!(JailConfig::default().uid, 65534);
        assert_eq!(JailConfig::default().gid, 65534);
        assert_ne!(NAMESPACES & libc::CLONE_NEWNS, 0);
        // A new PID or user namespace would change what the shim sees; never unshared.
        assert_eq!(NAMESPACES & (libc::CLONE_NEWPID | libc::CLONE_NEWUSER), 0);
    }

    /// Checks made inside the jailed child; the exit status names the first that failed.
    fn child_checks(mountpoint: &CStr) -> i32 {
        // SAFETY: prctl with integer arguments.
        if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) } != 0 {
            return 10;
        }
        let cfg = JailConfig {
            uid: 65533,
            gid: 65532,
        };
        match enter(cfg, mountpoint) {
            Ok(Jailed::Full { .. }) => {}
            Ok(Jailed::NotRoot) => return 11,
            Err(JailError::Sys("unshare", e)) if e.raw_os_error() == Some(libc::EPERM) => {
                return 12
            }
            Err(e) => {
                eprintln!("jail_in_a_child: {e}");
                return 25;
            }
        }
        if std::fs::read_dir("/").map(Iterator::count).ok() != Some(0) {
            return 13;
        }
        if std::path::Path::new("/etc/passwd").exists() || std::fs::File::open("/dev/kvm").is_ok() {
            return 14;
        }
        if std::fs::write("/x", b"x").is_ok() {
            return 15;
        }
        let (mut r, mut e, mut s) = (0, 0, 0);
        // SAFETY: getresuid/getresgid write into the three live locals.
        unsafe { libc::getresuid(&mut r, &mut e, &mut s) };
        if (r, e, s) != (65533, 65533, 65533) {
            return 16;
        }
        // SAFETY: as above.
        unsafe { libc::getresgid(&mut r, &mut e, &mut s) };
        if (r, e, s) != (65532, 65532, 65532) {
            return 17;
        }
        // SAFETY: getgroups(0, NULL) only counts.
        if unsafe { libc::getgroups(0, std::ptr::null_mut()) } != 0 {
            return 18;
        }
        if capabilities().ok() != Some((0, 0, 0)) {
            return 19;
        }
        // SAFETY: prctl reads only.
        unsafe {
            if libc::prctl(libc::PR_CAPBSET_READ, 0) != 0 {
                return 20;
            }
            if libc::prctl(libc::PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) != 1 {
                return 21;
            }
            if libc::prctl(libc::PR_GET_DUMPABLE, 0, 0, 0, 0) != 0 {
                return 22;
            }
            let mut sig = 0;
            libc::prctl(libc::PR_GET_PDEATHSIG, &mut sig as *mut libc::c_int);
            if sig != libc::SIGKILL {
                return 23;
            }
            // Back to root is impossible.
            if libc::setresuid(0, 0, 0) == 0 {
                return 24;
            }
        }
        0
    }

    /// The parent-death signal survives the jail: a jailed process whose parent exits is
    /// killed. Process tree: test -> C (subreaper) -> A -> B (jailed); A exits once B is
    /// jailed; C reaps B and expects SIGKILL. Root only, like `jail_in_a_child`.
    #[test]
    #[ignore = "needs root and mount namespaces: `make unit` runs it (scripts/unit-privileged.sh)"]
    fn parent_death_kills_the_jailed_process() {
        require_root("parent_death_kills_the_jailed_process");
        let dir = std::env::temp_dir().join(format!("kata-vmm-pdeath-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mp = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: the forked processes run straight-line code (syscalls, allocation, which
        // glibc keeps fork-safe) and leave with _exit; pipe fds are plain ints.
        let status = unsafe {
            let c = libc::fork();
            assert!(c >= 0);
            if c == 0 {
                libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1);
                let mut p = [0; 2];
                if libc::pipe(p.as_mut_ptr()) != 0 {
                    libc::_exit(30);
                }
                let a = libc::fork();
                if a == 0 {
                    let b = libc::fork();
                    if b == 0 {
                        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
                        let code: u8 = match enter(JailConfig::default(), &mp) {
                            Ok(Jailed::Full { .. }) => 0,
                            Err(JailError::Sys("unshare", _)) => 12,
                            _ => 1,
                        };
                        libc::write(p[1], (&code as *const u8).cast(), 1);
                        if code != 0 {
                            libc::_exit(i32::from(code));
                        }
                        libc::sleep(20);
                        libc::_exit(31); // still alive: the signal was lost
                    }
                    let mut code = 0u8;
                    libc::read(p[0], (&mut code as *mut u8).cast(), 1);
                    libc::_exit(i32::from(code)); // A exits: B's parent dies
                }
                let mut st = 0;
                libc::waitpid(a, &mut st, 0);
                if !libc::WIFEXITED(st) || libc::WEXITSTATUS(st) != 0 {
                    // B could not jail (and exited): report its code.
                    libc::_exit(if libc::WIFEXITED(st) {
                        libc::WEXITSTATUS(st)
                    } else {
                        32
                    });
                }
                // B, reparented to us (subreaper), must die of SIGKILL at once.
                let b = libc::waitpid(-1, &mut st, 0);
                let killed = b > 0 && libc::WIFSIGNALED(st) && libc::WTERMSIG(st) == libc::SIGKILL;
                libc::_exit(if killed { 0 } else { 33 });
            }
            let mut st = 0;
            assert_eq!(libc::waitpid(c, &mut st, 0), c);
            st
        };
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(libc::WIFEXITED(status), "status {status:#x}");
        match libc::WEXITSTATUS(status) {
            0 => {}
            12 => panic!("this host refuses a new mount namespace: the jail cannot work here"),
            code => panic!("check {code} failed"),
        }
    }

    /// Root only: a forked child enters the jail and checks what it can still see and do.
    #[test]
    #[ignore = "needs root and mount namespaces: `make unit` runs it (scripts/unit-privileged.sh)"]
    fn jail_in_a_child() {
        require_root("jail_in_a_child");
        // Stack the tmpfs on a private scratch directory (not /dev: it changes nothing outside
        // the child's namespace either, but this keeps the test independent of /dev).
        let dir = std::env::temp_dir().join(format!("kata-vmm-jail-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mp = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: the child runs single-threaded code that only allocates (glibc's malloc is
        // fork-safe), makes syscalls and leaves with _exit; the parent only waits.
        let status = unsafe {
            let pid = libc::fork();
            assert!(pid >= 0);
            if pid == 0 {
                libc::_exit(child_checks(&mp));
            }
            let mut st = 0;
            assert_eq!(libc::waitpid(pid, &mut st, 0), pid);
            st
        };
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(libc::WIFEXITED(status), "child status {status:#x}");
        let code = libc::WEXITSTATUS(status);
        assert_ne!(
            code, 12,
            "this host refuses a new mount namespace: the jail cannot work here"
        );
        assert_eq!(code, 0, "jail check {code} failed (see child_checks)");
    }

    /// Fails test `name`, run on purpose (it is `#[ignore]`d), when not root.
    fn require_root(name: &str) {
        // SAFETY: geteuid has no side effects.
        let euid = unsafe { libc::geteuid() };
        assert_eq!(euid, 0, "{name} needs root (run by `make unit` as root)");
    }
}
