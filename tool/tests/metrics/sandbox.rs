//! The fake sandbox the tests scrape: a copy of `sh` named `containerd-shim-kata-v2` that
//! starts copies of `sleep` named `kata-vmm` and `virtiofsd`, their pid files and a fake host
//! cgroup; one `kata-rs metrics --once` of it and a sample's value.

use std::{
    fs,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

pub const BIN: &str = env!("CARGO_BIN_EXE_kata-rs");

/// Copies `from` to `dir/name` (mode 0755).
fn copy_exe(from: &str, dir: &Path, name: &str) -> PathBuf {
    let to = dir.join(name);
    fs::copy(from, &to).unwrap();
    fs::set_permissions(&to, fs::Permissions::from_mode(0o755)).unwrap();
    to
}

/// A fake sandbox: its processes, killed on drop.
pub struct Sandbox {
    _dir: tempfile::TempDir,
    pub state: PathBuf,
    pub cgroup_root: PathBuf,
    shim: Child,
    pids: Vec<u32>,
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        for p in &self.pids {
            // SAFETY: plain kill(2) of a process this test started.
            unsafe { libc::kill(*p as i32, libc::SIGKILL) };
        }
        let _ = self.shim.kill();
        let _ = self.shim.wait();
    }
}

fn wait_for(path: &Path) -> String {
    let t0 = Instant::now();
    loop {
        if let Ok(s) = fs::read_to_string(path) {
            if s.ends_with('\n') {
                return s;
            }
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "{} never written",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Spawns `cmd`, whose program was just copied: while another test thread forks, the copy
/// may still be open for writing in that child for a moment (ETXTBSY), so retry briefly.
fn spawn_fresh(mut cmd: Command) -> Child {
    let t0 = Instant::now();
    loop {
        match cmd.spawn() {
            Ok(c) => return c,
            Err(e)
                if e.raw_os_error() == Some(libc::ETXTBSY)
                    && t0.elapsed() < Duration::from_secs(5) =>
            {
                std::thread::sleep(Duration::from_millis(10))
            }
            Err(e) => panic!("spawn {cmd:?}: {e}"),
        }
    }
}

/// Sandbox `sb1` under `<tmp>/state` with a cgroup record `kubepods/pod1/sb1`.
pub fn sandbox() -> Sandbox {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    fs::create_dir(&bin).unwrap();
    let sh = copy_exe("/bin/sh", &bin, "containerd-shim-kata-v2");
    let vmm = copy_exe("/bin/sleep", &bin, "kata-vmm");
    let fsd = copy_exe("/bin/sleep", &bin, "virtiofsd");
    let state = dir.path().join("state/sb1");
    fs::create_dir_all(&state).unwrap();
    // The "shim" starts both and waits, like the real one (the VMM is its child).
    let mut shim = Command::new(&sh);
    shim.arg("-c")
        .arg(format!(
            "{} 300 & echo $! > {s}/kata-vmm.pid.tmp; mv {s}/kata-vmm.pid.tmp {s}/kata-vmm.pid; \
             {} 300 & echo $! > {s}/virtiofsd.pid.tmp; mv {s}/virtiofsd.pid.tmp {s}/virtiofsd.pid; wait",
            vmm.display(),
            fsd.display(),
            s = state.display()
        ))
        .stdin(Stdio::null());
    let shim = spawn_fresh(shim);
    let vmm_pid: u32 = wait_for(&state.join("kata-vmm.pid"))
        .trim()
        .parse()
        .unwrap();
    let fsd_pid: u32 = wait_for(&state.join("virtiofsd.pid"))
        .trim()
        .parse()
        .unwrap();
    // The processes have exec'd once their comm is the copy's name.
    let t0 = Instant::now();
    while fs::read_to_string(format!("/proc/{fsd_pid}/comm")).unwrap_or_default() != "virtiofsd\n"
        || fs::read_to_string(format!("/proc/{vmm_pid}/comm")).unwrap_or_default() != "kata-vmm\n"
    {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "the fake VMM never ran"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let cgroup_root = dir.path().join("cgroup");
    let cg = cgroup_root.join("kubepods/pod1/sb1");
    fs::create_dir_all(&cg).unwrap();
    fs::write(
        cg.join("cpu.stat"),
        "usage_usec 2500000\nuser_usec 2000000\nsystem_usec 500000\n",
    )
    .unwrap();
    fs::write(cg.join("memory.current"), "268435456\n").unwrap();
    fs::write(cg.join("pids.current"), "7\n").unwrap();
    fs::write(
        cg.join("cgroup.procs"),
        format!("{}\n{vmm_pid}\n{fsd_pid}\n", shim.id()),
    )
    .unwrap();
    fs::write(state.join("host-cgroup"), "kubepods/pod1/sb1").unwrap();
    Sandbox {
        state: dir.path().join("state"),
        cgroup_root,
        _dir: dir,
        shim,
        pids: vec![vmm_pid, fsd_pid],
    }
}

pub fn once(sb: &Sandbox) -> (String, String) {
    let o = Command::new(BIN)
        .args(["metrics", "--once", "--state-dir"])
        .arg(&sb.state)
        .arg("--cgroup-root")
        .arg(&sb.cgroup_root)
        .output()
        .unwrap();
    assert!(o.status.success(), "{o:?}");
    (
        String::from_utf8(o.stdout).unwrap(),
        String::from_utf8(o.stderr).unwrap(),
    )
}

/// The value of the sample line that starts with `prefix` (name and labels).
pub fn value(text: &str, prefix: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(prefix))
        .unwrap_or_else(|| panic!("no {prefix} in\n{text}"))
        .trim()
        .parse()
        .unwrap()
}
