//! The built `kata-rs` against scratch roots: install, idempotence, uninstall byte for
//! byte, refusals that change nothing, and `check`/`env` on this machine.

use std::{
    collections::BTreeMap,
    fs,
    os::unix::fs::{MetadataExt, PermissionsExt},
    path::{Path, PathBuf},
    process::{Command, Output},
};

use sha2::{Digest, Sha256};

const BIN: &str = env!("CARGO_BIN_EXE_kata-rs");

const V2_CONFIG: &str = r#"# containerd 1.x config, kept by the operator
version = 2
root = "/var/lib/containerd"   # default

[plugins]
  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = "registry.k8s.io/pause:3.9"
    [plugins."io.containerd.grpc.v1.cri".containerd]
      default_runtime_name = "runc"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"
        # systemd cgroups
        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
          SystemdCgroup = true
"#;

const V3_WITH_KATA: &str = r#"version = 3

# containerd 2.x; an older kata stanza the operator wrote by hand
[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.kata]
  runtime_type = 'io.containerd.kata.v2'
  privileged_without_host_devices = true   # keep me
"#;

fn run(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().expect("run kata-rs")
}

fn text(o: &Output) -> String {
    format!(
        "status {}\n--- stdout\n{}--- stderr\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn write(p: &Path, data: &[u8], mode: u32) {
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, data).unwrap();
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
}

/// Build outputs laid out like target/release + target/guest, with scripts that answer
/// --version like the real binaries.
fn fake_build(dir: &Path) -> PathBuf {
    let rel = dir.join("release");
    let script = |out: &str| format!("#!/bin/sh\necho '{out}'\n").into_bytes();
    write(&rel.join("kata-vmm"), &script("kata-vmm 0.1.0"), 0o755);
    write(
        &rel.join("containerd-shim-kata-v2"),
        &script("containerd-shim-kata-v2 0.1.0 (io.containerd.kata.v2)"),
        0o755,
    );
    write(&rel.join("virtiofsd"), &script("virtiofsd 1.14.0"), 0o755);
    write(&rel.join("kata-rs"), &script("kata-rs 0.1.0"), 0o755);
    let mut k = vec![0x7f, b'E', b'L', b'F'];
    k.extend_from_slice(&[0; 64]);
    k.extend_from_slice(b"Linux version 6.1.192-kata-rs (builder@x) #1 SMP\0");
    write(&dir.join("guest/vmlinux"), &k, 0o644);
    write(&dir.join("guest/initrd.img"), b"070701fakecpio", 0o644);
    rel
}

/// Every path under `root` with its kind, mode and content hash.
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
                let h: String = Sha256::digest(fs::read(&p).unwrap())
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect();
                out.insert(
                    rel,
                    format!("file {:o} {}:{} {h}", m.mode() & 0o7777, m.uid(), m.gid()),
                );
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

struct Node {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    from: PathBuf,
}

fn node(containerd_config: Option<&str>) -> Node {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    fs::create_dir_all(root.join("usr/local/bin")).unwrap();
    fs::create_dir_all(root.join("etc")).unwrap();
    write(
        &root.join("usr/local/bin/other-tool"),
        b"#!/bin/sh\n",
        0o755,
    );
    if let Some(c) = containerd_config {
        write(
            &root.join("etc/containerd/config.toml"),
            c.as_bytes(),
            0o644,
        );
    }
    let from = fake_build(&tmp.path().join("build"));
    Node {
        _tmp: tmp,
        root,
        from,
    }
}

impl Node {
    fn r(&self) -> &str {
        self.root.to_str().unwrap()
    }
    fn install(&self, extra: &[&str]) -> Output {
        let mut a = vec![
            "install",
            "--root",
            self.r(),
            "--from",
            self.from.to_str().unwrap(),
        ];
        a.extend_from_slice(extra);
        run(&a)
    }
    fn uninstall(&self) -> Output {
        run(&["uninstall", "--root", self.r()])
    }
    fn read(&self, p: &str) -> String {
        fs::read_to_string(self.root.join(p)).unwrap()
    }
}

fn assert_ok(o: &Output) {
    assert!(o.status.success(), "{}", text(o));
}

