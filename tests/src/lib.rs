//! Helpers for the kata-rs integration tests.
//!
//! Every test boots a node with `tests/node-run SCRIPT` (an emulated node VM here, or this host
//! when its KVM works), and checks the script's output the way a user would read it. Scripts
//! print `key=value` marker lines and `== section` headers; see `tests/scripts/`.
//! Run with `cargo test -p kata-rs-tests -- --test-threads=1` (see tests/README.md).

pub mod parity_cases;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// The host-side CRI test tools of `tests/cri` (`kata-rs-cri`, `kata-rs-task-stats`), built
/// in release mode; the nodes get them through KATA_RS_NODE_EXTRA.
pub struct CriTools {
    /// The CRI client (k8s-cri over containerd's CRI socket).
    pub client: PathBuf,
    /// Reads a kata task's Task.Stats straight from its shim.
    pub task_stats: PathBuf,
}

/// Builds `package` in release mode (for `target`, a rustup target triple, or the host) and
/// returns the canonical paths of its binaries `bins`; panics naming what failed.
pub fn build_release(package: &str, target: Option<&str>, bins: &[&str]) -> Vec<PathBuf> {
    let root = repo_root();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut args = vec!["build", "--release", "-p", package];
    args.extend(target.iter().flat_map(|t| ["--target", *t]));
    let st = Command::new(cargo)
        .args(&args)
        .current_dir(&root)
        .status()
        .unwrap_or_else(|e| panic!("cannot run cargo build for {package}: {e}"));
    assert!(
        st.success(),
        "cargo {} failed{}",
        args.join(" "),
        target
            .map(|t| format!(" (make deps installs the {t} target)"))
            .unwrap_or_default()
    );
    let mut dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    if let Some(t) = target {
        dir.push(t);
    }
    bins.iter()
        .map(|name| {
            let bin = dir.join("release").join(name);
            assert!(bin.is_file(), "{} was not built", bin.display());
            bin.canonicalize()
                .unwrap_or_else(|e| panic!("canonical path of {}: {e}", bin.display()))
        })
        .collect()
}

/// Builds [`CriTools`] (`cargo build --release -p kata-rs-cri`) and returns their paths.
pub fn build_cri_tools() -> CriTools {
    let [client, task_stats]: [PathBuf; 2] =
        build_release("kata-rs-cri", None, &["kata-rs-cri", "kata-rs-task-stats"])
            .try_into()
            .expect("two binaries");
    CriTools { client, task_stats }
}

/// The repository's top directory.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// The static (musl) target triple `make binaries` links kata-vmm for, and the tests build
/// their static guest and node tools for (the shell scripts' `KATA_RS_STATIC_TARGET`,
/// scripts/paths.sh).
pub const STATIC_TARGET: &str = "x86_64-unknown-linux-musl";

/// kata-vmm as `make binaries` builds it, statically linked for [`STATIC_TARGET`]:
/// `target/<STATIC_TARGET>/release/kata-vmm` under the repository's top, the binary
/// `tests/node-run` puts on the node (the shell scripts' `KATA_RS_VMM_BIN`, scripts/paths.sh).
pub fn vmm_binary() -> PathBuf {
    repo_root()
        .join("target")
        .join(STATIC_TARGET)
        .join("release/kata-vmm")
}

/// `path` relative to the repository's top when it is under it (for messages).
pub fn repo_relative(path: &Path) -> String {
    let root = repo_root();
    path.strip_prefix(&root)
        .unwrap_or(path)
        .display()
        .to_string()
}

/// What the kata runtime needs from the other parts of the build: shim, VMM, agent tool,
/// guest kernel and guest image. Panics, naming what is missing and how to build it, so a
/// missing prerequisite fails the test loudly instead of skipping it.
pub fn require_kata_artifacts() {
    let root = repo_root();
    let wanted = [
        (
            root.join("target/release/containerd-shim-kata-v2"),
            "make binaries",
        ),
        (vmm_binary(), "make binaries"),
        (root.join("target/release/kata-agent-ctl"), "make binaries"),
        (root.join("target/guest/vmlinux"), "make kernel"),
        (root.join("target/guest/initrd.img"), "make image"),
    ];
    let missing: Vec<String> = wanted
        .iter()
        .filter(|(p, _)| !p.is_file())
        .map(|(p, how)| format!("{} (build it with `{how}`)", repo_relative(p)))
        .collect();
    assert!(
        missing.is_empty(),
        "prerequisites missing, this test cannot run:\n  {}",
        missing.join("\n  ")
    );
}

