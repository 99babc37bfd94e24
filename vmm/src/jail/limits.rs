//! What a hostile guest (or a VMM compromised through it) can make the host do, bounded by
//! the kernel: resource limits set by the VMM itself once it is set up, before it leaves root
//! and installs its seccomp filters, and no file descriptor it was not given. See "Limits" in
//! `vmm/README.md` and docs/security.md.
//!
//! - `RLIMIT_FSIZE`: the largest file the VMM writes: the console log at its cap (head +
//!   marker + tail) or the largest `--disk` (its writes stay inside the disk, but the kernel
//!   refuses any write at an offset past the limit, even inside an existing file).
//!   `SIGXFSZ` is ignored, so a write past it fails with `EFBIG` instead of killing the VMM.
//! - `RLIMIT_NOFILE`: the fds open at setup (kvm, vCPUs, eventfds, taps, disks, sockets,
//!   ...) plus what the VMM still opens while running: only `accept4` of vsock connections
//!   ([`crate::devices::virtio::vsock::muxer::MAX_CONNS`] + the one accepted and closed over the limit) and
//!   of control-socket clients ([`crate::api::MAX_CLIENTS`] + 1), and a little slack.
//! - `RLIMIT_NPROC`: counts every process and thread of the *uid*, not of the process.
//!   The shim gives each jailed VMM a uid of its own (`hypervisor.jail_id_base` + CID -
//!   1000), so there the limit is the VMM's own threads (main + one per vCPU and per disk) + slack: many
//!   pods on a node each have their own count. With the shared default uid 65534
//!   (`nobody`: a VMM started by hand, or `jail_id_base = 0`) every VMM and every other
//!   `nobody` process of the node counts against the same number, so a per-VMM figure would
//!   make the N-th VMM fail to start its vCPUs: that case gets a node-wide ceiling
//!   ([`SHARED_UID_NPROC`]). Without a uid change (not root, `--no-jail`) the invoking
//!   user's own limit is left alone. Clone is outside every seccomp allow-list once the
//!   vCPU threads run, so this only matters after a seccomp escape.

use std::io;
use std::os::unix::io::RawFd;

use super::DEFAULT_JAIL_ID;

/// Fds beyond the computed need (std or a device opening one more than expected).
pub const NOFILE_SLACK: u64 = 16;
/// Threads beyond main + vCPUs + queue workers.
pub const NPROC_SLACK: u64 = 4;
/// `RLIMIT_NPROC` when the jail uid is the shared default 65534 (see the module docs).
pub const SHARED_UID_NPROC: u64 = 8192;

/// What the running VMM needs, measured at setup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Needs {
    /// Highest fd number open once everything is set up.
    pub highest_fd: RawFd,
    /// Fds the VMM may still accept while running (vsock and control connections).
    pub accepted_fds: u64,
    /// vCPU threads.
    pub vcpus: u8,
    /// Queue worker threads (one per `--disk`).
    pub io_threads: u64,
    /// The largest file the VMM writes (console log cap, disks).
    pub largest_file: u64,
    /// The uid the jail switches to; None when the uid does not change.
    pub jail_uid: Option<u32>,
}

/// The values set (soft = hard).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// `RLIMIT_FSIZE` in bytes.
    pub fsize: u64,
    /// `RLIMIT_NOFILE`: one more than the highest fd number that may be opened.
    pub nofile: u64,
    /// `RLIMIT_NPROC`; None: left as it is.
    pub nproc: Option<u64>,
}

/// The limits for `n` (see the module docs for why each).
pub fn compute(n: &Needs) -> Limits {
    let open = u64::try_from(n.highest_fd).unwrap_or(0) + 1;
    Limits {
        fsize: n.largest_file.max(1),
        nofile: open + n.accepted_fds + NOFILE_SLACK,
        nproc: n.jail_uid.map(|uid| {
            if uid == DEFAULT_JAIL_ID {
                SHARED_UID_NPROC
            } else {
                1 + u64::from(n.vcpus) + n.io_threads + NPROC_SLACK
            }
        }),
    }
}

/// getrlimit's resource type: glibc names it, musl (the static build) takes a plain int.
#[cfg(target_env = "gnu")]
type Resource = libc::__rlimit_resource_t;
#[cfg(not(target_env = "gnu"))]
type Resource = libc::c_int;

