//! PID 1 duties at guest boot: leave the initramfs `rootfs` for a real mount (so that
//! containers can pivot_root), mount the API file systems, set up cgroup v2, bring up `lo`,
//! and make sure stdio is the console.

use std::fs;
use std::path::Path;

use nix::mount::{mount, MsFlags};
use nix::unistd::{chdir, chroot};

use crate::cgroup;

/// ramfs magic (statfs f_type); nix names only tmpfs's.
const RAMFS_MAGIC: u32 = 0x8584_58f6;

/// Runs all boot steps. Failures are logged and boot goes on: a half-working agent that
/// answers Check is more useful than a kernel panic. Returns the failures.
pub fn boot() -> Vec<String> {
    let mut errors = Vec::new();
    let mut step = |what: &str, r: Result<(), String>| {
        if let Err(e) = r {
            errors.push(format!("{what}: {e}"));
        }
    };
    let mut cgroup_errors = Vec::new();
    step("leave initramfs rootfs", leave_rootfs());
    let nodev_noexec = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    step(
        "mount /dev",
        mnt(
            "devtmpfs",
            "/dev",
            "devtmpfs",
            MsFlags::MS_NOSUID,
            "mode=0755",
        ),
    );
    reopen_console();
    step(
        "mount /proc",
        mnt("proc", "/proc", "proc", nodev_noexec, ""),
    );
    step(
        "mount /sys",
        mnt("sysfs", "/sys", "sysfs", nodev_noexec, ""),
    );
    step(
        "mount /dev/pts",
        mnt(
            "devpts",
            "/dev/pts",
            "devpts",
            MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
            "ptmxmode=0666,mode=0620",
        ),
    );
    step(
        "mount /dev/shm",
        mnt(
            "shm",
            "/dev/shm",
            "tmpfs",
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            "mode=1777",
        ),
    );
    step(
        "mount /sys/fs/cgroup",
        mnt("cgroup2", "/sys/fs/cgroup", "cgroup2", nodev_noexec, ""),
    );
    let missing = cgroup::enable_controllers(Path::new("/sys/fs/cgroup"));
    if !missing.is_empty() {
        cgroup_errors.push(format!(
            "cgroup controllers not available: {}",
            missing.join(" ")
        ));
    }
    // /run needs no tmpfs of its own: the initramfs root already is a writable tmpfs. The
    // sandbox share is mounted at /run/kata-rs/shared afterwards (`share::mount_at_boot`).
    step("bring up lo", loopback_up());
    errors.extend(cgroup_errors);
    errors
}

fn mnt(src: &str, target: &str, fstype: &str, flags: MsFlags, data: &str) -> Result<(), String> {
    fs::create_dir_all(target).map_err(|e| format!("mkdir: {e}"))?;
    let data = (!data.is_empty()).then_some(data);
    match mount(Some(src), target, Some(fstype), flags, data) {
        Ok(()) | Err(nix::Error::EBUSY) => Ok(()),
        Err(e) => Err(e.desc().to_string()),
    }
}

/// The kernel runs /init on the initramfs `rootfs`, the root of the mount tree, which
/// pivot_root(2) refuses to move. Bind-mount it onto a subdirectory and MS_MOVE that mount
/// over "/" (what switch_root does with a new root): the root is then a mount with a
/// parent, the files stay where they are (nothing copied), and containers can pivot_root.
fn leave_rootfs() -> Result<(), String> {
    let fstype = nix::sys::statfs::statfs("/")
        .map(|s| s.filesystem_type())
        .map_err(|e| format!("statfs /: {}", e.desc()))?;
    let ramfs = fstype == nix::sys::statfs::FsType(RAMFS_MAGIC as _);
    if !ramfs && fstype != nix::sys::statfs::TMPFS_MAGIC {
        return Ok(()); // booted from a real root file system
    }
    let stage = "/.kata-root";
    let _ = fs::create_dir(stage);
    let e = |what: &'static str| move |e: nix::Error| format!("{what}: {}", e.desc());
    mount(
        Some("/"),
        stage,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(e("bind / on /.kata-root"))?;
    chdir(stage).map_err(e("chdir /.kata-root"))?;
    mount(Some("."), "/", None::<&str>, MsFlags::MS_MOVE, None::<&str>)
        .map_err(e("move /.kata-root to /"))?;
    chroot(".").map_err(e("chroot"))?;
    chdir("/").map_err(e("chdir /"))?;
    let _ = fs::remove_dir(stage);
    Ok(())
}

/// Makes fds 0-2 the console if the kernel could not open it (no /dev/console in the
/// initramfs) — after devtmpfs is mounted it exists.
fn reopen_console() {
    use nix::fcntl::{fcntl, FcntlArg};
    use std::os::fd::AsFd;
    let (stdin, stdout, stderr) = (std::io::stdin(), std::io::stdout(), std::io::stderr());
    let missing = [stdin.as_fd(), stdout.as_fd(), stderr.as_fd()]
        .into_iter()
        .any(|fd| fcntl(fd, FcntlArg::F_GETFD).is_err());
    if !missing {
        return;
    }
    if let Ok(f) = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/console")
    {
        let _ = nix::unistd::dup2_stdin(&f);
        let _ = nix::unistd::dup2_stdout(&f);
        let _ = nix::unistd::dup2_stderr(&f);
    }
}

/// Sets IFF_UP on `lo` so that containers (which share the guest network) have localhost.
fn loopback_up() -> Result<(), String> {
    use nix::sys::socket::{socket, AddressFamily, SockFlag, SockType};
    use std::os::fd::AsRawFd;
    let s = socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(|e| std::io::Error::from(e).to_string())?;
    // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS on our socket, with a zero-initialised ifreq naming
    // "lo" that lives across both calls (nix has no wrapper for these ioctls).
    let r = unsafe {
        let mut ifr: libc::ifreq = std::mem::zeroed();
        for (i, b) in b"lo\0".iter().enumerate() {
            ifr.ifr_name[i] = *b as libc::c_char;
        }
        let mut r = libc::ioctl(s.as_raw_fd(), libc::SIOCGIFFLAGS as _, &mut ifr);
        if r == 0 {
            ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            r = libc::ioctl(s.as_raw_fd(), libc::SIOCSIFFLAGS as _, &ifr);
        }
        r
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error().to_string());
    }
    Ok(())
}
