//! Unit tests of `vmm.rs`.

use super::*;

#[test]
fn why_line_skips_device_statistics() {
    let stats = "kata-vmm: virtio-blk: requests=0 read_bytes=0 errors=0 kicks=0";
    let stopped = "kata-vmm: vCPU 0: guest stopped: triple fault (KVM_EXIT_SHUTDOWN)";
    let err = "kata-vmm: error: cannot open /dev/kvm: No such file or directory";
    assert_eq!(why_line([stopped, stats].into_iter()), Some(stopped));
    assert_eq!(why_line([err, stopped, stats].into_iter()), Some(err));
    assert_eq!(why_line(["other", stats].into_iter()), Some("other"));
    assert_eq!(why_line([stats].into_iter()), None);
    assert_eq!(why_line(std::iter::empty()), None);
}

fn spec(path: &str) -> VmmSpec {
    VmmSpec {
        path: path.into(),
        kernel: "/k".into(),
        initrds: vec!["/guest.img".into()],
        mem_mib: 512,
        vcpus: 2,
        cid: 4242,
        vsock_uds: None,
        console_log: "/log".into(),
        console_limits: None,
        cmdline: String::new(),
        disks: Vec::new(),
        fs: None,
        fs_slot: false,
        fs_handshake_secs: 30,
        net: None,
        jail_id: None,
        placeholder_slots: 0,
        api_sock: None,
        snapshot_root: None,
        restore: None,
        restore_memory: RestoreMemory::Copy,
    }
}

#[test]
fn template_and_restore_arguments() {
    let mut s = spec("/vmm");
    s.placeholder_slots = 3;
    s.fs_slot = true;
    s.api_sock = Some("/t/.work-k/api.sock".into());
    s.snapshot_root = Some("/t/.work-k/snap".into());
    let a = arg_strings(&s).join(" ");
    assert!(
        a.ends_with(
            "--fs-slot tag=kata-rs --placeholder-slots 3 --api-sock /t/.work-k/api.sock --snapshot-root /t/.work-k/snap"
        ),
        "{a}"
    );
    assert!(!a.contains("--restore"), "{a}");
    let mut s = spec("/vmm");
    s.restore = Some("/t/k".into());
    s.fs = Some("/s/virtiofsd.sock".into());
    let a = arg_strings(&s).join(" ");
    assert!(
        a.ends_with(
            "--fs socket=/s/virtiofsd.sock,tag=kata-rs,handshake-timeout=30 --restore /t/k --restore-memory copy"
        ),
        "{a}"
    );
    assert!(!a.contains("--placeholder-slots"), "{a}");
    s.restore_memory = RestoreMemory::Map;
    let a = arg_strings(&s).join(" ");
    assert!(a.ends_with("--restore /t/k --restore-memory map"), "{a}");
}

/// The VMM's arguments for `s`, as strings.
fn arg_strings(s: &VmmSpec) -> Vec<String> {
    s.args()
        .into_iter()
        .map(|a| a.into_string().unwrap())
        .collect()
}

#[test]
fn command_line_matches_design() {
    let a = arg_strings(&spec("/vmm"));
    assert_eq!(
            a.join(" "),
            "--kernel /k --initrd /guest.img --mem-mib 512 --vcpus 2 --vsock-cid 4242 --console-log /log"
        );
    let mut s = spec("/vmm");
    s.vsock_uds = Some("/s/kata-vmm.vsock".into());
    let a = arg_strings(&s);
    assert!(
        a.join(" ")
            .contains("--vsock-cid 4242 --console-log /log --vsock-uds /s/kata-vmm.vsock"),
        "{a:?}"
    );
    let mut s = spec("/vmm");
    s.console_limits = Some((1024, 64));
    let a = arg_strings(&s);
    assert!(
        a.join(" ")
            .contains("--console-log /log --console-log-max-kib 1024 --console-log-rate-kib 64"),
        "{a:?}"
    );
    let mut s = spec("/vmm");
    s.fs = Some("/s/virtiofsd.sock".into());
    let a = s.args();
    assert_eq!(a[a.len() - 2], "--fs");
    assert_eq!(
        a[a.len() - 1],
        "socket=/s/virtiofsd.sock,tag=kata-rs,handshake-timeout=30"
    );
    let mut s = spec("/vmm");
    s.cmdline = "quiet debug".into();
    let a = s.args();
    assert_eq!(a[a.len() - 2], "--cmdline");
    assert_eq!(a[a.len() - 1], "quiet debug");
    s.jail_id = Some(2147486296);
    let a = arg_strings(&s);
    assert_eq!(
        a[a.len() - 4..].join(" "),
        "--jail-uid 2147486296 --jail-gid 2147486296"
    );
}