fn set(resource: Resource, value: u64, what: &'static str) -> io::Result<()> {
    let mut cur = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read or write one live rlimit struct.
    unsafe {
        if libc::getrlimit(resource, &mut cur) != 0 {
            return Err(io::Error::other(format!(
                "getrlimit {what}: {}",
                io::Error::last_os_error()
            )));
        }
        // Never above the current hard limit (raising it needs CAP_SYS_RESOURCE and is not
        // what this is for).
        let v = value.min(cur.rlim_max);
        let new = libc::rlimit {
            rlim_cur: v,
            rlim_max: v,
        };
        if libc::setrlimit(resource, &new) != 0 {
            return Err(io::Error::other(format!(
                "setrlimit {what} {v}: {}",
                io::Error::last_os_error()
            )));
        }
    }
    Ok(())
}

/// Sets `l` (soft = hard, never raising a hard limit) and ignores `SIGXFSZ`.
pub fn apply(l: &Limits) -> io::Result<()> {
    // SAFETY: installs SIG_IGN for one signal; no handler code runs.
    if unsafe { libc::signal(libc::SIGXFSZ, libc::SIG_IGN) } == libc::SIG_ERR {
        return Err(io::Error::other(format!(
            "ignoring SIGXFSZ: {}",
            io::Error::last_os_error()
        )));
    }
    set(libc::RLIMIT_FSIZE, l.fsize, "RLIMIT_FSIZE")?;
    set(libc::RLIMIT_NOFILE, l.nofile, "RLIMIT_NOFILE")?;
    if let Some(n) = l.nproc {
        set(libc::RLIMIT_NPROC, n, "RLIMIT_NPROC")?;
    }
    Ok(())
}

/// The open fd numbers of this process (`/proc/self/fd`, without the directory's own fd).
pub fn open_fds() -> io::Result<Vec<RawFd>> {
    let mut fds: Vec<RawFd> = std::fs::read_dir("/proc/self/fd")?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    // The ReadDir is closed now: drop the number it had (no longer open).
    // SAFETY: F_GETFD only queries the fd table.
    fds.retain(|&fd| unsafe { libc::fcntl(fd, libc::F_GETFD) } >= 0);
    fds.sort_unstable();
    Ok(fds)
}

