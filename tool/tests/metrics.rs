//! `kata-rs metrics` on a sandbox state directory made up of real processes: a copy of `sh`
//! named `containerd-shim-kata-v2` that starts copies of `sleep` named `kata-vmm` and
//! `virtiofsd` (so /proc has real figures and the right `comm`s), and a fake host cgroup;
//! guest-side figures from a fake shim's Task service found through containerd bundles.
//! The output is checked by name and value, by `promtool check metrics`, and by a real
//! Prometheus server scraping it (Debian's `prometheus` package, installed by `make deps`).

use std::{
    fs,
    io::{Read, Write},
    net::TcpStream,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

const BIN: &str = env!("CARGO_BIN_EXE_kata-rs");

/// Copies `from` to `dir/name` (mode 0755).
fn copy_exe(from: &str, dir: &Path, name: &str) -> PathBuf {
    let to = dir.join(name);
    fs::copy(from, &to).unwrap();
    fs::set_permissions(&to, fs::Permissions::from_mode(0o755)).unwrap();
    to
}

/// A fake sandbox: its processes, killed on drop.
struct Sandbox {
    _dir: tempfile::TempDir,
    state: PathBuf,
    cgroup_root: PathBuf,
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
fn sandbox() -> Sandbox {
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

fn once(sb: &Sandbox) -> (String, String) {
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
fn value(text: &str, prefix: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(prefix))
        .unwrap_or_else(|| panic!("no {prefix} in\n{text}"))
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn figures_of_each_host_process_and_the_cgroup() {
    let sb = sandbox();
    let (out, err) = once(&sb);
    assert_eq!(value(&out, "kata_rs_sandboxes "), 1.0);
    for p in ["vmm", "virtiofsd", "shim"] {
        let l = format!("{{sandbox_id=\"sb1\",process=\"{p}\"}} ");
        let rss = value(&out, &format!("kata_rs_process_resident_memory_bytes{l}"));
        assert!(rss > 100_000.0, "{p}: rss {rss}\n{out}");
        assert!(value(&out, &format!("kata_rs_process_threads{l}")) >= 1.0);
        assert!(value(&out, &format!("kata_rs_process_cpu_seconds_total{l}")) >= 0.0);
        // PSS and io need the process to be ours (or root): they are.
        assert!(
            value(
                &out,
                &format!("kata_rs_process_proportional_memory_bytes{l}")
            ) > 0.0
        );
    }
    assert_eq!(
        value(
            &out,
            "kata_rs_sandbox_cgroup_cpu_seconds_total{sandbox_id=\"sb1\"} "
        ),
        2.5
    );
    assert_eq!(
        value(
            &out,
            "kata_rs_sandbox_cgroup_memory_bytes{sandbox_id=\"sb1\"} "
        ),
        268435456.0
    );
    assert_eq!(
        value(&out, "kata_rs_sandbox_cgroup_pids{sandbox_id=\"sb1\"} "),
        7.0
    );
    assert_eq!(value(&out, "kata_rs_metrics_scrape_errors "), 0.0, "{err}");
    assert_eq!(err, "");
}

#[test]
fn stale_pid_files_and_bad_records_are_errors_not_figures() {
    let sb = sandbox();
    // The VMM is gone and its pid taken by someone else (this test process); the record
    // climbs out of the cgroup root.
    fs::write(
        sb.state.join("sb1/kata-vmm.pid"),
        format!("{}\n", std::process::id()),
    )
    .unwrap();
    fs::write(sb.state.join("sb1/host-cgroup"), "../../etc").unwrap();
    // Not a sandbox id: ignored.
    fs::create_dir_all(sb.state.join("not an id")).unwrap();
    let (out, err) = once(&sb);
    assert_eq!(value(&out, "kata_rs_sandboxes "), 1.0);
    assert!(!out.contains("process=\"vmm\""), "{out}");
    assert!(out.contains("process=\"virtiofsd\""), "{out}");
    assert!(
        !out.contains("kata_rs_sandbox_cgroup_memory_bytes{"),
        "{out}"
    );
    assert_eq!(value(&out, "kata_rs_metrics_scrape_errors "), 2.0);
    assert!(err.contains("sandbox sb1: vmm: process"), "{err}");
    assert!(err.contains("(a stale pid file)"), "{err}");
    assert!(err.contains("host-cgroup: not a cgroup path"), "{err}");
}

#[test]
fn promtool_accepts_the_output() {
    let v = Command::new("promtool")
        .arg("--version")
        .output()
        .expect("promtool missing (Debian's prometheus package; make deps installs it)");
    assert!(v.status.success());
    let sb = sandbox();
    let (out, _) = once(&sb);
    let mut p = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    p.stdin.take().unwrap().write_all(out.as_bytes()).unwrap();
    let o = p.wait_with_output().unwrap();
    assert!(
        o.status.success() && o.stdout.is_empty() && o.stderr.is_empty(),
        "promtool check metrics: {o:?}\n{out}"
    );
    // And promtool is strict enough to catch a broken exposition.
    let mut p = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    p.stdin
        .take()
        .unwrap()
        .write_all(b"# TYPE kata_rs_x counter\nkata_rs_x{a=\"unterminated} 1\n")
        .unwrap();
    assert!(!p.wait_with_output().unwrap().status.success());
}

#[test]
fn served_over_http() {
    let sb = sandbox();
    let addr = format!("127.0.0.1:{}", free_port());
    let _server = Killed(
        Command::new(BIN)
            .args(["metrics", "--listen", &addr, "--state-dir"])
            .arg(&sb.state)
            .arg("--cgroup-root")
            .arg(&sb.cgroup_root)
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let t0 = Instant::now();
    let out = loop {
        if let Ok(mut s) = TcpStream::connect(&addr) {
            s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
                .unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).unwrap();
            break out;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "server never listened"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
    assert!(
        out.contains("Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n"),
        "{out}"
    );
    assert_eq!(
        value(&out, "kata_rs_sandbox_cgroup_pids{sandbox_id=\"sb1\"} "),
        7.0
    );
}

/// Kills and reaps a child on drop.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A free local port (bound, then released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The body of `GET path` from `addr`, if it answers 200.
fn http_get(addr: &str, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let (head, body) = out.split_once("\r\n\r\n")?;
    head.contains(" 200 ").then(|| body.to_string())
}

/// A real Prometheus server (Debian's `prometheus`) scrapes `kata-rs metrics` every second
/// and answers a query with the sandbox's figure.
#[test]
fn a_prometheus_server_scrapes_it() {
    Command::new("prometheus")
        .arg("--version")
        .output()
        .expect("prometheus missing (Debian's prometheus package; make deps installs it)");
    let sb = sandbox();
    let metrics_addr = format!("127.0.0.1:{}", free_port());
    let _metrics = Killed(
        Command::new(BIN)
            .args(["metrics", "--listen", &metrics_addr, "--state-dir"])
            .arg(&sb.state)
            .arg("--cgroup-root")
            .arg(&sb.cgroup_root)
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("prometheus.yml");
    fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: kata-rs\n    static_configs:\n      - targets: ['{metrics_addr}']\n"
        ),
    )
    .unwrap();
    let prom_addr = format!("127.0.0.1:{}", free_port());
    let log = dir.path().join("prometheus.log");
    let _prom = Killed(
        Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={prom_addr}"))
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    let query = "/api/v1/query?query=kata_rs_sandbox_cgroup_pids%7Bsandbox_id%3D%22sb1%22%7D";
    let t0 = Instant::now();
    let result = loop {
        if let Some(body) = http_get(&prom_addr, query) {
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            let r = &v["data"]["result"];
            if r.as_array().is_some_and(|a| !a.is_empty()) {
                break r.clone();
            }
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "no sample after 60 s; targets: {:?}\nlog:\n{}",
            http_get(&prom_addr, "/api/v1/targets"),
            fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    assert_eq!(result[0]["metric"]["job"], "kata-rs", "{result}");
    assert_eq!(result[0]["value"][1], "7", "{result}");
    // The scrape itself was healthy.
    let up = http_get(
        &prom_addr,
        "/api/v1/query?query=up%7Bjob%3D%22kata-rs%22%7D",
    )
    .unwrap();
    let up: serde_json::Value = serde_json::from_str(&up).unwrap();
    assert_eq!(up["data"]["result"][0]["value"][1], "1", "{up}");
}

/// A shim's Task service that answers Stats like kata-rs's shim (cgroups v2 metrics packed
/// by `kata_rs_shim::metrics::pack`), with figures derived from the container id.
struct FakeShim;

impl containerd_shim_protos::Task for FakeShim {
    fn stats(
        &self,
        _ctx: &ttrpc::TtrpcContext,
        req: containerd_shim_protos::api::StatsRequest,
    ) -> ttrpc::Result<containerd_shim_protos::api::StatsResponse> {
        use containerd_shim_protos::cgroups_v2::metrics::*;
        let n = if req.id == "sb1" { 1 } else { 2 };
        let m = Metrics {
            pids: Some(PidsStat {
                current: n,
                ..Default::default()
            })
            .into(),
            cpu: Some(CPUStat {
                usage_usec: 1_500_000 * n,
                ..Default::default()
            })
            .into(),
            memory: Some(MemoryStat {
                usage: 1_048_576 * n,
                ..Default::default()
            })
            .into(),
            io: Some(IOStat {
                usage: vec![IOEntry {
                    rbytes: 4096 * n,
                    wbytes: 512 * n,
                    ..Default::default()
                }],
                ..Default::default()
            })
            .into(),
            network: vec![NetworkStat {
                name: "eth0".into(),
                rx_bytes: 100 * n,
                tx_bytes: 200 * n,
                ..Default::default()
            }],
            ..Default::default()
        };
        Ok(containerd_shim_protos::api::StatsResponse {
            stats: Some(kata_rs_shim::metrics::pack(&m).unwrap()).into(),
            ..Default::default()
        })
    }
}

/// The environment variable that makes `fake_shim_server` serve on the socket it names.
const FAKE_SHIM_ENV: &str = "KATA_RS_TEST_FAKE_SHIM_SOCKET";

/// Not a test: with [`FAKE_SHIM_ENV`] set, serves [`FakeShim`] on that socket until killed
/// (the guest-figures test starts it as a process of its own, with `--ignored`).
#[test]
#[ignore = "a helper process of guest_figures_from_each_containers_shim"]
fn fake_shim_server() {
    let Some(sock) = std::env::var_os(FAKE_SHIM_ENV) else {
        return;
    };
    let address = format!("unix://{}", Path::new(&sock).display());
    let mut server = ttrpc::Server::new()
        .bind(&address)
        .unwrap()
        .register_service(containerd_shim_protos::create_task(std::sync::Arc::new(
            FakeShim,
        )));
    server.start().unwrap();
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// A containerd bundle `<tasks>/k8s.io/<id>` with these annotations and shim address.
fn bundle(tasks: &Path, id: &str, annotations: &str, address: &str) {
    let b = tasks.join("k8s.io").join(id);
    fs::create_dir_all(&b).unwrap();
    fs::write(
        b.join("config.json"),
        format!(r#"{{"ociVersion":"1.0.2","annotations":{{{annotations}}}}}"#),
    )
    .unwrap();
    fs::write(b.join("address"), address).unwrap();
}

/// Guest-side figures: the pod's containers, found in containerd's task directory by their
/// annotations, answer Task.Stats through their (fake) shim; a runc task is not asked.
#[test]
fn guest_figures_from_each_containers_shim() {
    let sb = sandbox();
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("shim.sock");
    let address = format!("unix://{}", sock.display());
    // The fake shim runs in a process of its own (this test binary, running only
    // `fake_shim_server`), as a real shim does: a ttrpc server in this process is not
    // answered when the client is this process's child (seen with ttrpc 0.10's sync server).
    let mut shim = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "fake_shim_server", "--ignored", "--nocapture"])
        .env(FAKE_SHIM_ENV, &sock)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while !sock.exists() {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "the fake shim never listened"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let tasks = dir.path().join("tasks");
    bundle(
        &tasks,
        "sb1",
        r#""io.kubernetes.cri.container-type":"sandbox","io.kubernetes.cri.sandbox-id":"sb1""#,
        &address,
    );
    bundle(
        &tasks,
        "c1",
        r#""io.kubernetes.cri.container-type":"container","io.kubernetes.cri.sandbox-id":"sb1""#,
        &address,
    );
    // A runc container: no kata-rs sandbox; its "shim" does not exist and must not be asked.
    bundle(&tasks, "r1", "", "unix:///nonexistent/shim.sock");
    let o = Command::new(BIN)
        .args(["metrics", "--once", "--state-dir"])
        .arg(&sb.state)
        .arg("--cgroup-root")
        .arg(&sb.cgroup_root)
        .arg("--containerd-tasks")
        .arg(&tasks)
        .output()
        .unwrap();
    let _ = shim.kill();
    let _ = shim.wait();
    let out = String::from_utf8(o.stdout).unwrap();
    let err = String::from_utf8(o.stderr).unwrap();
    assert!(o.status.success(), "{err}");
    assert_eq!(err, "");
    for (c, n) in [("sb1", 1.0), ("c1", 2.0)] {
        let l = format!("{{sandbox_id=\"sb1\",container_id=\"{c}\"}} ");
        assert_eq!(
            value(&out, &format!("kata_rs_guest_cpu_seconds_total{l}")),
            1.5 * n
        );
        assert_eq!(
            value(&out, &format!("kata_rs_guest_memory_bytes{l}")),
            1_048_576.0 * n
        );
        assert_eq!(value(&out, &format!("kata_rs_guest_pids{l}")), n);
        assert_eq!(
            value(&out, &format!("kata_rs_guest_storage_read_bytes_total{l}")),
            4096.0 * n
        );
        assert_eq!(
            value(
                &out,
                &format!("kata_rs_guest_storage_written_bytes_total{l}")
            ),
            512.0 * n
        );
        let l = format!("{{sandbox_id=\"sb1\",container_id=\"{c}\",interface=\"eth0\"}} ");
        assert_eq!(
            value(
                &out,
                &format!("kata_rs_guest_network_receive_bytes_total{l}")
            ),
            100.0 * n
        );
        assert_eq!(
            value(
                &out,
                &format!("kata_rs_guest_network_transmit_bytes_total{l}")
            ),
            200.0 * n
        );
    }
    assert!(!out.contains("r1"), "{out}");
    // A shim that is gone is a scrape error naming the container, not a failure.
    let o = Command::new(BIN)
        .args(["metrics", "--once", "--state-dir"])
        .arg(&sb.state)
        .arg("--cgroup-root")
        .arg(&sb.cgroup_root)
        .arg("--containerd-tasks")
        .arg(&tasks)
        .output()
        .unwrap();
    let out = String::from_utf8(o.stdout).unwrap();
    let err = String::from_utf8(o.stderr).unwrap();
    assert!(o.status.success(), "{err}");
    assert_eq!(value(&out, "kata_rs_metrics_scrape_errors "), 2.0, "{err}");
    assert!(
        err.contains("sandbox sb1: container c1: connect unix://"),
        "{err}"
    );
}

/// `kata-rs overhead` on the fake sandbox: a RuntimeClass whose memory is at least the PSS
/// of its three processes plus the margin, with the figures in its comments.
#[test]
fn overhead_measured_on_a_running_sandbox() {
    let sb = sandbox();
    let (out, _) = once(&sb);
    let pss: f64 = ["vmm", "virtiofsd", "shim"]
        .iter()
        .map(|p| {
            value(
                &out,
                &format!(
                    "kata_rs_process_proportional_memory_bytes{{sandbox_id=\"sb1\",process=\"{p}\"}} "
                ),
            )
        })
        .sum();
    let o = Command::new(BIN)
        .args([
            "overhead",
            "--secs",
            "1",
            "--margin-percent",
            "50",
            "--state-dir",
        ])
        .arg(&sb.state)
        .output()
        .unwrap();
    assert!(o.status.success(), "{o:?}");
    let y = String::from_utf8(o.stdout).unwrap();
    assert!(y.contains("sandbox sb1, idle, sampled 1 s."), "{y}");
    assert!(y.contains("margin: 50 %"), "{y}");
    let mem: f64 = y
        .lines()
        .find_map(|l| l.trim().strip_prefix("memory: \""))
        .and_then(|v| v.strip_suffix("Mi\""))
        .unwrap()
        .parse()
        .unwrap();
    // The PSS of the three moves a little between the two reads: within 10 %.
    let want = pss * 1.5 / 1048576.0;
    assert!(
        mem >= want * 0.9 && mem <= want * 1.1 + 1.0,
        "{mem} MiB vs {want}\n{y}"
    );
    assert!(y.contains("    cpu: \""), "{y}");
    // No sandbox: a clear refusal.
    let empty = tempfile::tempdir().unwrap();
    let o = Command::new(BIN)
        .args(["overhead", "--secs", "1", "--state-dir"])
        .arg(empty.path())
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("no sandbox under"),
        "{o:?}"
    );
}
