//! The kata-rs-deploy DaemonSet's pieces without a cluster: its entry point
//! (deploy/kata-deploy/entrypoint.sh) against a scratch root that looks like a node, with a
//! fake API server for the node label; and its image (deploy/kata-deploy/build-image.sh):
//! reproducible, a valid OCI layout, and self-contained (the entry point runs in a chroot of
//! the image's layer, as root).

use std::{
    collections::BTreeMap,
    fs,
    io::{BufRead, BufReader, Read, Write},
    net::TcpListener,
    os::unix::fs::{MetadataExt, PermissionsExt},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{mpsc, Arc, Mutex},
    time::{Duration, Instant},
};

use sha2::{Digest, Sha256};

const BIN: &str = env!("CARGO_BIN_EXE_kata-rs");

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn entrypoint() -> PathBuf {
    repo().join("deploy/kata-deploy/entrypoint.sh")
}

fn write(p: &Path, data: &[u8], mode: u32) {
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, data).unwrap();
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
}

fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Every path under `root` with its kind, mode, owner and content hash.
fn snapshot(root: &Path) -> BTreeMap<String, String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
        for e in fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            let m = fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            if m.is_dir() {
                out.insert(rel, format!("dir {:o}", m.mode() & 0o7777));
                walk(root, &p, out);
            } else {
                let h = sha256_hex(&fs::read(&p).unwrap());
                let kind = format!("file {:o} {}:{} {h}", m.mode() & 0o7777, m.uid(), m.gid());
                out.insert(rel, kind);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// A node root: containerd's version 2 config and a file of the operator's.
fn node_root(root: &Path) {
    write(
        &root.join("etc/containerd/config.toml"),
        b"# the operator's\nversion = 2\n\n[plugins.\"io.containerd.grpc.v1.cri\".containerd]\n  default_runtime_name = \"runc\"\n",
        0o644,
    );
    write(
        &root.join("usr/local/bin/other-tool"),
        b"#!/bin/sh\n",
        0o755,
    );
}

/// Build outputs as the image holds them (a flat directory), with `kata_rs` as the tool.
fn flat_build(dir: &Path, kata_rs: &Path) {
    let script = |out: &str| format!("#!/bin/sh\necho '{out}'\n").into_bytes();
    write(&dir.join("kata-vmm"), &script("kata-vmm 0.1.0"), 0o755);
    write(
        &dir.join("containerd-shim-kata-v2"),
        &script("containerd-shim-kata-v2 0.1.0 (io.containerd.kata.v2)"),
        0o755,
    );
    write(&dir.join("virtiofsd"), &script("virtiofsd 1.14.0"), 0o755);
    let mut k = vec![0x7f, b'E', b'L', b'F'];
    k.extend_from_slice(&[0; 64]);
    k.extend_from_slice(b"Linux version 6.1.192-kata-rs (builder@x) #1 SMP\0");
    write(&dir.join("vmlinux"), &k, 0o644);
    write(&dir.join("initrd.img"), b"070701fakecpio", 0o644);
    fs::copy(kata_rs, dir.join("kata-rs")).unwrap();
}

/// A stripped copy of the built tool at `to` (the debug build is ~170 MB; install copies
/// and hashes it), or a plain copy without `strip`.
fn small_tool(to: &Path) -> PathBuf {
    let stripped = Command::new("strip")
        .arg("-o")
        .arg(to)
        .arg(BIN)
        .output()
        .is_ok_and(|o| o.status.success());
    if !stripped {
        fs::copy(BIN, to).unwrap();
    }
    to.to_path_buf()
}

/// One request the fake API server got.
#[derive(Debug, Clone)]
struct Request {
    line: String,
    headers: Vec<String>,
    body: String,
}

/// A plain-HTTP stand-in for the API server: answers every request 200 `{}` and keeps it.
fn fake_api() -> (String, Arc<Mutex<Vec<Request>>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    let got = Arc::new(Mutex::new(Vec::new()));
    let g = got.clone();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
            let mut headers = Vec::new();
            let mut len = 0;
            loop {
                let mut h = String::new();
                r.read_line(&mut h).unwrap();
                let h = h.trim_end().to_string();
                if h.is_empty() {
                    break;
                }
                if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap();
                }
                headers.push(h);
            }
            let mut body = vec![0; len];
            r.read_exact(&mut body).unwrap();
            g.lock().unwrap().push(Request {
                line: line.trim_end().to_string(),
                headers,
                body: String::from_utf8(body).unwrap(),
            });
            let _ =
                s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}");
        }
    });
    (url, got)
}