#[test]
fn cids_are_in_range() {
    for _ in 0..1000 {
        let c = random_cid();
        assert!((CID_MIN..=CID_MAX).contains(&c));
    }
}

#[test]
fn exit_status_mapping() {
    assert_eq!(VmmExit::Signal(9).container_exit_status(), 137);
    assert_eq!(VmmExit::Signal(15).container_exit_status(), 143);
    assert_eq!(VmmExit::Code(1).container_exit_status(), 255);
    assert_eq!(VmmExit::Code(0).container_exit_status(), 255);
    assert_eq!(VmmExit::Signal(200).container_exit_status(), 255);
    assert_eq!(VmmExit::Terminated.container_exit_status(), 137);
}

fn script(dir: &Path, body: &str) -> PathBuf {
    crate::test_util::fake_program(dir, "fake-vmm", body)
}

#[tokio::test(flavor = "current_thread")]
async fn early_exit_reports_error_line() {
    let dir = tempfile::tempdir().unwrap();
    let p = script(
        dir.path(),
        "echo 'some noise' >&2; echo 'kata-vmm: error: /dev/kvm: permission denied' >&2; exit 1",
    );
    let vmm = Vmm::spawn(&spec(p.to_str().unwrap())).unwrap();
    assert_eq!(vmm.wait().await, VmmExit::Code(1));
    assert_eq!(
        vmm.error_line().await.as_deref(),
        Some("kata-vmm: error: /dev/kvm: permission denied")
    );
}

#[tokio::test(flavor = "current_thread")]
async fn children_inherit_no_fd_of_the_shim() {
    // An fd of the shim without O_CLOEXEC (as inherited from containerd, or opened by a
    // careless library) on a number nothing else uses.
    // SAFETY: open + dup2 of /dev/null onto fd 77; closed below.
    let leaked = unsafe {
        let fd = libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY);
        assert!(fd >= 0);
        let l = libc::dup2(fd, 77);
        libc::close(fd);
        l
    };
    assert_eq!(leaked, 77);
    let dir = tempfile::tempdir().unwrap();
    let p = script(
            dir.path(),
            "l=; for f in /proc/$$/fd/*; do l=\"$l ${f##*/}\"; done; echo \"kata-vmm: error: fds:$l \" >&2; exit 1",
        );
    let vmm = Vmm::spawn(&spec(p.to_str().unwrap())).unwrap();
    assert_eq!(vmm.wait().await, VmmExit::Code(1));
    let line = vmm.error_line().await.unwrap();
    // SAFETY: closes the fd opened above.
    unsafe { libc::close(77) };
    assert!(line.starts_with("kata-vmm: error: fds: 0 1 "), "{line}");
    assert!(
        !line.contains(" 77 "),
        "the child inherited the shim's fd 77: {line}"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn stop_kills_after_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let p = script(dir.path(), "exec sleep 30");
    let vmm = Vmm::spawn(&spec(p.to_str().unwrap())).unwrap();
    assert!(vmm.exited().is_none());
    let e = vmm.stop(Duration::from_millis(100)).await;
    assert_eq!(e, VmmExit::Signal(9));
    assert_eq!(vmm.exited(), Some(VmmExit::Signal(9)));
    // Killing again after reaping is harmless.
    vmm.kill();
    assert_eq!(vmm.wait().await, VmmExit::Signal(9));
}

