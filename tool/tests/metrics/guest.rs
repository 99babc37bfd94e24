//! Guest-side figures: a fake shim's Task service (its own process) found through containerd
//! bundles with CRI annotations.

use std::{
    fs,
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use crate::sandbox::{sandbox, value, BIN};

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
        .args([
            "--exact",
            "guest::fake_shim_server",
            "--ignored",
            "--nocapture",
        ])
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
