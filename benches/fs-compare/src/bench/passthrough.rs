//! The in-process candidate (`passthrough`): a `fs-compare serve` child mounted over
//! /dev/fuse, driven with the workloads, its memory sampled, and what it can still do jailed.

use std::{
    ffi::CString,
    fs::{self, File},
    io::{self, BufRead, BufReader},
    os::unix::ffi::OsStrExt,
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use super::report::{fmt_mem, fmt_ms, fmt_rate, stats};
use super::workload::{prepare, read_all, untar, BIG_MIB, SMALL_FILES};
use super::{other, SETTLE};
use crate::proc::{self, Mem};

fn is_mounted(mnt: &Path) -> bool {
    let want = mnt.as_os_str().as_bytes();
    fs::read("/proc/self/mountinfo")
        .map(|m| {
            m.split(|b| *b == b'\n')
                .any(|l| l.split(|b| *b == b' ').nth(4) == Some(want))
        })
        .unwrap_or(false)
}

/// Lazily unmounts `mnt` if a FUSE mount was left behind (server died).
fn umount_if_mounted(mnt: &Path) {
    if !is_mounted(mnt) {
        return;
    }
    let Ok(c) = CString::new(mnt.as_os_str().as_bytes()) else {
        return;
    };
    // SAFETY: `c` is a valid NUL-terminated path that outlives the call; umount2 only reads it.
    let rc = unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    if rc != 0 {
        eprintln!(
            "fs-compare: umount {}: {}",
            mnt.display(),
            io::Error::last_os_error()
        );
    }
}

/// A `fs-compare serve` child.
struct Server {
    child: Child,
    stdin: Option<ChildStdin>,
    mnt: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        // Closing stdin makes it unmount and exit; kill it if it does not.
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) | Err(_) => break,
                Ok(None) if Instant::now() > deadline => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    break;
                }
                Ok(None) => thread::sleep(Duration::from_millis(10)),
            }
        }
        umount_if_mounted(&self.mnt);
    }
}

impl Server {
    /// Starts `fs-compare serve` and waits for its `ready`: the server, its baseline memory,
    /// exec-to-ready time, in-process setup time (µs).
    fn start(
        exe: &Path,
        shared: &Path,
        mnt: &Path,
        threads: usize,
        jail: bool,
    ) -> io::Result<(Server, Mem, Duration, u64)> {
        let t0 = Instant::now();
        let mut cmd = Command::new(exe);
        cmd.arg("serve")
            .arg(shared)
            .arg(mnt)
            .arg(threads.to_string());
        if jail {
            cmd.arg("jail");
        }
        let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).spawn()?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take();
        let server = Server {
            child,
            stdin,
            mnt: mnt.to_path_buf(),
        };
        let mut lines = BufReader::new(stdout.ok_or_else(|| other("no stdout".into()))?).lines();
        let mut b = Mem::default();
        for line in lines.by_ref() {
            let line = line?;
            if line.starts_with("baseline ") {
                b = Mem {
                    rss: field(&line, "rss_kib").unwrap_or(0),
                    pss: field(&line, "pss_kib").unwrap_or(0),
                    private_dirty: field(&line, "private_dirty_kib").unwrap_or(0),
                };
            } else if line.starts_with("ready ") {
                let exec = t0.elapsed();
                if !is_mounted(mnt) {
                    return Err(other(format!("{} is not mounted", mnt.display())));
                }
                return Ok((server, b, exec, field(&line, "setup_us").unwrap_or(0)));
            }
        }
        Err(other("server exited before ready".into()))
    }
}

fn field(line: &str, key: &str) -> Option<u64> {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
}

