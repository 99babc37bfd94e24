//! The in-process candidate: fuse-backend-rs's PassthroughFs behind its `Vfs` and `Server`,
//! the stack Dragonball's virtio-fs device runs inside the VMM. Here the requests come from
//! /dev/fuse (the `fusedev` transport) instead of a virtqueue; the passthrough code, its
//! inode and handle tables and the request decoding are the same.

use std::{
    io::{self, BufRead, Write},
    path::Path,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread,
    time::Instant,
};

use fuse_backend_rs::{
    api::{server::Server, Vfs, VfsOptions},
    passthrough::{CachePolicy, Config, PassthroughFs},
    transport::{FuseChannel, FuseSession},
};

use crate::proc;

/// The uid/gid kata-vmm's jail runs as by default (vmm/README.md "Jail").
const JAIL_ID: libc::uid_t = 65534;

/// Set when the harness closed stdin: errors from /dev/fuse after that are the unmount.
static STOPPING: AtomicBool = AtomicBool::new(false);

/// `fs-compare serve SHARED MOUNTPOINT THREADS [jail]`: prints `baseline ...` (this process
/// before any of the server exists), mounts, with `jail` drops to kata-vmm's jail
/// credentials (uid/gid 65534, no supplementary groups; leaving uid 0 clears every
/// capability), prints `ready setup_us=...`, serves until stdin closes, then unmounts.
pub fn serve(shared: &str, mountpoint: &str, threads: usize, jail: bool) -> io::Result<()> {
    let base = proc::rollup("self")?;
    let mut out = io::stdout().lock();
    writeln!(
        out,
        "baseline rss_kib={} pss_kib={} private_dirty_kib={}",
        base.rss, base.pss, base.private_dirty
    )?;
    out.flush()?;

    let t0 = Instant::now();
    let vfs = Vfs::new(VfsOptions::default());
    let cfg = Config {
        root_dir: shared.to_string(),
        // Like virtiofsd --cache auto.
        cache_policy: CachePolicy::Auto,
        // Under Vfs (which validates path components): import() is called below.
        do_import: false,
        ..Default::default()
    };
    let fs = PassthroughFs::<()>::new(cfg)?;
    fs.import()?;
    vfs.mount(Box::new(fs), "/")
        .map_err(|e| io::Error::other(format!("vfs mount: {e:?}")))?;
    let server = Arc::new(Server::new(Arc::new(vfs)));
    let mut session = FuseSession::new(Path::new(mountpoint), "fs-compare", "", false)
        .map_err(|e| io::Error::other(format!("fuse session: {e}")))?;
    session
        .mount()
        .map_err(|e| io::Error::other(format!("fuse mount: {e}")))?;
    if jail {
        drop_privileges()?;
    }
    let mut workers = Vec::new();
    for i in 0..threads {
        let ch = session
            .new_channel()
            .map_err(|e| io::Error::other(format!("fuse channel: {e}")))?;
        let server = server.clone();
        workers.push(
            thread::Builder::new()
                .name(format!("fuse-{i}"))
                .spawn(move || serve_loop(&server, ch))?,
        );
    }
    let setup = t0.elapsed();
    writeln!(out, "ready setup_us={}", setup.as_micros())?;
    out.flush()?;

    // Serve until the harness closes our stdin.
    for line in io::stdin().lock().lines() {
        line?;
    }
    STOPPING.store(true, Ordering::SeqCst);
    // Jailed, umount(2) is not allowed any more: exiting closes /dev/fuse and the harness
    // detaches the dead mount.
    if !jail {
        session
            .umount()
            .map_err(|e| io::Error::other(format!("fuse umount: {e}")))?;
        session
            .wake()
            .map_err(|e| io::Error::other(format!("fuse wake: {e}")))?;
        for w in workers {
            let _ = w.join();
        }
    }
    Ok(())
}

fn serve_loop(server: &Server<Arc<Vfs>>, mut ch: FuseChannel) {
    loop {
        match ch.get_request() {
            Ok(Some((reader, writer))) => {
                if let Err(e) = server.handle_message(reader, writer.into(), None, None) {
                    if let fuse_backend_rs::Error::EncodeMessage(_) = e {
                        // The kernel side is gone (EBADF/ENODEV on the reply).
                        return;
                    }
                    if !STOPPING.load(Ordering::SeqCst) {
                        eprintln!("fs-compare serve: request failed: {e}");
                    }
                }
            }
            // Unmounted.
            Ok(None) => return,
            Err(_) if STOPPING.load(Ordering::SeqCst) => return,
            Err(e) => {
                eprintln!("fs-compare serve: /dev/fuse: {e}");
                return;
            }
        }
    }
}

/// What kata-vmm's jail does to credentials (steps 3-4), on this single-threaded process.
fn drop_privileges() -> io::Result<()> {
    let check = |rc: libc::c_int, what: &str| {
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::other(format!(
                "{what}: {}",
                io::Error::last_os_error()
            )))
        }
    };
    // SAFETY: setgroups with a count of 0 reads no memory; the pointer is never dereferenced.
    check(unsafe { libc::setgroups(0, std::ptr::null()) }, "setgroups")?;
    // SAFETY: plain syscalls on integer arguments; no memory is passed.
    check(
        unsafe { libc::setresgid(JAIL_ID, JAIL_ID, JAIL_ID) },
        "setresgid",
    )?;
    // SAFETY: as above.
    check(
        unsafe { libc::setresuid(JAIL_ID, JAIL_ID, JAIL_ID) },
        "setresuid",
    )
}