fn assert_refused(o: &Output, want: &str) {
    assert_eq!(o.status.code(), Some(1), "{}", text(o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(want),
        "expected {want:?} in stderr:\n{}",
        text(o)
    );
}

/// The full cycle on one node: install, again (nothing changes), uninstall (all back).
fn cycle(n: &Node, extra: &[&str]) -> BTreeMap<String, String> {
    let before = snapshot(&n.root);
    let o = n.install(extra);
    assert_ok(&o);
    let installed = snapshot(&n.root);
    assert_ne!(before, installed);
    let o2 = n.install(extra);
    assert_ok(&o2);
    assert!(
        String::from_utf8_lossy(&o2.stdout).contains("nothing to change"),
        "{}",
        text(&o2)
    );
    assert_eq!(
        installed,
        snapshot(&n.root),
        "second install changed the tree"
    );
    let after_install = installed.clone();
    let u = n.uninstall();
    assert_ok(&u);
    assert_eq!(
        before,
        snapshot(&n.root),
        "uninstall did not restore the tree\n{}",
        text(&u)
    );
    after_install
}

#[test]
fn v2_config_with_comments_merged_and_restored() {
    let n = node(Some(V2_CONFIG));
    let o = n.install(&[]);
    assert_ok(&o);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("kind: RuntimeClass"), "{out}");
    let merged = n.read("etc/containerd/config.toml");
    assert!(
        merged.starts_with(V2_CONFIG),
        "operator's text not kept:\n{merged}"
    );
    assert!(merged.contains("[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.kata]"));
    assert!(merged.contains("runtime_type = \"io.containerd.kata.v2\""));
    for p in [
        "usr/local/bin/kata-vmm",
        "usr/local/bin/containerd-shim-kata-v2",
        "usr/local/bin/kata-rs",
        "usr/local/libexec/kata-rs/virtiofsd",
        "usr/local/share/kata-rs/vmlinux",
        "usr/local/share/kata-rs/kata-rs-initrd.img",
        "etc/kata-rs/configuration.toml",
        "var/lib/kata-rs/install/manifest.json",
        "var/lib/kata-rs/install/backup/etc/containerd/config.toml",
    ] {
        assert!(n.root.join(p).is_file(), "{p} missing");
    }
    assert_eq!(
        n.read("var/lib/kata-rs/install/backup/etc/containerd/config.toml"),
        V2_CONFIG
    );
    // Undo this one by hand-free uninstall, then run the whole cycle.
    assert_ok(&n.uninstall());
    cycle(&n, &[]);
}

#[test]
fn v3_config_with_existing_kata_stanza() {
    let n = node(Some(V3_WITH_KATA));
    let installed = cycle(&n, &[]);
    assert!(installed.contains_key("etc/containerd/config.toml"));
    assert_ok(&n.install(&[]));
    let merged = n.read("etc/containerd/config.toml");
    assert!(merged.starts_with(V3_WITH_KATA.trim_end()), "{merged}");
    assert!(merged.contains("privileged_without_host_devices = true   # keep me"));
    assert!(!merged.contains("io.containerd.grpc.v1.cri"), "{merged}");
    assert_eq!(merged.matches("runtimes.kata]").count(), 1, "{merged}");
    let v: toml::Table = toml::from_str(&merged).unwrap();
    let kata = &v["plugins"]["io.containerd.cri.v1.runtime"]["containerd"]["runtimes"]["kata"];
    assert_eq!(
        kata["options"]["ConfigPath"].as_str(),
        Some("/etc/kata-rs/configuration.toml")
    );
    assert_eq!(
        kata["pod_annotations"][0].as_str(),
        Some("io.katacontainers.*")
    );
    assert_ok(&n.uninstall());
    assert_eq!(n.read("etc/containerd/config.toml"), V3_WITH_KATA);
}

