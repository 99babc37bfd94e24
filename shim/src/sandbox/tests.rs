//! Unit tests of `sandbox.rs`.

use super::*;
use crate::config::{ConfigFile, ConfigSource};
use crate::test_util::fake_program;
use std::path::Path;

fn config(dir: &Path, vmm_body: &str, dial: u64) -> Config {
    // A fake virtiofsd: serves nothing and stays until killed (its socket was bound for it).
    config_with_virtiofsd(dir, vmm_body, dial, "exec sleep 60")
}

fn config_with_virtiofsd(dir: &Path, vmm_body: &str, dial: u64, virtiofsd_body: &str) -> Config {
    let mut f = ConfigFile::default();
    f.hypervisor.path = fake_program(dir, "fake-vmm", vmm_body);
    f.hypervisor.kernel = dir.join("vmlinux");
    f.hypervisor.initrd = dir.join("initrd");
    f.shared_fs.virtiofsd = fake_program(dir, "fake-virtiofsd", virtiofsd_body);
    f.agent.dial_timeout_secs = dial;
    f.runtime.state_dir = dir.join("state");
    f.runtime.console_log_dir = dir.join("console");
    Config {
        file: f,
        source: ConfigSource::Defaults,
    }
}

fn paths(c: &Config) -> SandboxPaths {
    let p = SandboxPaths::new(c, "sb1");
    std::fs::create_dir_all(&p.state_dir).unwrap();
    std::fs::create_dir_all(p.console_log.parent().unwrap()).unwrap();
    p
}

/// Starts sandbox `sb1` with `c`, which must fail: its paths and the error.
async fn start_error(c: &Config) -> (SandboxPaths, String) {
    let p = paths(c);
    let e = Sandbox::start(c, "sb1", p.clone(), false, None, None)
        .await
        .err()
        .unwrap()
        .to_string();
    (p, e)
}

#[tokio::test(flavor = "current_thread")]
async fn vmm_error_is_reported_and_nothing_is_left() {
    let dir = tempfile::tempdir().unwrap();
    let c = config(dir.path(), "echo 'kata-vmm: error: cannot open /dev/vhost-vsock: No such file or directory' >&2; exit 1", 30);
    let p = paths(&c);
    let t0 = std::time::Instant::now();
    let e = Sandbox::start(&c, "sb1", p.clone(), false, None, None)
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(t0.elapsed() < Duration::from_secs(10));
    assert!(e.contains("exited with status 1 before the agent answered: kata-vmm: error: cannot open /dev/vhost-vsock"), "{e}");
    assert!(!p.state_dir.join(vmm::PID_FILE).exists());
    assert!(!p.state_dir.join(virtiofsd::PID_FILE).exists());
    assert!(!p.state_dir.join(virtiofsd::SOCKET_FILE).exists());
}

#[tokio::test(flavor = "current_thread")]
async fn a_virtiofsd_that_exits_before_it_serves_is_named_in_the_error() {
    // kata-vmm's handshake fails when the socket's last listener is gone; the error names
    // virtiofsd's own reason too, and nothing is left.
    let dir = tempfile::tempdir().unwrap();
    let c = config_with_virtiofsd(
        dir.path(),
        "sleep 0.5; echo 'kata-vmm: error: virtio-fs: backend at /s: SET_OWNER: connection reset' >&2; exit 1",
        30,
        "echo '[ERROR virtiofsd] Error: the shared directory does not exist' >&2; exit 1",
    );
    let (p, e) = start_error(&c).await;
    assert!(e.contains("SET_OWNER: connection reset"), "{e}");
    assert!(
        e.contains("the virtio-fs server exited with status 1: [ERROR virtiofsd] Error: the shared directory does not exist"),
        "{e}"
    );
    assert!(!p.state_dir.join(virtiofsd::PID_FILE).exists());
    assert!(!p.state_dir.join(virtiofsd::SOCKET_FILE).exists());
}

#[tokio::test(flavor = "current_thread")]
async fn agent_timeout_kills_vmm_and_shows_console() {
    let dir = tempfile::tempdir().unwrap();
    // The fake VMM writes to its console log (the argument after --console-log) and
    // then hangs, like a guest whose agent never comes up; it records its pid.
    let body = format!(
            "while [ $# -gt 0 ]; do [ \"$1\" = --console-log ] && log=$2; shift; done\necho 'Kernel panic - not syncing: no init' > \"$log\"\necho $$ > {}/pid\nexec sleep 60",
            dir.path().display()
        );
    let c = config(dir.path(), &body, 1);
    let (p, e) = start_error(&c).await;
    assert!(
        e.starts_with("agent in the VM did not answer within 1s"),
        "{e}"
    );
    assert!(e.contains("Kernel panic - not syncing: no init"), "{e}");
    let pid: i32 = std::fs::read_to_string(dir.path().join("pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // Killed and reaped: no such process any more.
    assert!(!Path::new(&format!("/proc/{pid}")).exists());
    assert!(!p.state_dir.join(vmm::PID_FILE).exists());
    p.remove(false).unwrap();
    assert!(!p.state_dir.exists());
}