/// Closes every fd above stderr: the VMM is given no fd (its command line names paths
/// only), so anything else was inherited by mistake (a leaky parent) and must not be
/// reachable by a compromised VMM. `close_range(2)` (Linux 5.9), else a `/proc/self/fd`
/// walk. Called first thing in `main`, before anything is opened.
pub fn close_inherited_fds() -> io::Result<()> {
    // SAFETY: close_range on fds 3..=max; no fd of ours is open yet (start of main), std
    // holds none.
    let rc = unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) };
    if rc == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    if !matches!(e.raw_os_error(), Some(libc::ENOSYS) | Some(libc::EINVAL)) {
        return Err(e);
    }
    for fd in open_fds()?.into_iter().filter(|&fd| fd > 2) {
        // SAFETY: closing an inherited fd nothing in this process uses.
        unsafe { libc::close(fd) };
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn needs() -> Needs {
        Needs {
            highest_fd: 40,
            accepted_fds: 129 + 9,
            vcpus: 2,
            io_threads: 0,
            largest_file: 1 << 20,
            jail_uid: Some(2_147_483_648 + 4242),
        }
    }

    #[test]
    fn values_follow_what_the_vmm_needs() {
        let l = compute(&needs());
        assert_eq!(l.fsize, 1 << 20);
        assert_eq!(l.nofile, 41 + 138 + NOFILE_SLACK);
        // Own uid: main + 2 vCPUs + slack.
        assert_eq!(l.nproc, Some(3 + NPROC_SLACK));
        // The shared nobody uid: a node-wide ceiling, not a per-VMM count.
        let shared = compute(&Needs {
            jail_uid: Some(DEFAULT_JAIL_ID),
            ..needs()
        });
        assert_eq!(shared.nproc, Some(SHARED_UID_NPROC));
        // No uid change: the user's own limit stays.
        assert_eq!(
            compute(&Needs {
                jail_uid: None,
                ..needs()
            })
            .nproc,
            None
        );
        // One more thread per disk.
        assert_eq!(
            compute(&Needs {
                io_threads: 3,
                ..needs()
            })
            .nproc,
            Some(6 + NPROC_SLACK)
        );
        // 64 vCPUs still fit.
        let big = compute(&Needs {
            vcpus: 64,
            io_threads: 0,
            ..needs()
        });
        assert_eq!(big.nproc, Some(65 + NPROC_SLACK));
    }

    /// Runs `f` in a forked child; its exit status (0 = all checks passed).
    fn in_child(f: impl FnOnce() -> i32) -> i32 {
        // SAFETY: the child runs straight-line code (syscalls, allocation, which glibc keeps
        // fork-safe) and leaves with _exit; the parent only waits.
        unsafe {
            let pid = libc::fork();
            assert!(pid >= 0);
            if pid == 0 {
                libc::_exit(f());
            }
            let mut st = 0;
            assert_eq!(libc::waitpid(pid, &mut st, 0), pid);
            assert!(libc::WIFEXITED(st), "child status {st:#x}");
            libc::WEXITSTATUS(st)
        }
    }

    #[test]
    fn applied_limits_hold() {
        let path = std::env::temp_dir().join(format!("kata-vmm-fsize-{}", std::process::id()));
        let p2 = path.clone();
        let code = in_child(move || {
            let f = std::fs::File::create(&p2).unwrap();
            let highest = *open_fds().unwrap().last().unwrap();
            let l = compute(&Needs {
                highest_fd: highest,
                accepted_fds: 3,
                vcpus: 1,
                io_threads: 0,
                largest_file: 4096,
                jail_uid: None,
            });
            if apply(&l).is_err() {
                return 1;
            }
            let mut r = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            // SAFETY: getrlimit writes into `r`.
            unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) };
            if r.rlim_cur != l.nofile || r.rlim_max != l.nofile {
                return 2;
            }
            // SAFETY: as above.
            unsafe { libc::getrlimit(libc::RLIMIT_FSIZE, &mut r) };
            if r.rlim_cur != 4096 || r.rlim_max != 4096 {
                return 3;
            }
            // Up to the limit a write works; past it EFBIG, and the process lives (SIGXFSZ
            // ignored).
            use std::os::unix::fs::FileExt;
            if f.write_all_at(&[1u8; 4096], 0).is_err() {
                return 4;
            }
            match f.write_at(b"x", 4096) {
                Err(e) if e.raw_os_error() == Some(libc::EFBIG) => {}
                _ => return 5,
            }
            // Fds: opening stops at the limit with EMFILE.
            let mut kept = Vec::new();
            loop {
                match std::fs::File::open("/dev/null") {
                    Ok(f) => kept.push(f),
                    Err(e) if e.raw_os_error() == Some(libc::EMFILE) => break,
                    Err(_) => return 6,
                }
                if kept.len() > 10_000 {
                    return 7;
                }
            }
            let top = *open_fds().unwrap().last().unwrap() as u64;
            if top + 1 != l.nofile {
                return 8;
            }
            // A hard limit cannot be raised again.
            let up = libc::rlimit {
                rlim_cur: l.nofile + 1,
                rlim_max: l.nofile + 1,
            };
            // SAFETY: setrlimit reads `up`.
            let raised = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &up) } == 0;
            // SAFETY: geteuid has no arguments and cannot fail.
            if raised && unsafe { libc::geteuid() } != 0 {
                return 9;
            }
            0
        });
        let _ = std::fs::remove_file(&path);
        assert_eq!(code, 0, "check {code} failed");
    }

    #[test]
    fn inherited_fds_are_closed() {
        let code = in_child(|| {
            // Leaked the way a careless parent leaks: no close-on-exec.
            // SAFETY: open/dup of /dev/null; plain ints.
            let fds: Vec<RawFd> = (0..3)
                .map(|_| unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY) })
                .collect();
            // SAFETY: dup2 onto a high number.
            let high = unsafe { libc::dup2(fds[0], 900) };
            if fds.iter().any(|&fd| fd < 3) || high != 900 {
                return 1;
            }
            if close_inherited_fds().is_err() {
                return 2;
            }
            for fd in fds.iter().copied().chain([900]) {
                // SAFETY: F_GETFD only queries.
                if unsafe { libc::fcntl(fd, libc::F_GETFD) } != -1 {
                    return 3;
                }
            }
            // stdin/out/err stay.
            for fd in 0..3 {
                // SAFETY: as above.
                if unsafe { libc::fcntl(fd, libc::F_GETFD) } == -1 {
                    return 4;
                }
            }
            if open_fds().unwrap() != vec![0, 1, 2] {
                return 5;
            }
            0
        });
        assert_eq!(code, 0, "check {code} failed");
    }
}