/// The result of one `tests/node-run` invocation.
#[derive(Debug)]
pub struct NodeRun {
    pub status: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// What node-run prints when the emulated node's own kernel broke during the run (a fault of
/// QEMU's TCG emulation of nested SVM, the test rig, never seen on a native node).
pub const NODE_KERNEL_FAILURE: &str = "node-run: node kernel failure";

/// What node-run prints when the node VM stopped without the script's status: under
/// `-no-reboot`, the emulated node's kernel reset itself (a triple fault of the node).
pub const NODE_VM_ENDED: &str = "node-run: the node VM ended without a status";

/// What kata-vmm prints when its guest triple faulted (`KVM_EXIT_SHUTDOWN`). On the emulated
/// node this happens, rarely and with no guest oops before it, in the middle of runs that
/// otherwise pass: QEMU TCG's nested SVM mis-delivers an exception to the L2 guest. On a
/// native node it is never treated as a rig fault.
pub const GUEST_TRIPLE_FAULT: &str = "guest stopped: triple fault";

/// Why a run is to be tried again on a fresh node, if it is: only for a fault of the emulated
/// test rig (its node kernel broke, the node VM reset, or a guest triple fault on the emulated
/// node), and at most `KATA_RS_NODE_RETRIES` times (default 2; 0 turns retries off). Two, not
/// one: the longest run (cri_churn's 50 microVMs) meets rig faults often enough that CI once
/// lost two attempts in a row.
/// With `guest_faults` false, a guest triple fault is left to the test (which counts them per
/// case, see [`node_run_counting_guest_faults`]).
fn rig_fault(run: &NodeRun, guest_faults: bool) -> Option<&'static str> {
    if run.status != Some(0) && run.stderr.contains(NODE_KERNEL_FAILURE) {
        Some("the emulated node's kernel failed")
    } else if run.stderr.contains(NODE_VM_ENDED) {
        Some("the node VM reset itself without a status")
    } else if guest_faults
        && run.is_emulated()
        && (run.stdout.contains(GUEST_TRIPLE_FAULT) || run.stderr.contains(GUEST_TRIPLE_FAULT))
    {
        Some("a kata-vmm guest triple faulted on the emulated node")
    } else {
        None
    }
}

/// Runs `tests/node-run tests/scripts/SCRIPT ARGS...`, echoes its output (visible with
/// `--nocapture`, and printed by the test harness when a test fails), and returns it. When
/// the emulated node's kernel itself failed (see [`NODE_KERNEL_FAILURE`]), the run is
/// repeated on a fresh node, saying so; the repeated run must pass on its own.
pub fn node_run(script: &str, args: &[&str]) -> NodeRun {
    node_run_with_extra(script, args, &[])
}

/// [`node_run`] with `KATA_RS_NODE_EXTRA` set so that the node gets `extra` (absolute host
/// paths) under `$KATA_RS_PAYLOAD/extra/`; with no `extra`, the environment's value is kept.
pub fn node_run_with_extra(script: &str, args: &[&str], extra: &[&str]) -> NodeRun {
    node_run_retrying(script, args, extra, true)
}

/// [`node_run_with_extra`] for a script of many independent cases (each its own microVM)
/// that reports each case's failure with its reason: a guest triple fault on the emulated
/// node does not repeat the whole run; the test counts such cases itself (see
/// [`NodeRun::is_emulated`] and [`GUEST_TRIPLE_FAULT`]). Node faults are still retried.
pub fn node_run_counting_guest_faults(script: &str, args: &[&str], extra: &[&str]) -> NodeRun {
    node_run_retrying(script, args, extra, false)
}

