//! The `clone(2)` of `/proc/self/exe <mode>`: the child only puts its stdio and sync fds in
//! place and execve's, so cloning from the multi-threaded agent is safe.

use std::ffi::CString;
use std::fs;

use nix::sched::CloneFlags;

/// Stack for the cloned child, which only dup2()s and execve()s.
const CHILD_STACK: usize = 64 * 1024;

/// Clones `/proc/self/exe <mode>` with `fds` (source, target) in place, in the PID namespace
/// `pidns` when given (an exec joins the container's), else per `flags`. Returns the pid.
pub(super) fn clone_in(
    pidns: Option<&fs::File>,
    mode: &str,
    fds: [(i32, i32); 4],
    flags: libc::c_int,
) -> nix::Result<i32> {
    match pidns {
        None => clone_helper(mode, fds, flags),
        // setns(CLONE_NEWPID) only changes where the calling thread's children go: do it
        // on a short-lived thread of its own so no other thread is affected.
        Some(ns) => std::thread::scope(|s| {
            s.spawn(|| {
                let own = fs::File::open("/proc/self/ns/pid").map_err(|_| nix::Error::EIO)?;
                nix::sched::setns(ns, CloneFlags::CLONE_NEWPID)?;
                let r = clone_helper(mode, fds, flags);
                let _ = nix::sched::setns(&own, CloneFlags::CLONE_NEWPID);
                r
            })
            .join()
            .unwrap_or(Err(nix::Error::EIO))
        }),
    }
}

/// Clones `/proc/self/exe <mode>` with the stdio and sync fds in place. Only
/// async-signal-safe calls happen in the child (this process is multi-threaded).
fn clone_helper(mode: &str, fds: [(i32, i32); 4], flags: libc::c_int) -> nix::Result<i32> {
    let exe = CString::new("/proc/self/exe").expect("no NUL");
    let argv_c = [
        CString::new("kata-agent").expect("no NUL"),
        CString::new(mode).expect("no NUL"),
    ];
    let argv: Vec<*const libc::c_char> = argv_c
        .iter()
        .map(|a| a.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect();
    let envp: [*const libc::c_char; 1] = [std::ptr::null()];
    let child = move || -> isize {
        // Order matters: sources are >= 3 (fds 0-2 are always open in the agent), so only
        // fd 3 can be both a source and a target, and it is the last target written.
        // A source used twice (the pty slave) is never a target.
        for (src, dst) in fds {
            // SAFETY: dup2/fcntl are async-signal-safe and only touch fd numbers.
            let ok = unsafe {
                if src == dst {
                    libc::fcntl(dst, libc::F_SETFD, 0) >= 0
                } else {
                    libc::dup2(src, dst) >= 0
                }
            };
            if !ok {
                // SAFETY: _exit is async-signal-safe.
                unsafe { libc::_exit(120) };
            }
        }
        // SAFETY: execve with NUL-terminated arrays of valid C strings prepared before
        // clone; on failure _exit without running any destructor.
        unsafe {
            libc::execve(exe.as_ptr(), argv.as_ptr(), envp.as_ptr());
            libc::_exit(121)
        }
    };
    let mut stack = vec![0u8; CHILD_STACK];
    let flags = CloneFlags::from_bits_truncate(flags);
    // SAFETY: the child runs a copy of this address space (no CLONE_VM) and only calls
    // dup2/fcntl/execve/_exit, all async-signal-safe, on data prepared before clone.
    unsafe { nix::sched::clone(Box::new(child), &mut stack, flags, Some(libc::SIGCHLD)) }
        .map(|p| p.as_raw())
}