#[test]
fn replaced_files_come_back_with_mode_and_crio_dropin_goes() {
    let n = node(Some(V2_CONFIG));
    write(&n.root.join("usr/local/bin/kata-vmm"), b"old vmm", 0o700);
    write(
        &n.root.join("etc/kata-rs/configuration.toml"),
        b"[hypervisor]\nvcpus = 2\n",
        0o640,
    );
    fs::create_dir_all(n.root.join("etc/crio")).unwrap();
    let installed = cycle(&n, &["--crio"]);
    assert!(installed.contains_key("etc/crio/crio.conf.d/50-kata-rs.conf"));
    // The operator's configuration is never replaced.
    assert!(installed["etc/kata-rs/configuration.toml"].starts_with("file 640"));
    assert_eq!(n.read("usr/local/bin/kata-vmm"), "old vmm");
    assert!(!n.root.join("etc/crio/crio.conf.d").exists());
    assert!(!n.root.join("var").exists());
}

#[test]
fn no_containerd_config_given_one_is_created_and_removed() {
    let n = node(None);
    let installed = cycle(&n, &["--containerd-config", "/etc/containerd/config.toml"]);
    assert!(installed.contains_key("etc/containerd/config.toml"));
    assert!(!n.root.join("etc/containerd").exists());
    // Without containerd and without the flag, containerd is left alone.
    let o = n.install(&[]);
    assert_ok(&o);
    assert!(String::from_utf8_lossy(&o.stdout).contains("containerd: not found"));
    assert!(!n.root.join("etc/containerd").exists());
}

#[test]
fn upgrade_then_uninstall_restores_the_original() {
    let n = node(Some(V2_CONFIG));
    let before = snapshot(&n.root);
    assert_ok(&n.install(&[]));
    // A new build: install again replaces the VMM; uninstall still restores the pre-install tree.
    write(
        &n.from.join("kata-vmm"),
        b"#!/bin/sh\necho 'kata-vmm 0.1.0'\n# v2\n",
        0o755,
    );
    let o = n.install(&[]);
    assert_ok(&o);
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("/usr/local/bin/kata-vmm"),
        "{}",
        text(&o)
    );
    assert_ok(&n.uninstall());
    assert_eq!(before, snapshot(&n.root));
}

#[test]
fn refusals_change_nothing() {
    // uninstall without a manifest
    let n = node(Some(V2_CONFIG));
    let s0 = snapshot(&n.root);
    assert_refused(&n.uninstall(), "no install manifest");
    assert_eq!(s0, snapshot(&n.root));

    // install without build outputs
    fs::remove_file(n.from.join("kata-vmm")).unwrap();
    assert_refused(&n.install(&[]), "build outputs not found");
    assert_eq!(s0, snapshot(&n.root));
    fake_build(n.from.parent().unwrap());

    // containerd config version 1, and one that is not TOML
    for (cfg, want) in [
        (
            "[plugins.cri]\n  sandbox_image = \"x\"\n",
            "config version 1",
        ),
        ("version = 2\n[plugins\n", "cannot merge the handler"),
        (
            "version = 2\nplugins = \"no\"\n",
            "`plugins` is not a table",
        ),
    ] {
        write(
            &n.root.join("etc/containerd/config.toml"),
            cfg.as_bytes(),
            0o644,
        );
        let s = snapshot(&n.root);
        assert_refused(&n.install(&[]), want);
        assert_eq!(s, snapshot(&n.root), "{cfg}");
    }

    // uninstall after the operator edited the merged config: refused, nothing changed
    write(
        &n.root.join("etc/containerd/config.toml"),
        V2_CONFIG.as_bytes(),
        0o644,
    );
    assert_ok(&n.install(&[]));
    let cfg = n.root.join("etc/containerd/config.toml");
    let mut t = fs::read_to_string(&cfg).unwrap();
    t.push_str("# operator's later edit\n");
    fs::write(&cfg, t).unwrap();
    let s1 = snapshot(&n.root);
    let o = n.uninstall();
    assert_refused(
        &o,
        "/etc/containerd/config.toml (containerd config) was changed since",
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("nothing was changed"));
    assert_eq!(s1, snapshot(&n.root));

    // ... and when a backup is gone
    let n = node(Some(V2_CONFIG));
    assert_ok(&n.install(&[]));
    fs::remove_file(
        n.root
            .join("var/lib/kata-rs/install/backup/etc/containerd/config.toml"),
    )
    .unwrap();
    let s2 = snapshot(&n.root);
    assert_refused(&n.uninstall(), "is missing");
    assert_eq!(s2, snapshot(&n.root));
}