#[tokio::test(flavor = "current_thread")]
async fn terminate_lets_the_vmm_report_then_counts_as_a_kill() {
    let dir = tempfile::tempdir().unwrap();
    // Like kata-vmm: SIGTERM makes it print its report and exit 0.
    let p = script(
            dir.path(),
            "trap 'echo \"kata-vmm: virtio-vsock: report\" >&2; exit 0' TERM; while :; do sleep 0.05; done",
        );
    let vmm = Vmm::spawn(&spec(p.to_str().unwrap())).unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let e = vmm.terminate(Duration::from_secs(10)).await;
    assert_eq!(e, VmmExit::Terminated);
    assert_eq!(e.container_exit_status(), 137);
    let mut done = vmm.stderr_done.clone();
    let _ = tokio::time::timeout(Duration::from_secs(2), done.wait_for(|d| *d)).await;
    let lines = vmm.stderr.lock().unwrap().lines.clone();
    assert!(
        lines.iter().any(|l| l.contains("virtio-vsock: report")),
        "{lines:?}"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn vcpu_state_is_asked_for_with_sigusr1() {
    let dir = tempfile::tempdir().unwrap();
    // Like kata-vmm: SIGUSR1 makes it log where its vCPUs are, and it runs on.
    let p = script(
        dir.path(),
        "n=0; trap 'n=$((n+1)); echo \"kata-vmm: warning: vCPU state (SIGUSR1): vCPU0 rip=0x$n\" >&2' USR1; while :; do sleep 0.05; done",
    );
    let vmm = Vmm::spawn(&spec(p.to_str().unwrap())).unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let first = vmm.vcpu_state().await;
    assert_eq!(
        first.as_deref(),
        Some("kata-vmm: warning: vCPU state (SIGUSR1): vCPU0 rip=0x1")
    );
    // A second ask gets the new line, not the old one.
    let second = vmm.vcpu_state().await.unwrap();
    assert!(second.ends_with("rip=0x2"), "{second}");
    assert!(vmm.exited().is_none(), "the VMM runs on");
    vmm.kill();
    vmm.wait().await;
    // A guest stuck in one place answers with the same text twice: the second ask still
    // gets the new line (told apart by when it came, not by what it says).
    let p = script(
        dir.path(),
        "trap 'echo \"kata-vmm: warning: vCPU state (SIGUSR1): vCPU0 rip=0x7\" >&2' USR1; while :; do sleep 0.05; done",
    );
    let same = Vmm::spawn(&spec(p.to_str().unwrap())).unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    for _ in 0..2 {
        let l = same.vcpu_state().await.unwrap();
        assert!(l.ends_with("rip=0x7"), "{l}");
    }
    same.kill();
    same.wait().await;
    // A VMM that never answers: None after the wait, not a hang.
    let p = script(dir.path(), "trap '' USR1; while :; do sleep 0.05; done");
    let quiet = Vmm::spawn(&spec(p.to_str().unwrap())).unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let t = std::time::Instant::now();
    assert_eq!(quiet.vcpu_state().await, None);
    assert!(t.elapsed() < VCPU_STATE_WAIT + Duration::from_secs(2));
    quiet.kill();
    quiet.wait().await;
    // One that does not answer but had logged a boot watch sample: that line instead.
    let p = script(
        dir.path(),
        "trap '' USR1; echo 'kata-vmm: warning: guest not up 45 s after start (no virtio device activated): vCPU0 rip=0x9' >&2; while :; do sleep 0.05; done",
    );
    let watched = Vmm::spawn(&spec(p.to_str().unwrap())).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let l = watched.vcpu_state().await.unwrap();
    assert!(
        l.contains("guest not up 45 s") && l.ends_with("rip=0x9"),
        "{l}"
    );
    watched.kill();
    watched.wait().await;
}

#[tokio::test(flavor = "current_thread")]
async fn terminate_kills_a_vmm_that_ignores_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let p = script(dir.path(), "trap '' TERM; while :; do sleep 0.05; done");
    let vmm = Vmm::spawn(&spec(p.to_str().unwrap())).unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let e = vmm.terminate(Duration::from_millis(300)).await;
    assert_eq!(e, VmmExit::Signal(9));
    assert_eq!(e.container_exit_status(), 137);
}

#[tokio::test(flavor = "current_thread")]
async fn missing_binary_is_named() {
    let e = Vmm::spawn(&spec("/nonexistent/kata-vmm"))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("/nonexistent/kata-vmm"), "{e}");
}

