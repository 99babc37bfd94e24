//! The two harnesses: `passthrough` (starts `fs-compare serve`, drives the FUSE mount with an
//! untar and a sequential read, samples the server's memory) and `virtiofsd` (starts it the
//! way the shim does, times its socket, samples both of its processes, reads its isolation).

use std::{
    ffi::CString,
    fs::{self, File},
    io::{self, BufRead, BufReader, Read, Write},
    os::unix::ffi::OsStrExt,
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use crate::proc::{self, Mem};

/// Files in the untar workload.
const SMALL_FILES: usize = 10_000;
/// Directories they are spread over.
const SMALL_DIRS: usize = 100;
/// Size of the sequential-read file.
const BIG_MIB: usize = 256;
/// How long a process is left alone before its idle memory is sampled.
const SETTLE: Duration = Duration::from_millis(300);

fn other(msg: String) -> io::Error {
    io::Error::other(msg)
}

/// xorshift64: file contents and sizes that are not all zeros, reproducibly.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

/// WORK/small.tar (10k files of 512 B-8 KiB in 100 directories) and WORK/shared/big.bin
/// (256 MiB), made once.
fn prepare(work: &Path) -> io::Result<(PathBuf, PathBuf)> {
    let shared = work.join("shared");
    fs::create_dir_all(&shared)?;
    let tar = work.join("small.tar");
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    if !tar.exists() {
        let tree = work.join("tree");
        let _ = fs::remove_dir_all(&tree);
        let mut buf = vec![0u8; 8192];
        for i in 0..SMALL_FILES {
            let dir = tree.join(format!("d{:03}", i % SMALL_DIRS));
            if i < SMALL_DIRS {
                fs::create_dir_all(&dir)?;
            }
            let len = 512 + (rng.next() % 7681) as usize;
            rng.fill(&mut buf[..len]);
            fs::write(dir.join(format!("f{i:05}")), &buf[..len])?;
        }
        let st = Command::new("tar")
            .arg("-cf")
            .arg(work.join("small.tar.tmp"))
            .arg("-C")
            .arg(&tree)
            .arg(".")
            .status()?;
        if !st.success() {
            return Err(other(format!("tar -c: {st}")));
        }
        fs::rename(work.join("small.tar.tmp"), &tar)?;
        fs::remove_dir_all(&tree)?;
    }
    let big = shared.join("big.bin");
    if fs::metadata(&big).map(|m| m.len()).unwrap_or(0) != (BIG_MIB << 20) as u64 {
        let mut f = File::create(&big)?;
        let mut buf = vec![0u8; 1 << 20];
        for _ in 0..BIG_MIB {
            rng.fill(&mut buf);
            f.write_all(&buf)?;
        }
        f.sync_all()?;
    }
    Ok((tar, big))
}

fn untar(tar: &Path, into: &Path) -> io::Result<Duration> {
    fs::create_dir_all(into)?;
    let t = Instant::now();
    let st = Command::new("tar")
        .arg("-xf")
        .arg(tar)
        .arg("-C")
        .arg(into)
        .status()?;
    let d = t.elapsed();
    if !st.success() {
        return Err(other(format!("tar -x into {}: {st}", into.display())));
    }
    Ok(d)
}

fn read_all(path: &Path) -> io::Result<(Duration, u64)> {
    let t = Instant::now();
    let mut f = File::open(path)?;
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let r = f.read(&mut buf)?;
        if r == 0 {
            break;
        }
        n += r as u64;
    }
    Ok((t.elapsed(), n))
}

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

/// Mean, min, max.
fn stats(v: &[f64]) -> (f64, f64, f64) {
    let mean = v.iter().sum::<f64>() / v.len() as f64;
    let min = v.iter().copied().fold(f64::INFINITY, f64::min);
    let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (mean, min, max)
}

fn fmt_ms(v: &[f64]) -> String {
    let (mean, min, max) = stats(v);
    format!("{mean:.1} ms (min {min:.1}, max {max:.1}, n={})", v.len())
}

fn fmt_rate(mib: f64, secs: &[f64]) -> String {
    let rates: Vec<f64> = secs.iter().map(|s| mib / s).collect();
    let (mean, min, max) = stats(&rates);
    format!("{mean:.0} MiB/s (min {min:.0}, max {max:.0})")
}

fn fmt_mem(label: &str, v: &[Mem]) -> String {
    let n = v.len() as f64;
    let avg = |f: fn(&Mem) -> u64| v.iter().map(f).sum::<u64>() as f64 / n / 1024.0;
    format!(
        "{label:<34} RSS {:6.2} MiB  PSS {:6.2} MiB  Private_Dirty {:6.2} MiB",
        avg(|m| m.rss),
        avg(|m| m.pss),
        avg(|m| m.private_dirty)
    )
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