/// `run`: installs, labels the node with a configured label, waits; on SIGTERM removes
/// the label and uninstalls, leaving the node root as it was, byte for byte.
#[test]
fn entry_point_installs_labels_and_uninstalls_on_sigterm() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("host");
    node_root(&root);
    let before = snapshot(&root);
    let from = tmp.path().join("opt");
    flat_build(&from, &small_tool(&tmp.path().join("kata-rs")));
    let sa = tmp.path().join("sa");
    write(&sa.join("token"), b"t0ken-secret", 0o600);
    let (api, got) = fake_api();
    let mut child = Command::new("sh")
        .arg(entrypoint())
        .arg("run")
        .env("KATA_RS_ROOT", &root)
        .env("KATA_RS_FROM", &from)
        .env("KATA_RS_NODE_LABEL", "example.com/kata-rs")
        .env("NODE_NAME", "node-1")
        .env("KATA_RS_RESTART", "false")
        .env("KATA_RS_API", &api)
        .env("KATA_RS_SA_DIR", &sa)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // stderr, line by line, to a channel (and kept for messages).
    let (tx, rx) = mpsc::channel::<String>();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for l in BufReader::new(stderr).lines() {
            let Ok(l) = l else { break };
            let _ = tx.send(l);
        }
    });
    let mut log = Vec::new();
    let t0 = Instant::now();
    while !log
        .iter()
        .any(|l: &String| l.contains("installed; uninstalls on SIGTERM"))
    {
        match rx.recv_timeout(Duration::from_secs(1)) {
            Ok(l) => log.push(l),
            Err(_) => {
                assert!(
                    child.try_wait().unwrap().is_none(),
                    "entry point exited: {log:#?}"
                );
            }
        }
        assert!(t0.elapsed() < Duration::from_secs(60), "{log:#?}");
    }
    // Installed: the shim, the handler in containerd's config, the manifest.
    assert!(root.join("usr/local/bin/containerd-shim-kata-v2").is_file());
    assert!(root.join("usr/local/bin/kata-rs").is_file());
    let cfg = fs::read_to_string(root.join("etc/containerd/config.toml")).unwrap();
    assert!(
        cfg.contains("runtimes.kata]") && cfg.contains("# the operator's"),
        "{cfg}"
    );
    assert!(root.join("var/lib/kata-rs/install/manifest.json").is_file());
    assert!(log
        .iter()
        .any(|l| l.contains("node node-1 labelled example.com/kata-rs=true")));
    {
        let reqs = got.lock().unwrap();
        assert_eq!(reqs.len(), 1, "{reqs:#?}");
        let r = &reqs[0];
        assert_eq!(r.line, "PATCH /api/v1/nodes/node-1 HTTP/1.1");
        assert!(
            r.headers
                .iter()
                .any(|h| h == "Authorization: Bearer t0ken-secret"),
            "{r:?}"
        );
        assert!(r
            .headers
            .iter()
            .any(|h| h == "Content-Type: application/merge-patch+json"));
        assert_eq!(
            r.body,
            r#"{"metadata":{"labels":{"example.com/kata-rs":"true"}}}"#
        );
    }
    // SAFETY: kill(2) of the child this test started.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let status = child.wait().unwrap();
    // The reader may still hold the last lines: read until its end (EOF), bounded.
    let t1 = Instant::now();
    loop {
        match rx.recv_timeout(Duration::from_secs(1)) {
            Ok(l) => log.push(l),
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                assert!(t1.elapsed() < Duration::from_secs(30), "{log:#?}");
            }
        }
    }
    assert!(status.success(), "{status}: {log:#?}");
    assert!(
        log.iter()
            .any(|l| l.contains("kata-rs-deploy: uninstalled")),
        "{log:#?}"
    );
    let reqs = got.lock().unwrap();
    assert_eq!(reqs.len(), 2, "{reqs:#?}");
    assert_eq!(
        reqs[1].body,
        r#"{"metadata":{"labels":{"example.com/kata-rs":null}}}"#
    );
    assert_eq!(snapshot(&root), before, "the node root is not as before");
    // The token never reached a command line or the log.
    assert!(!log.iter().any(|l| l.contains("t0ken")), "{log:#?}");
}