fn node_run_retrying(script: &str, args: &[&str], extra: &[&str], guest_faults: bool) -> NodeRun {
    let retries: u32 = std::env::var("KATA_RS_NODE_RETRIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    let mut attempt = 1;
    loop {
        let run = node_run_once(script, args, extra);
        let fault = rig_fault(&run, guest_faults);
        if fault.is_none() || attempt > retries {
            let missing = missing_commands(&run.stderr);
            assert!(
                missing.is_empty(),
                "the test script {script} calls commands that do not exist (a broken test):\n{}",
                missing.join("\n")
            );
            assert!(
                run.status != Some(125) && run.status != Some(124),
                "the node itself failed (node-run exit {:?}: 124 = timeout, 125 = node setup); stderr:\n{}",
                run.status,
                run.stderr
            );
            return run;
        }
        println!(
            "==== {script}: {} during attempt {attempt} (a fault of the QEMU TCG test rig, see \
             above); running {script} again on a fresh node",
            fault.unwrap_or_default()
        );
        attempt += 1;
    }
}

/// The lines where the shell running a node script reported a command it could not find
/// (`/payload/script/x.sh: line 3: helper: not found`): such a script skips what it meant to
/// check, so the run is a defect whatever its exit status.
fn missing_commands(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|l| {
            l.starts_with("/payload/")
                && (l.ends_with(": not found") || l.ends_with(": command not found"))
        })
        .collect()
}

fn node_run_once(script: &str, args: &[&str], extra: &[&str]) -> NodeRun {
    let root = repo_root();
    let script_path = root.join("tests/scripts").join(script);
    assert!(
        script_path.is_file(),
        "no test script {}",
        script_path.display()
    );
    let t0 = Instant::now();
    let mut cmd = Command::new(root.join("tests/node-run"));
    cmd.arg("--timeout")
        .arg("1500")
        .arg(&script_path)
        .args(args)
        .current_dir(&root);
    if !extra.is_empty() {
        cmd.env("KATA_RS_NODE_EXTRA", extra.join(":"));
    }
    let out = cmd.output().expect("cannot start tests/node-run");
    let run = NodeRun {
        status: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    println!(
        "---- node-run {script} ({:.1} s, exit {:?})\n---- stdout:\n{}---- stderr:\n{}----",
        t0.elapsed().as_secs_f64(),
        run.status,
        run.stdout,
        run.stderr
    );
    run
}

impl NodeRun {
    /// Whether the run was on the emulated node VM (QEMU TCG), not on native KVM.
    pub fn is_emulated(&self) -> bool {
        self.stderr.contains("node-run: node: emulated node VM")
    }

    /// The value of the first stdout line `KEY=VALUE` (the text after `=`, up to a space).
    pub fn marker(&self, key: &str) -> Option<&str> {
        marker(&self.stdout, key)
    }

    /// Like [`NodeRun::marker`], but panics with the output when the marker is absent.
    pub fn expect_marker(&self, key: &str) -> &str {
        self.marker(key)
            .unwrap_or_else(|| panic!("no `{key}=` line in the script output:\n{}", self.stdout))
    }

    /// The stdout lines between `== NAME` and the next `== ` header.
    pub fn section(&self, name: &str) -> Vec<&str> {
        section(&self.stdout, name)
    }

    /// Stdout lines that start with `PREFIX| ` (captured command output), prefix removed.
    pub fn prefixed(&self, prefix: &str) -> Vec<&str> {
        prefixed(&self.stdout, prefix)
    }

    /// Asserts node-run exited 0 (the script itself succeeded).
    pub fn assert_success(&self) {
        assert_eq!(
            self.status,
            Some(0),
            "the node script failed; stdout:\n{}\nstderr:\n{}",
            self.stdout,
            self.stderr
        );
    }

    /// Which node ran the script, from node-run's `node: ...` line: "native" or "emulated".
    pub fn node_kind(&self) -> &str {
        if self.stderr.contains("node-run: node: native KVM") {
            "native"
        } else if self.stderr.contains("node-run: node: emulated node VM") {
            "emulated"
        } else {
            panic!("node-run did not say which node it used:\n{}", self.stderr)
        }
    }
}

/// Collects failed checks of one node run so that a test reports every difference a user
/// would see, not only the first one; [`Checks::finish`] fails the test with all of them.
pub struct Checks<'a> {
    /// The run whose markers are checked.
    pub run: &'a NodeRun,
    /// What failed so far.
    pub failed: Vec<String>,
}

impl<'a> Checks<'a> {
    /// No failures yet.
    pub fn new(run: &'a NodeRun) -> Self {
        Checks {
            run,
            failed: Vec::new(),
        }
    }

    /// Records `what` as failed unless `ok`.
    pub fn check(&mut self, ok: bool, what: impl Into<String>) {
        if !ok {
            self.failed.push(what.into());
        }
    }

    /// The marker's value, or `<no KEY= line>`.
    pub fn m(&self, key: &str) -> String {
        self.run
            .marker(key)
            .map(str::to_string)
            .unwrap_or_else(|| format!("<no {key}= line>"))
    }