#[test]
fn a_foreign_file_in_a_created_directory_is_kept() {
    let n = node(Some(V2_CONFIG));
    assert_ok(&n.install(&[]));
    write(&n.root.join("usr/local/share/kata-rs/mine"), b"x", 0o644);
    let o = n.uninstall();
    assert_ok(&o);
    assert!(String::from_utf8_lossy(&o.stdout).contains("kept      /usr/local/share/kata-rs"));
    assert!(n.root.join("usr/local/share/kata-rs/mine").exists());
    assert!(!n.root.join("usr/local/share/kata-rs/vmlinux").exists());
}

#[test]
fn check_on_this_machine() {
    let n = node(Some(V2_CONFIG));
    // Before install: files missing, a clear reason for each, exit status 1.
    let o = run(&["check", "--root", n.r()]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("FAIL vmm"), "{out}");
    assert!(out.contains("FAIL containerd"), "{out}");
    assert!(out.contains("no handler"), "{out}");

    assert_ok(&n.install(&[]));
    let o = run(&["check", "--root", n.r()]);
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    for name in [
        "shim",
        "vmm",
        "kernel",
        "initrd",
        "virtiofsd",
        "configuration",
        "versions",
        "containerd",
    ] {
        assert!(
            out.lines()
                .any(|l| l.starts_with("ok") && l.split_whitespace().nth(1) == Some(name)),
            "{name} not ok:\n{out}"
        );
    }
    if Path::new("/sys/module/kvm_pvm").exists() {
        assert_eq!(o.status.code(), Some(1), "{}", text(&o));
        let kvm = out.lines().find(|l| l.contains(" kvm ")).unwrap();
        assert!(kvm.starts_with("FAIL") && kvm.contains("kvm_pvm"), "{out}");
    }
    let j = run(&["check", "--json", "--root", n.r()]);
    let v: serde_json::Value = serde_json::from_slice(&j.stdout).expect("check --json");
    assert_eq!(v["ok"].as_bool(), Some(j.status.success()));
    assert!(v["checks"].as_array().unwrap().len() >= 10);

    // env: the versions of the fake build, the guest kernel's release, TOML and JSON.
    let e = run(&["env", "--root", n.r()]);
    assert_ok(&e);
    let t: toml::Table = toml::from_str(&String::from_utf8_lossy(&e.stdout)).unwrap();
    assert_eq!(t["versions"]["vmm"].as_str(), Some("kata-vmm 0.1.0"));
    assert_eq!(
        t["versions"]["guest_kernel"].as_str(),
        Some("6.1.192-kata-rs")
    );
    assert_eq!(
        t["config"]["effective"]["hypervisor"]["vcpus"].as_integer(),
        Some(1)
    );
    let e = run(&["env", "--json", "--root", n.r()]);
    let v: serde_json::Value = serde_json::from_slice(&e.stdout).unwrap();
    assert_eq!(v["versions"]["virtiofsd"], "virtiofsd 1.14.0");
}

/// containerd itself accepts the merged config (Debian's containerd 1.6 reads version 2;
/// `config dump` needs no daemon); containerd comes with `make deps`.
#[test]
fn containerd_accepts_the_merged_config() {
    let v = Command::new("containerd")
        .arg("--version")
        .output()
        .expect("containerd missing: make deps installs it");
    let ver = String::from_utf8_lossy(&v.stdout).into_owned();
    let n = node(Some(V2_CONFIG));
    assert_ok(&n.install(&[]));
    let cfg = n.root.join("etc/containerd/config.toml");
    let o = Command::new("containerd")
        .arg("--config")
        .arg(&cfg)
        .args(["config", "dump"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{ver}{}", text(&o));
    let dump = String::from_utf8_lossy(&o.stdout);
    assert!(
        dump.contains("[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.kata]"),
        "{dump}"
    );
    assert!(dump.contains("io.containerd.kata.v2"), "{dump}");
    assert!(
        dump.contains("ConfigPath = \"/etc/kata-rs/configuration.toml\""),
        "{dump}"
    );
}