/// A failing step fails the entry point (the pod restarts and shows why), and a bad
/// setting is refused before anything is written.
#[test]
fn entry_point_failures_are_loud() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("host");
    node_root(&root);
    let before = snapshot(&root);
    let from = tmp.path().join("opt");
    flat_build(&from, &small_tool(&tmp.path().join("kata-rs")));
    let run = |env: &[(&str, &str)]| {
        let mut c = Command::new("sh");
        c.arg(entrypoint())
            .arg("install")
            .env("KATA_RS_ROOT", &root)
            .env("KATA_RS_FROM", &from)
            .env("KATA_RS_RESTART", "false");
        for (k, v) in env {
            c.env(k, v);
        }
        c.output().unwrap()
    };
    let o = run(&[("KATA_RS_CRIO", "maybe"), ("KATA_RS_NODE_LABEL", "")]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("KATA_RS_CRIO must be true, false or auto"));
    assert_eq!(snapshot(&root), before);
    // No NODE_NAME with a label to set: installed, but the entry point fails.
    let o = run(&[("NODE_NAME", "")]);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("NODE_NAME is not set"),
        "{o:?}"
    );
    // CRI-O's config directory makes `auto` write the drop-in.
    fs::create_dir_all(root.join("etc/crio")).unwrap();
    let o = run(&[("KATA_RS_NODE_LABEL", "")]);
    assert!(o.status.success(), "{o:?}");
    assert!(root.join("etc/crio/crio.conf.d/50-kata-rs.conf").is_file());
}

/// The digest a descriptor names, checked against its blob (digest and size); the blob's
/// bytes.
fn blob(layout: &Path, desc: &serde_json::Value) -> Vec<u8> {
    let digest = desc["digest"].as_str().unwrap();
    let hex = digest.strip_prefix("sha256:").unwrap();
    let data = fs::read(layout.join("blobs/sha256").join(hex)).unwrap();
    assert_eq!(sha256_hex(&data), hex, "blob {digest}");
    assert_eq!(
        desc["size"].as_u64().unwrap(),
        data.len() as u64,
        "{digest}"
    );
    data
}

