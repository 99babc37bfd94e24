//! The output as its consumers take it: `promtool check metrics`, the HTTP answer of
//! `--listen`, and a real Prometheus server scraping it.

use std::{
    fs,
    io::{Read, Write},
    net::TcpStream,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use crate::sandbox::{once, sandbox, value, BIN};

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
