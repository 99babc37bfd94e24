//! The separate-process candidate (`virtiofsd`): started the way the shim does, its socket
//! timed, its processes sampled, its isolation read; then several at once.

use std::{
    fs, io,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use super::report::{fmt_mem, fmt_ms};
use super::{other, SETTLE};
use crate::proc::{self, Mem};

/// A started virtiofsd.
struct Virtiofsd {
    child: Child,
    socket: PathBuf,
}

impl Virtiofsd {
    /// Starts it with the shim's arguments (shim/src/virtiofsd.rs), `sandbox` aside.
    fn start(bin: &Path, shared: &Path, socket: &Path, sandbox: &str) -> io::Result<Self> {
        let _ = fs::remove_file(socket);
        let child = Command::new(bin)
            .arg("--socket-path")
            .arg(socket)
            .arg("--shared-dir")
            .arg(shared)
            .args(["--cache", "auto", "--sandbox", sandbox, "--seccomp", "kill"])
            .args(["--announce-submounts", "--log-level", "error"])
            .stdin(Stdio::null())
            .spawn()?;
        Ok(Virtiofsd {
            child,
            socket: socket.to_path_buf(),
        })
    }

    /// Polls (every 100 µs) until the socket exists, like the shim waits for it.
    fn wait_socket(&mut self) -> io::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        while fs::symlink_metadata(&self.socket).is_err() {
            if let Some(st) = self.child.try_wait()? {
                return Err(other(format!("virtiofsd exited: {st}")));
            }
            if Instant::now() > deadline {
                return Err(other("virtiofsd: no socket after 10 s".into()));
            }
            thread::sleep(Duration::from_micros(100));
        }
        Ok(())
    }

    /// Its processes: itself and its children (the sandboxed server with --sandbox namespace).
    fn pids(&self) -> Vec<u32> {
        let mut v = vec![self.child.id()];
        v.extend(proc::children(self.child.id()));
        v
    }

    fn mem(&self) -> io::Result<Mem> {
        self.pids().iter().try_fold(Mem::default(), |acc, p| {
            Ok(acc.add(proc::rollup(&p.to_string())?))
        })
    }
}

impl Drop for Virtiofsd {
    fn drop(&mut self) {
        // SIGTERM: virtiofsd's monitor ends its sandboxed child and exits.
        // SAFETY: kill(2) with a pid we spawned and have not reaped yet; no memory involved.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while let Ok(None) = self.child.try_wait() {
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break;
            }
            thread::sleep(Duration::from_millis(5));
        }
        let _ = fs::remove_file(&self.socket);
        let mut pid = self.socket.clone().into_os_string();
        pid.push(".pid");
        let _ = fs::remove_file(pid);
    }
}

/// virtiofsd, RUNS times each with `--sandbox namespace` (the shim's) and `--sandbox none`:
/// start to socket, idle memory of all its processes, isolation; then CONCURRENT at once.
pub fn virtiofsd(bin: &Path, work: &Path, runs: usize, concurrent: usize) -> io::Result<()> {
    let work = fs::canonicalize(work)?;
    let shared = work.join("shared");
    fs::create_dir_all(&shared)?;
    let (mut ns_ms, mut none_ms) = (Vec::new(), Vec::new());
    let (mut ns_mem, mut none_mem) = (Vec::new(), Vec::new());
    let mut nprocs = 0;
    for run in 0..runs {
        // Alternate which variant goes first.
        let order: [&str; 2] = if run % 2 == 0 {
            ["namespace", "none"]
        } else {
            ["none", "namespace"]
        };
        for sandbox in order {
            let sock = work.join(format!("vfsd-{sandbox}.sock"));
            let t0 = Instant::now();
            let mut v = Virtiofsd::start(bin, &shared, &sock, sandbox)?;
            v.wait_socket()?;
            let ms = t0.elapsed().as_secs_f64() * 1e3;
            thread::sleep(SETTLE);
            let m = v.mem()?;
            if sandbox == "namespace" {
                ns_ms.push(ms);
                ns_mem.push(m);
                nprocs = v.pids().len();
                if run == 0 {
                    for p in v.pids() {
                        let role = if p == v.child.id() {
                            "monitor (the process the shim starts)"
                        } else {
                            "sandboxed server (its child)"
                        };
                        println!("== virtiofsd --sandbox namespace, pid {p}: {role}");
                        for l in proc::isolation(p) {
                            println!("   {l}");
                        }
                    }
                }
            } else {
                none_ms.push(ms);
                none_mem.push(m);
            }
            println!(
                "   run {run} --sandbox {sandbox}: socket after {ms:.1} ms, {} process(es), \
                 PSS {} KiB RSS {} KiB",
                v.pids().len(),
                m.pss,
                m.rss
            );
        }
    }

    // CONCURRENT sandboxes at once: what each costs when its text pages are shared.
    let mut all = Vec::new();
    for i in 0..concurrent {
        let mut v = Virtiofsd::start(
            bin,
            &shared,
            &work.join(format!("vfsd-c{i}.sock")),
            "namespace",
        )?;
        v.wait_socket()?;
        all.push(v);
    }
    thread::sleep(SETTLE);
    let sum = all.iter().try_fold(Mem::default(), |acc, v| {
        Ok::<_, io::Error>(acc.add(v.mem()?))
    })?;
    drop(all);
    let per = Mem {
        rss: sum.rss / concurrent as u64,
        pss: sum.pss / concurrent as u64,
        private_dirty: sum.private_dirty / concurrent as u64,
    };

    println!("== virtiofsd ({}), {runs} runs", bin.display());
    println!("start to socket, --sandbox namespace: {}", fmt_ms(&ns_ms));
    println!("start to socket, --sandbox none:      {}", fmt_ms(&none_ms));
    println!(
        "{}",
        fmt_mem(&format!("idle, namespace ({nprocs} processes)"), &ns_mem)
    );
    println!("{}", fmt_mem("idle, none (1 process)", &none_mem));
    println!(
        "{}",
        fmt_mem(&format!("idle, per pod, {concurrent} at once"), &[per])
    );
    Ok(())
}