/// The in-process candidate, RUNS times: start-up, memory at idle and after each workload,
/// workload throughput (and the same workloads on the host directory, for reference).
pub fn passthrough(work: &Path, runs: usize, threads: usize) -> io::Result<()> {
    let work = fs::canonicalize(work)?;
    let exe = std::env::current_exe()?;
    println!("== preparing {}", work.display());
    let (tar, big) = prepare(&work)?;
    let tar_mib = fs::metadata(&tar)?.len() as f64 / (1 << 20) as f64;
    let shared = work.join("shared");
    let mnt = work.join("mnt");
    fs::create_dir_all(&mnt)?;
    umount_if_mounted(&mnt);

    let (mut exec_ms, mut setup_ms) = (Vec::new(), Vec::new());
    let (mut untar_s, mut read_s, mut nat_untar_s, mut nat_read_s) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut base, mut idle, mut after_untar, mut after_read) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for run in 0..runs {
        let (server, b, exec, setup_us) = Server::start(&exe, &shared, &mnt, threads, false)?;
        let pid = server.child.id().to_string();
        exec_ms.push(exec.as_secs_f64() * 1e3);
        setup_ms.push(setup_us as f64 / 1e3);
        base.push(b);
        thread::sleep(SETTLE);
        idle.push(proc::rollup(&pid)?);

        let sub = format!("run{run}");
        let u = untar(&tar, &mnt.join(&sub))?;
        untar_s.push(u.as_secs_f64());
        thread::sleep(SETTLE);
        after_untar.push(proc::rollup(&pid)?);

        let (r, n) = read_all(&mnt.join("big.bin"))?;
        if n != (BIG_MIB << 20) as u64 {
            return Err(other(format!("read {n} bytes through the mount")));
        }
        read_s.push(r.as_secs_f64());
        thread::sleep(SETTLE);
        after_read.push(proc::rollup(&pid)?);
        if run == 0 {
            println!("== in-process server (as run here: root, no sandbox), pid {pid}");
            for l in proc::isolation(pid.parse().unwrap_or(0)) {
                println!("   {l}");
            }
        }
        drop(server);
        if is_mounted(&mnt) {
            return Err(other(format!("{} still mounted", mnt.display())));
        }
        fs::remove_dir_all(shared.join(&sub))?;

        // The same workloads straight on the host directory.
        let native = work.join("native");
        nat_untar_s.push(untar(&tar, &native)?.as_secs_f64());
        fs::remove_dir_all(&native)?;
        nat_read_s.push(read_all(&big)?.0.as_secs_f64());
        println!(
            "   run {run}: ready {:.1} ms (setup {:.1} ms), untar {:.2} s, read {:.2} s, \
             PSS idle {} KiB, after untar {} KiB, after read {} KiB (baseline {} KiB)",
            exec_ms[run],
            setup_ms[run],
            untar_s[run],
            read_s[run],
            idle[run].pss,
            after_untar[run].pss,
            after_read[run].pss,
            b.pss
        );
    }
    let delta = |v: &[Mem]| -> Vec<Mem> { v.iter().zip(&base).map(|(m, b)| m.sub(*b)).collect() };
    println!(
        "== in-process server (fuse-backend-rs PassthroughFs, {threads} thread(s)), {runs} runs"
    );
    println!("start, exec to mounted:            {}", fmt_ms(&exec_ms));
    println!("start, in-process setup only:      {}", fmt_ms(&setup_ms));
    println!(
        "untar {SMALL_FILES} files ({tar_mib:.0} MiB tar):  {} s = {} files/s; host dir: {} s",
        fmt_ms(&untar_s).replace(" ms", ""),
        (SMALL_FILES as f64 / stats(&untar_s).0).round(),
        fmt_ms(&nat_untar_s).replace(" ms", "")
    );
    println!(
        "read {BIG_MIB} MiB sequential:           {}; host dir (page cache): {}",
        fmt_rate(BIG_MIB as f64, &read_s),
        fmt_rate(BIG_MIB as f64, &nat_read_s)
    );
    println!("{}", fmt_mem("process before server (baseline)", &base));
    println!("{}", fmt_mem("process, idle after mount", &idle));
    println!("{}", fmt_mem("process, after untar", &after_untar));
    println!("{}", fmt_mem("process, after untar + read", &after_read));
    println!("{}", fmt_mem("server cost: idle - baseline", &delta(&idle)));
    println!(
        "{}",
        fmt_mem("server cost: after untar - base", &delta(&after_untar))
    );
    println!(
        "{}",
        fmt_mem("server cost: after read - base", &delta(&after_read))
    );
    jail_check(&exe, &shared, &mnt)
}