    /// The marker must be `want`.
    pub fn eq(&mut self, key: &str, want: &str, what: &str) {
        let got = self.m(key);
        self.check(got == want, format!("{what}: {key}={got}, expected {want}"));
    }

    /// The marker as a number (a failure if it is not one).
    pub fn num(&mut self, key: &str) -> Option<u64> {
        let v = self.m(key);
        let n = v.parse().ok();
        if n.is_none() {
            self.failed.push(format!("{key}={v} is not a number"));
        }
        n
    }

    /// A delay marker (milliseconds) that must be at most `max_ms`; the script prints
    /// `timeout(...)` when the change was never seen.
    pub fn within(&mut self, key: &str, max_ms: u64, what: &str) {
        let got = self.m(key);
        match got.parse::<u64>() {
            Ok(ms) => self.check(
                ms <= max_ms,
                format!("{what}: took {ms} ms ({key}), more than {max_ms} ms"),
            ),
            Err(_) => self
                .failed
                .push(format!("{what}: never seen ({key}={got})")),
        }
    }

    /// Fails the test named `name` with every failed check and the run's output.
    pub fn finish(self, name: &str) {
        assert!(
            self.failed.is_empty(),
            "{name}: {} check(s) failed:\n  - {}\n\n---- stdout:\n{}\n---- stderr:\n{}",
            self.failed.len(),
            self.failed.join("\n  - "),
            self.run.stdout,
            self.run.stderr
        );
    }
}

pub fn marker<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    let want = format!("{key}=");
    text.lines()
        .find_map(|l| l.strip_prefix(want.as_str()))
        .map(|v| v.split(' ').next().unwrap_or(""))
}

pub fn section<'a>(text: &'a str, name: &str) -> Vec<&'a str> {
    let header = format!("== {name}");
    text.lines()
        .skip_while(|l| *l != header)
        .skip(1)
        .take_while(|l| !l.starts_with("== "))
        .collect()
}

pub fn prefixed<'a>(text: &'a str, prefix: &str) -> Vec<&'a str> {
    let p = format!("{prefix}| ");
    text.lines()
        .filter_map(|l| l.strip_prefix(p.as_str()))
        .collect()
}