/// build-image.sh twice gives the same bytes; the layout's index, manifest, config and
/// layer agree; as root, the entry point runs inside the image's file system (its busybox,
/// its libraries, its kata-rs) against a node root mounted at /host, and uninstall leaves
/// that root as it was.
#[test]
fn image_is_reproducible_and_self_contained() {
    for tool in ["busybox", "curl", "tar", "gzip", "strip"] {
        if Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .map(|o| !o.status.success())
            .unwrap_or(true)
        {
            panic!("{tool} missing: make deps installs it");
        }
    }
    let tmp = tempfile::tempdir().unwrap();
    let release = tmp.path().join("release");
    fs::create_dir_all(&release).unwrap();
    flat_build(&release, &small_tool(&tmp.path().join("kata-rs")));
    let build = |n: &str| {
        let out = tmp.path().join(n);
        let o = Command::new("bash")
            .arg(repo().join("deploy/kata-deploy/build-image.sh"))
            .args(["--release", release.to_str().unwrap()])
            .args(["--guest", release.to_str().unwrap()])
            .args(["--out", out.to_str().unwrap()])
            .args([
                "--archive",
                tmp.path().join(format!("{n}.tar")).to_str().unwrap(),
            ])
            .args(["--name", "example.com/ops/kata-rs-deploy:v1"])
            .env("SOURCE_DATE_EPOCH", "1764806400")
            .output()
            .unwrap();
        assert!(o.status.success(), "{o:?}");
        (out, String::from_utf8(o.stdout).unwrap().trim().to_string())
    };
    let (a, digest_a) = build("a");
    let (_, digest_b) = build("b");
    assert_eq!(digest_a, digest_b);
    assert!(
        digest_a.starts_with("sha256:") && digest_a.len() == 71,
        "{digest_a}"
    );
    assert_eq!(
        fs::read(tmp.path().join("a.tar")).unwrap(),
        fs::read(tmp.path().join("b.tar")).unwrap(),
        "the archives differ"
    );
    // The layout.
    assert_eq!(
        fs::read_to_string(a.join("oci-layout")).unwrap(),
        r#"{"imageLayoutVersion":"1.0.0"}"#
    );
    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(a.join("index.json")).unwrap()).unwrap();
    let m = &index["manifests"][0];
    assert_eq!(m["digest"], digest_a.as_str());
    assert_eq!(
        m["annotations"]["io.containerd.image.name"],
        "example.com/ops/kata-rs-deploy:v1"
    );
    assert_eq!(m["annotations"]["org.opencontainers.image.ref.name"], "v1");
    let manifest: serde_json::Value = serde_json::from_slice(&blob(&a, m)).unwrap();
    assert_eq!(
        manifest["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    let config: serde_json::Value = serde_json::from_slice(&blob(&a, &manifest["config"])).unwrap();
    assert_eq!(config["created"], "2025-12-04T00:00:00Z");
    assert_eq!(config["config"]["Entrypoint"][0], "/entrypoint.sh");
    let layer_gz = blob(&a, &manifest["layers"][0]);
    let rootfs = tmp.path().join("rootfs");
    fs::create_dir_all(&rootfs).unwrap();
    let mut tar = Command::new("tar")
        .arg("-xz")
        .arg("-C")
        .arg(&rootfs)
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    tar.stdin.take().unwrap().write_all(&layer_gz).unwrap();
    assert!(tar.wait().unwrap().success());
    // The uncompressed layer is the config's diff_id.
    let mut gz = Command::new("sh")
        .arg("-c")
        .arg("gzip -dc | sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    gz.stdin.take().unwrap().write_all(&layer_gz).unwrap();
    let out = gz.wait_with_output().unwrap();
    let diff = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        config["rootfs"]["diff_ids"][0].as_str().unwrap(),
        format!("sha256:{}", diff.split_whitespace().next().unwrap())
    );
    for p in [
        "entrypoint.sh",
        "bin/sh",
        "bin/busybox",
        "usr/bin/curl",
        "opt/kata-rs/bin/kata-rs",
        "opt/kata-rs/bin/initrd.img",
        "lib64/ld-linux-x86-64.so.2",
    ] {
        assert!(
            fs::symlink_metadata(rootfs.join(p)).is_ok(),
            "{p} missing in the image"
        );
    }
    // SAFETY: geteuid(2) has no arguments and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    assert!(
        root,
        "the entry point runs chrooted into the image: run the tests as root (make test does)"
    );
    let host = rootfs.join("host");
    node_root(&host);
    let before = snapshot(&host);
    let chroot = |cmd: &str| {
        let chroot_bin = if Path::new("/usr/sbin/chroot").exists() {
            "/usr/sbin/chroot"
        } else {
            "chroot"
        };
        Command::new(chroot_bin)
            .arg(&rootfs)
            .args(["/entrypoint.sh", cmd])
            .env_clear()
            .env("PATH", "/bin:/usr/bin")
            .env("NODE_NAME", "node-1")
            .env("KATA_RS_NODE_LABEL", "")
            .env("KATA_RS_RESTART", "false")
            .output()
            .unwrap()
    };
    let o = chroot("install");
    assert!(o.status.success(), "{o:?}");
    assert!(host.join("usr/local/bin/kata-vmm").is_file());
    assert!(host.join("usr/local/share/kata-rs/vmlinux").is_file());
    let o = chroot("uninstall");
    assert!(o.status.success(), "{o:?}");
    assert_eq!(snapshot(&host), before, "the node root is not as before");
}