/// What the same server can still do once it has kata-vmm's jail credentials: the file
/// operations a guest issues, against a server as root and a jailed one.
fn jail_check(exe: &Path, shared: &Path, mnt: &Path) -> io::Result<()> {
    use std::os::unix::{fs::MetadataExt, fs::PermissionsExt, process::CommandExt};
    type Op = fn(&Path, &Path) -> io::Result<String>;
    fn err_or(r: io::Result<()>, ok: String) -> io::Result<String> {
        Ok(match r {
            Ok(()) => ok,
            Err(e) => format!("FAILS: {}", e.kind()),
        })
    }
    fn as_user(prog: &str, args: &[&Path]) -> io::Result<String> {
        let out = Command::new(prog)
            .args(args)
            .uid(1000)
            .gid(1000)
            .stderr(Stdio::piped())
            .output()?;
        Ok(if out.status.success() {
            "ok".into()
        } else {
            let e = String::from_utf8_lossy(&out.stderr);
            format!("FAILS: {}", e.rsplit(": ").next().unwrap_or("").trim())
        })
    }
    let ops: [(&str, Op); 7] = [
        ("root reads a root 0644 file", |m, _| {
            err_or(fs::read(m.join("pub")).map(|_| ()), "ok".into())
        }),
        ("root reads a root 0600 file", |m, _| {
            err_or(fs::read(m.join("secret")).map(|_| ()), "ok".into())
        }),
        ("root creates a file in a root 0755 dir", |m, _| {
            err_or(File::create(m.join("new")).map(|_| ()), "ok".into())
        }),
        ("root creates a file in a 0777 dir", |m, h| {
            File::create(m.join("open/f"))?;
            Ok(format!(
                "ok, owner uid {}",
                fs::metadata(h.join("open/f"))?.uid()
            ))
        }),
        ("root chowns it to 1000:1000", |m, _| {
            err_or(
                std::os::unix::fs::chown(m.join("open/f"), Some(1000), Some(1000)),
                "ok".into(),
            )
        }),
        ("uid 1000 creates a file in a 0777 dir", |m, _| {
            as_user("touch", &[&m.join("open/u")])
        }),
        ("root mknods a char device (1,3)", |m, _| {
            let st = Command::new("mknod")
                .arg(m.join("open/null"))
                .args(["c", "1", "3"])
                .stderr(Stdio::null())
                .status()?;
            Ok(if st.success() { "ok" } else { "FAILS" }.into())
        }),
    ];
    // The uid-1000 client must reach the mount point (mktemp -d makes the work dir 0700).
    if let Some(work) = mnt.parent() {
        fs::set_permissions(work, fs::Permissions::from_mode(0o755))?;
    }
    let host = shared.join("jail");
    let mut results = Vec::new();
    for jail in [false, true] {
        let _ = fs::remove_dir_all(&host);
        fs::create_dir_all(host.join("open"))?;
        fs::set_permissions(&host, fs::Permissions::from_mode(0o755))?;
        fs::set_permissions(host.join("open"), fs::Permissions::from_mode(0o777))?;
        fs::write(host.join("pub"), "pub")?;
        fs::write(host.join("secret"), "secret")?;
        fs::set_permissions(host.join("secret"), fs::Permissions::from_mode(0o600))?;
        let (server, ..) = Server::start(exe, shared, mnt, 1, jail)?;
        if jail {
            println!("== in-process server with kata-vmm's jail credentials");
            for l in proc::isolation(server.child.id()) {
                println!("   {l}");
            }
        }
        let m = mnt.join("jail");
        let r: Vec<String> = ops
            .iter()
            .map(|(_, op)| op(&m, &host).unwrap_or_else(|e| format!("FAILS: {}", e.kind())))
            .collect();
        results.push(r);
        drop(server);
    }
    let _ = fs::remove_dir_all(&host);
    println!("== guest-side file operations through the in-process server");
    println!(
        "{:<42} {:<24} jailed (uid 65534, no caps)",
        "operation", "as root"
    );
    for (i, (name, _)) in ops.iter().enumerate() {
        println!("{name:<42} {:<24} {}", results[0][i], results[1][i]);
    }
    Ok(())
}
