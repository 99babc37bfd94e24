//! The process part, shared by the init and exec helpers: pty, oom_score_adj, rlimits,
//! cwd, executable lookup, seccomp, credentials and capabilities, umask, no_new_privs.

use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::unistd::{chdir, Gid, Uid};

use super::{InitResult, Prepared};
use crate::plan::ProcessConfig;

/// Opens a pty in the container's own devpts (`/dev/ptmx`, after pivot_root or the mount
/// namespace switch), makes the slave fds 0-2 and the controlling terminal of a new
/// session, and returns the master for the agent.
fn container_pty() -> InitResult<std::os::fd::OwnedFd> {
    use nix::fcntl::OFlag;
    use std::os::fd::OwnedFd;
    let master = nix::pty::posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)
        .map_err(|e| format!("open /dev/ptmx in the container: {}", e.desc()))?;
    nix::pty::grantpt(&master).map_err(|e| format!("grantpt: {}", e.desc()))?;
    nix::pty::unlockpt(&master).map_err(|e| format!("unlockpt: {}", e.desc()))?;
    let name = nix::pty::ptsname_r(&master).map_err(|e| format!("ptsname: {}", e.desc()))?;
    let slave = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY)
        .open(&name)
        .map_err(|e| format!("open pty slave {name}: {e}"))?;
    nix::unistd::setsid().map_err(|e| format!("setsid: {}", e.desc()))?;
    let dup_err = |fd: i32| move |e: nix::Error| format!("dup2 pty slave to fd {fd}: {}", e.desc());
    nix::unistd::dup2_stdin(&slave).map_err(dup_err(0))?;
    nix::unistd::dup2_stdout(&slave).map_err(dup_err(1))?;
    nix::unistd::dup2_stderr(&slave).map_err(dup_err(2))?;
    drop(slave);
    // SAFETY: ioctl on our stdin (the pty slave) with an integer argument.
    if unsafe { libc::ioctl(0, libc::TIOCSCTTY as _, 0) } != 0 {
        return Err(format!(
            "make the pty the controlling terminal: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(OwnedFd::from(master))
}

/// nix's name of an `RLIMIT_*` number (the plan carries the kernel's numbers).
fn rlimit_resource(n: u32) -> Option<nix::sys::resource::Resource> {
    use nix::sys::resource::Resource as R;
    [
        R::RLIMIT_CPU,
        R::RLIMIT_FSIZE,
        R::RLIMIT_DATA,
        R::RLIMIT_STACK,
        R::RLIMIT_CORE,
        R::RLIMIT_RSS,
        R::RLIMIT_NPROC,
        R::RLIMIT_NOFILE,
        R::RLIMIT_MEMLOCK,
        R::RLIMIT_AS,
        R::RLIMIT_LOCKS,
        R::RLIMIT_SIGPENDING,
        R::RLIMIT_MSGQUEUE,
        R::RLIMIT_NICE,
        R::RLIMIT_RTPRIO,
        R::RLIMIT_RTTIME,
    ]
    .into_iter()
    .find(|r| *r as u32 == n)
}

fn cstr(s: &str) -> InitResult<CString> {
    CString::new(s).map_err(|_| format!("{s:?} contains a NUL byte"))
}

/// The process part, shared by init and exec: terminal, oom_score_adj, rlimits, cwd,
/// executable lookup, seccomp, credentials and capabilities, umask, no_new_privs.
pub(super) fn prepare_process(cfg: &ProcessConfig) -> InitResult<Prepared> {
    let errno = |what: String| move |e: nix::Error| format!("{what}: {}", e.desc());
    let master = if cfg.terminal {
        Some(container_pty()?)
    } else {
        None
    };
    if let Some(adj) = cfg.oom_score_adj {
        fs::write("/proc/self/oom_score_adj", adj.to_string())
            .map_err(|e| format!("set oom_score_adj {adj}: {e}"))?;
    }
    for &(res, soft, hard) in &cfg.rlimits {
        let resource =
            rlimit_resource(res).ok_or_else(|| format!("setrlimit {res}: unknown resource"))?;
        nix::sys::resource::setrlimit(resource, soft, hard)
            .map_err(|e| format!("setrlimit {res}: {}", e.desc()))?;
    }
    chdir(cfg.cwd.as_path()).map_err(|e| {
        format!(
            "chdir to cwd ({:?}) set in config.json failed: {}",
            cfg.cwd,
            e.desc()
        )
    })?;
    // No PATH in the process environment: nothing to search, as under runc (whose Go
    // LookPath reads the PATH it set from the spec's env).
    let path_env = cfg
        .env
        .iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or("");
    let exe = lookup_executable(&cfg.args[0], path_env)?;
    let exe = CString::new(exe.as_os_str().as_bytes()).map_err(|_| "NUL in path".to_string())?;
    let argv = cfg
        .args
        .iter()
        .map(|a| cstr(a))
        .collect::<InitResult<Vec<_>>>()?;
    let envp = cfg
        .env
        .iter()
        .map(|a| cstr(a))
        .collect::<InitResult<Vec<_>>>()?;
    // As runc: without no_new_privs the filter needs CAP_SYS_ADMIN, so it goes in before
    // the capabilities are dropped; with it, as late as possible.
    if let (Some(prog), false) = (&cfg.seccomp, cfg.no_new_privileges) {
        crate::seccomp::install(prog)?;
    }
    if let Some(c) = &cfg.caps {
        crate::caps::drop_bounding(c.bounding)?;
        crate::caps::keep_caps(true)?;
    }
    let groups: Vec<Gid> = cfg
        .additional_gids
        .iter()
        .map(|g| Gid::from_raw(*g))
        .collect();
    nix::unistd::setgroups(&groups).map_err(errno("setgroups".into()))?;
    nix::unistd::setgid(Gid::from_raw(cfg.gid)).map_err(errno(format!("setgid {}", cfg.gid)))?;
    nix::unistd::setuid(Uid::from_raw(cfg.uid)).map_err(errno(format!("setuid {}", cfg.uid)))?;
    if let Some(c) = &cfg.caps {
        crate::caps::keep_caps(false)?;
        crate::caps::apply(c)?;
    }
    if let Some(mask) = cfg.umask {
        nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(mask));
    }
    if cfg.no_new_privileges {
        if let Err(e) = nix::sys::prctl::set_no_new_privs() {
            return Err(format!("set no_new_privs: {}", e.desc()));
        }
        if let Some(prog) = &cfg.seccomp {
            crate::seccomp::install(prog)?;
        }
    }
    Ok((exe, argv, envp, master))
}

/// Resolves the executable as runc (Go's exec.LookPath) does: a name with a slash is used
/// as is, otherwise each PATH entry is tried (an empty entry is the cwd; an empty PATH has
/// no entries). Error texts match runc's.
pub fn lookup_executable(name: &str, path_env: &str) -> InitResult<PathBuf> {
    let check = |p: &Path| -> std::result::Result<(), std::io::Error> {
        let md = fs::metadata(p)?;
        if !md.is_dir() && md.permissions().mode() & 0o111 != 0 {
            Ok(())
        } else {
            Err(std::io::Error::from(std::io::ErrorKind::PermissionDenied))
        }
    };
    if name.contains('/') {
        return match check(Path::new(name)) {
            Ok(()) => Ok(PathBuf::from(name)),
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                Err(format!("exec: {name:?}: permission denied"))
            }
            Err(_) => Err(format!(
                "exec: {name:?}: stat {name}: no such file or directory"
            )),
        };
    }
    let mut denied = false;
    for dir in path_env.split(':').filter(|_| !path_env.is_empty()) {
        let dir = if dir.is_empty() { "." } else { dir };
        let cand = Path::new(dir).join(name);
        match check(&cand) {
            Ok(()) => return Ok(cand),
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => denied = true,
            Err(_) => {}
        }
    }
    if denied {
        Err(format!("exec: {name:?}: permission denied"))
    } else {
        Err(format!(
            "exec: {name:?}: executable file not found in $PATH"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every resource the plan can carry (the kernel's RLIMIT_* numbers) has nix's name.
    #[test]
    #[allow(clippy::unnecessary_cast)] // RLIMIT_* are u32 on glibc, i32 on musl
    fn every_planned_rlimit_has_a_resource() {
        use nix::sys::resource::Resource as R;
        for (n, r) in [
            (libc::RLIMIT_CPU, R::RLIMIT_CPU),
            (libc::RLIMIT_FSIZE, R::RLIMIT_FSIZE),
            (libc::RLIMIT_DATA, R::RLIMIT_DATA),
            (libc::RLIMIT_STACK, R::RLIMIT_STACK),
            (libc::RLIMIT_CORE, R::RLIMIT_CORE),
            (libc::RLIMIT_RSS, R::RLIMIT_RSS),
            (libc::RLIMIT_NPROC, R::RLIMIT_NPROC),
            (libc::RLIMIT_NOFILE, R::RLIMIT_NOFILE),
            (libc::RLIMIT_MEMLOCK, R::RLIMIT_MEMLOCK),
            (libc::RLIMIT_AS, R::RLIMIT_AS),
            (libc::RLIMIT_LOCKS, R::RLIMIT_LOCKS),
            (libc::RLIMIT_SIGPENDING, R::RLIMIT_SIGPENDING),
            (libc::RLIMIT_MSGQUEUE, R::RLIMIT_MSGQUEUE),
            (libc::RLIMIT_NICE, R::RLIMIT_NICE),
            (libc::RLIMIT_RTPRIO, R::RLIMIT_RTPRIO),
            (libc::RLIMIT_RTTIME, R::RLIMIT_RTTIME),
        ] {
            assert_eq!(rlimit_resource(n as u32), Some(r), "{n}");
        }
        assert_eq!(rlimit_resource(99), None);
    }

    #[test]
    fn lookup() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        fs::create_dir(&bin).unwrap();
        let exe = bin.join("tool");
        fs::write(&exe, "#!/bin/sh\n").unwrap();
        fs::set_permissions(&exe, fs::Permissions::from_mode(0o755)).unwrap();
        let noexec = bin.join("data");
        fs::write(&noexec, "x").unwrap();
        let path = format!("/nonexistent:{}", bin.display());

        assert_eq!(lookup_executable("tool", &path).unwrap(), exe);
        assert_eq!(
            lookup_executable("nosuchcmd", &path).unwrap_err(),
            r#"exec: "nosuchcmd": executable file not found in $PATH"#
        );
        assert_eq!(
            lookup_executable("data", &path).unwrap_err(),
            r#"exec: "data": permission denied"#
        );
        let abs = exe.to_str().unwrap();
        assert_eq!(lookup_executable(abs, "").unwrap(), exe);
        let e = lookup_executable("/no/such", &path).unwrap_err();
        assert_eq!(
            e,
            r#"exec: "/no/such": stat /no/such: no such file or directory"#
        );
        // No PATH: not searched at all, not even the cwd.
        assert_eq!(
            lookup_executable("tool", "").unwrap_err(),
            r#"exec: "tool": executable file not found in $PATH"#
        );
        // A directory is never executable.
        assert!(lookup_executable("bin", dir.path().to_str().unwrap()).is_err());
    }
}