/// `symbol+0xoffset` of guest kernel address `addr` in `vmlinux` (its text symbols, by
/// `nm -n`; an address below 4 GiB is taken as physical, at the kernel's -2 GiB mapping:
/// early boot runs there). `?` when nm or the symbol is missing: for messages only.
pub fn symbolize(vmlinux: &Path, addr: u64) -> String {
    const KERNEL_MAP: u64 = 0xffff_ffff_8000_0000;
    let (virt, note) = if addr < 1 << 32 {
        (addr.wrapping_add(KERNEL_MAP), " (physical)")
    } else {
        (addr, "")
    };
    let Ok(out) = Command::new("nm").arg("-n").arg(vmlinux).output() else {
        return "?".into();
    };
    let mut best: Option<(u64, String)> = None;
    for l in String::from_utf8_lossy(&out.stdout).lines() {
        let mut it = l.split_whitespace();
        let (Some(a), Some(kind), Some(name)) = (it.next(), it.next(), it.next()) else {
            continue;
        };
        if !matches!(kind, "t" | "T" | "W" | "w") {
            continue;
        }
        let Ok(a) = u64::from_str_radix(a, 16) else {
            continue;
        };
        if a > virt {
            break;
        }
        best = Some((a, name.to_string()));
    }
    match best {
        Some((a, name)) => format!("{name}+{:#x}{note}", virt - a),
        None => "?".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OUT: &str = "node-kernel=6.1.0\n== kata\nhello\n6.1.0-kata-rs\nkata-rc=3\n\
                       == runc\nhello\nrunc-rc=3\nx| one\nx| two\nleftovers: none\n";

    #[test]
    fn markers() {
        assert_eq!(marker(OUT, "kata-rc"), Some("3"));
        assert_eq!(marker(OUT, "node-kernel"), Some("6.1.0"));
        assert_eq!(marker("a=1 b=2\n", "a"), Some("1"));
        assert_eq!(marker(OUT, "missing"), None);
    }

    #[test]
    fn sections() {
        assert_eq!(
            section(OUT, "kata"),
            vec!["hello", "6.1.0-kata-rs", "kata-rc=3"]
        );
        assert_eq!(section(OUT, "runc")[0], "hello");
        assert!(section(OUT, "nothing").is_empty());
    }

    #[test]
    fn only_a_failed_run_with_a_node_kernel_failure_is_a_rig_fault() {
        let rig_fault_all = |r: &NodeRun| rig_fault(r, true);
        let run = |status, stderr: &str| NodeRun {
            status: Some(status),
            stdout: String::new(),
            stderr: stderr.into(),
        };
        let kfail = "node-run: node kernel failure (the emulated node's own kernel ...): BUG: x";
        assert!(rig_fault_all(&run(125, kfail)).is_some());
        assert!(rig_fault_all(&run(1, kfail)).is_some());
        assert!(
            rig_fault_all(&run(0, kfail)).is_none(),
            "a passing run stands"
        );
        assert!(rig_fault_all(&run(1, "node-run: script x exited 1")).is_none());
        assert!(rig_fault_all(&run(124, "node-run: timeout after 1500s")).is_none());
        let ended = "node-run: node: emulated node VM\n\
                     node-run: the node VM ended without a status (qemu exit 0)";
        assert!(rig_fault_all(&run(125, ended)).is_some());
        let tf = "kata-vmm: vCPU 1: guest stopped: triple fault (KVM_EXIT_SHUTDOWN)";
        let emulated = format!("node-run: node: emulated node VM\n{tf}");
        let native = format!("node-run: node: native KVM\n{tf}");
        assert!(rig_fault_all(&run(0, &emulated)).is_some());
        assert!(
            rig_fault_all(&run(1, &native)).is_none(),
            "on a native node a guest triple fault is a failure"
        );
        // A run that counts guest faults per case is not repeated for one ...
        assert!(rig_fault(&run(0, &emulated), false).is_none());
        // ... but still for a fault of the node itself.
        assert!(rig_fault(&run(1, kfail), false).is_some());
    }

    #[test]
    fn a_script_calling_a_missing_helper_is_caught() {
        let err = "node-run: node: emulated node VM\n\
                   /payload/script/volumes.sh: line 263: stop_task: not found\n\
                   /payload/script/x.sh: line 2: foo: command not found\n\
                   sh: ls: not found\n";
        assert_eq!(
            missing_commands(err),
            vec![
                "/payload/script/volumes.sh: line 263: stop_task: not found",
                "/payload/script/x.sh: line 2: foo: command not found"
            ]
        );
        assert!(missing_commands("node-run: exit 0\n").is_empty());
    }

    #[test]
    fn prefixes() {
        assert_eq!(prefixed(OUT, "x"), vec!["one", "two"]);
    }

    #[test]
    fn harness_files_exist() {
        let root = repo_root();
        for f in [
            "tests/node-run",
            "tests/harness/node-side.sh",
            "tests/harness/node-init.sh",
            "tests/harness/lib.sh",
            "tests/image/build.sh",
        ] {
            assert!(root.join(f).is_file(), "{f} missing");
        }
    }

    /// The shell scripts' spelling (scripts/paths.sh, sourced by sh) names the same files.
    #[test]
    fn vmm_binary_is_the_shell_scripts_one() {
        let root = repo_root();
        let out = Command::new("sh")
            .args([
                "-c",
                ". scripts/paths.sh && echo \"$KATA_RS_STATIC_TARGET $KATA_RS_VMM_BIN\"",
            ])
            .current_dir(&root)
            .output()
            .expect("sh");
        assert!(out.status.success(), "{out:?}");
        let out = String::from_utf8(out.stdout).unwrap();
        let (target, bin) = out.trim().split_once(' ').expect("two words");
        assert_eq!(target, STATIC_TARGET);
        assert_eq!(root.join(bin), vmm_binary());
        assert_eq!(repo_relative(&vmm_binary()), bin);
    }

    #[test]
    fn symbolize_finds_the_enclosing_text_symbol() {
        assert_eq!(symbolize(Path::new("/nonexistent/vmlinux"), 0x1000), "?");
        let vmlinux = repo_root().join("target/guest/vmlinux");
        if !vmlinux.is_file() {
            return; // the kernel is built by `make kernel`; nothing to look up without it
        }
        let s = symbolize(&vmlinux, 0xffff_ffff_8100_0000);
        assert!(s.contains("+0x"), "{s}");
        // Early boot's physical addresses map to the same symbols.
        assert_eq!(symbolize(&vmlinux, 0x100_0000), format!("{s} (physical)"));
    }
}
