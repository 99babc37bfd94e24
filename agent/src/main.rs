//! `kata-agent`: the kata-rs guest agent binary (see the crate docs and agent/README.md).
//!
//! ```text
//! kata-agent                                  # as /init (PID 1) in the guest: boot, serve vsock://-1:1024
//! kata-agent --listen unix:///path/agent.sock # development/test mode on a normal host
//!            [--cgroup-root DIR] [--share-dir DIR] [--log LEVEL]
//! ```
//! Log level: `--log` or env `KATA_AGENT_LOG` (error|warn|info|debug|trace; default warn).

use std::path::PathBuf;
use std::time::Duration;

use kata_rs_agent::service::ShutdownAction;
use kata_rs_agent::{boot, default_listen, init, share, Options};
use tracing::Level;

const USAGE: &str =
    "usage: kata-agent [--listen vsock://CID:PORT|unix:///PATH] [--cgroup-root DIR] [--share-dir DIR] [--log LEVEL]";

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some(init::INIT_ARG) {
        init::run();
    }
    if args.get(1).map(String::as_str) == Some(init::EXEC_ARG) {
        init::run_exec();
    }
    ensure_std_fds();
    let pid1 = std::process::id() == 1;
    let mut boot_errors = Vec::new();
    if pid1 {
        boot_errors = boot::boot();
    }
    let mut listen = default_listen();
    let mut cgroup_root = None;
    let mut share_dir = None;
    let mut level = std::env::var("KATA_AGENT_LOG").unwrap_or_else(|_| "warn".into());
    let mut it = args.iter().skip(1);
    while let Some(a) = it.next() {
        let mut value = |name: &str| -> String {
            match it.next() {
                Some(v) => v.clone(),
                None => fail(pid1, &format!("{name} needs a value\n{USAGE}")),
            }
        };
        match a.as_str() {
            "--listen" => listen = value("--listen"),
            "--cgroup-root" => cgroup_root = Some(PathBuf::from(value("--cgroup-root"))),
            "--share-dir" => share_dir = Some(PathBuf::from(value("--share-dir"))),
            "--log" => level = value("--log"),
            "--version" => {
                println!("kata-agent {}", env!("CARGO_PKG_VERSION"));
                return;
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                return;
            }
            // As PID 1, the kernel passes unknown command-line words (e.g. `nomodules`) as
            // arguments: ignore them silently (every console byte is expensive).
            _ if pid1 => {}
            other => fail(false, &format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    let level: Level = level.parse().unwrap_or(Level::WARN);
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(level)
        .with_ansi(false)
        .without_time()
        .with_target(false)
        .init();
    for e in &boot_errors {
        tracing::warn!("boot: {e}");
    }
    // The guest mounts the share its kernel command line names (before the ready line);
    // development mode uses a directory as it is (--share-dir, default the guest's path).
    let share = if pid1 {
        share::mount_at_boot(std::path::Path::new(share::GUEST_SHARE_DIR))
    } else {
        share::Share::Ready {
            dir: share_dir.unwrap_or_else(|| PathBuf::from(share::GUEST_SHARE_DIR)),
        }
    };
    let opts = Options {
        listen,
        cgroup_root,
        shutdown: if pid1 {
            ShutdownAction::Reboot
        } else {
            ShutdownAction::Exit
        },
        share,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build();
    let res = match rt {
        Ok(rt) => rt.block_on(kata_rs_agent::serve(opts)),
        Err(e) => Err(e.into()),
    };
    if let Err(e) = res {
        fail(pid1, &format!("{e:#}"));
    }
}

/// Prints a fatal error. PID 1 must not exit (that panics the kernel): it reboots, which
/// ends the VM so the VMM and shim see it.
fn fail(pid1: bool, msg: &str) -> ! {
    eprintln!("kata-rs-agent: error: {msg}");
    if pid1 {
        nix::unistd::sync();
        std::thread::sleep(Duration::from_millis(100));
        let _ = nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_AUTOBOOT);
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
    std::process::exit(2);
}

/// Opens /dev/null on any of fds 0-2 that is closed, so that pipes created later never
/// land there (the container spawn relies on it).
fn ensure_std_fds() {
    use nix::fcntl::{fcntl, FcntlArg, FdFlag};
    use std::os::fd::{AsFd, IntoRawFd};
    let (stdin, stdout, stderr) = (std::io::stdin(), std::io::stdout(), std::io::stderr());
    for fd in [stdin.as_fd(), stdout.as_fd(), stderr.as_fd()] {
        if fcntl(fd, FcntlArg::F_GETFD).is_ok() {
            continue;
        }
        // A fresh descriptor takes the lowest free number, which is `fd` itself; it stays
        // open for good and, like a standard descriptor, is inherited across exec.
        if let Ok(null) = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/null")
        {
            let _ = fcntl(&null, FcntlArg::F_SETFD(FdFlag::empty()));
            let _ = null.into_raw_fd();
        }
    }
}