fn which_sleep() -> PathBuf {
    ["/usr/bin/sleep", "/bin/sleep"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .expect("coreutils sleep")
}

#[test]
fn leftover_is_only_killed_when_it_is_ours() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .unwrap();
    write_pid_file(dir.path(), child.id()).unwrap();
    // `sleep 30` does not mention the state dir: left alone.
    assert_eq!(kill_leftover(dir.path(), Duration::from_secs(1)), None);
    assert!(child.try_wait().unwrap().is_none());
    child.kill().unwrap();
    child.wait().unwrap();

    // A process whose command line names the state dir, like the real VMM's
    // (`--console-log <state dir>/...`): a copy of sleep run from inside it.
    let sleep_copy = dir.path().join("sleep");
    std::fs::copy(which_sleep(), &sleep_copy).unwrap();
    let mut child = std::process::Command::new(&sleep_copy)
        .arg("30")
        .spawn()
        .unwrap();
    write_pid_file(dir.path(), child.id()).unwrap();
    // spawn() returns once the child is inside execve, a moment before the kernel
    // publishes its new argv in /proc/PID/cmdline: wait for it, as a later delete would.
    let cmdline = format!("/proc/{}/cmdline", child.id());
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while std::fs::read(&cmdline).unwrap().is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(
        kill_leftover(dir.path(), Duration::from_secs(2)),
        Some(child.id())
    );
    let st = child.wait().unwrap();
    assert_eq!(st.signal(), Some(9));
    assert_eq!(
        kill_leftover(&dir.path().join("none"), Duration::from_secs(1)),
        None
    );
}

#[test]
fn thread_states_name_each_thread_and_where_it_waits() {
    let t = std::thread::Builder::new()
        .name("sleeper-x".into())
        .spawn(|| std::thread::sleep(Duration::from_secs(2)))
        .unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let s = thread_states(std::process::id());
    assert!(s.contains("sleeper-x S "), "{s}");
    assert!(s.split(", ").count() >= 2, "{s}");
    t.join().unwrap();
    assert_eq!(thread_states(u32::MAX), "", "a process that is gone");
}

#[test]
fn spec_for_config_takes_the_configured_vm_and_no_devices() {
    let config = crate::config::Config::parse(
        "[hypervisor]\nmemory_mib = 384\nvcpus = 2\n[runtime]\nconsole_log_max_kib = 96\n",
        crate::config::ConfigSource::Defaults,
    )
    .unwrap();
    let h = &config.file.hypervisor;
    let s = VmmSpec::for_config(
        &config,
        4242,
        PathBuf::from("/s/kata-vmm.vsock"),
        PathBuf::from("/log/c.log"),
        "quiet".into(),
    );
    assert_eq!(
        (s.mem_mib, s.vcpus, s.cid),
        (384, 2, 4242),
        "the configured memory and vCPUs, the given CID"
    );
    assert_eq!(s.path, h.path);
    assert_eq!(s.kernel, h.kernel);
    assert_eq!(s.initrds, vec![h.initrd.clone()]);
    assert_eq!(s.console_limits.map(|l| l.0), Some(96));
    assert_eq!(s.vsock_uds.as_deref(), Some(Path::new("/s/kata-vmm.vsock")));
    let args: Vec<String> = s
        .args()
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    for flag in [
        "--fs",
        "--net",
        "--disk",
        "--restore",
        "--api-sock",
        "--snapshot-root",
        "--placeholder-slots",
        "--jail-uid",
    ] {
        assert!(!args.iter().any(|a| a == flag), "{flag} in {args:?}");
    }
}
