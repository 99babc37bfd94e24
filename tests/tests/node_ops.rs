//! Node operations on a real sandbox (tests/scripts/node-ops.sh, one node boot): `kata-rs
//! metrics` reads a running kata container's host figures (VMM, virtiofsd, shim by PSS; its
//! host cgroup) and, through the shim's Task.Stats, its guest figures, and Debian's
//! `promtool check metrics` accepts the output without a lint; `kata-rs overhead` turns the
//! idle sandbox into a RuntimeClass no smaller than the processes' PSS; the installer image
//! (deploy/kata-deploy/build-image.sh) is imported by containerd, and its entry point, run in
//! a runc container, installs into a scratch root with containerd's config and uninstalls,
//! leaving the config as it was.
use std::process::Command;

use kata_rs_tests::{build_release, node_run_with_extra, repo_root, require_kata_artifacts};

#[test]
fn metrics_overhead_and_installer_image_on_the_node() {
    require_kata_artifacts();
    let promtool = "/usr/bin/promtool";
    assert!(
        std::path::Path::new(promtool).is_file(),
        "promtool missing (Debian's prometheus package; make deps installs it)"
    );
    let [tool]: [std::path::PathBuf; 1] = build_release("kata-rs-tool", None, &["kata-rs"])
        .try_into()
        .unwrap();
    let root = repo_root();
    let image = root.join("target/tests/kata-rs-deploy.tar");
    std::fs::create_dir_all(image.parent().unwrap()).unwrap();
    let o = Command::new("bash")
        .arg(root.join("deploy/kata-deploy/build-image.sh"))
        .arg("--out")
        .arg(root.join("target/tests/kata-rs-deploy"))
        .arg("--archive")
        .arg(&image)
        .args(["--name", "kata-rs-deploy:node-test"])
        .current_dir(&root)
        .output()
        .unwrap();
    assert!(o.status.success(), "build-image.sh: {o:?}");
    let (t, i) = (tool.to_str().unwrap(), image.to_str().unwrap());
    let run = node_run_with_extra("node-ops.sh", &[t, promtool, i], &[t, promtool, i]);
    run.assert_success();
    let m = |k: &str| run.expect_marker(k).to_string();
    let num = |k: &str| -> f64 {
        m(k).parse()
            .unwrap_or_else(|_| panic!("{k} is not a number:\n{}", run.stdout))
    };
    const MIB: f64 = 1048576.0;

    // metrics: one sandbox, its three host processes, its cgroup, its container in the VM.
    assert_eq!(m("status"), "RUNNING", "{}", run.stdout);
    assert_eq!(m("metrics-rc"), "0", "{}", run.stdout);
    assert_eq!(num("sandboxes"), 1.0);
    let (vmm, fsd, shim) = (num("pss-vmm"), num("pss-virtiofsd"), num("pss-shim"));
    // The VMM holds the guest RAM the guest touched (kernel, agent, the container): more
    // than its own ~10 MiB, less than the VM's size (the node's VM has at most 2 GiB).
    assert!(vmm > 16.0 * MIB && vmm < 2048.0 * MIB, "VMM PSS {vmm}");
    assert!(fsd > 0.0 && fsd < 64.0 * MIB, "virtiofsd PSS {fsd}");
    assert!(shim > 1.0 * MIB && shim < 128.0 * MIB, "shim PSS {shim}");
    // The host cgroup charges the VMM's guest RAM once: at least most of the VMM's PSS.
    assert!(num("cgroup-memory") >= vmm * 0.5, "{}", run.stdout);
    assert!(num("guest-pids") >= 1.0, "{}", run.stdout);
    assert!(num("guest-cpu") > 0.0, "{}", run.stdout);
    assert_eq!(num("scrape-errors"), 0.0, "{}", run.stdout);
    assert_eq!(m("promtool-rc"), "0", "{}", run.stdout);
    assert_eq!(
        m("promtool-lines"),
        "0",
        "promtool found problems:\n{}",
        run.stdout
    );

    // overhead: no smaller than the PSS it measured (plus the 25 % margin).
    assert_eq!(m("overhead-rc"), "0", "{}", run.stdout);
    let mem: f64 = m("overhead-memory")
        .strip_suffix("Mi")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("overhead memory:\n{}", run.stdout));
    assert!(
        mem * MIB >= (vmm + fsd + shim) * 1.25 * 0.9,
        "overhead {mem} MiB for PSS {} MiB",
        (vmm + fsd + shim) / MIB
    );
    assert!(m("overhead-cpu").ends_with('m'), "{}", run.stdout);

    // The installer image: imported, its entry point installs and uninstalls in a container.
    assert_eq!(m("import-rc"), "0", "{}", run.stdout);
    assert_eq!(m("image"), "docker.io/library/kata-rs-deploy:node-test");
    assert_eq!(m("install-rc"), "0", "{}", run.stdout);
    assert_eq!(
        m("installed"),
        "containerd-shim-kata-v2,kata-rs,kata-vmm,",
        "{}",
        run.stdout
    );
    assert_eq!(m("handler"), "1", "{}", run.stdout);
    assert_eq!(m("uninstall-rc"), "0", "{}", run.stdout);
    assert_eq!(m("config-restored"), "yes", "{}", run.stdout);
    assert_eq!(m("left"), "0", "uninstall left files:\n{}", run.stdout);
}

/// A fresh node (tests/scripts/fresh-install.sh, one node boot): only the built artifacts and
/// `kata-rs install` make a node with a stock containerd configuration run kata, as a
/// container through ctr and as a pod through CRI; `kata-rs check` fails before and passes
/// after; a second install changes nothing; `kata-rs uninstall` restores containerd's
/// configuration byte for byte and removes every installed file.
#[test]
fn a_fresh_node_runs_kata_after_kata_rs_install() {
    require_kata_artifacts();
    let [tool]: [std::path::PathBuf; 1] = build_release("kata-rs-tool", None, &["kata-rs"])
        .try_into()
        .unwrap();
    let cri = kata_rs_tests::build_cri_tools().client;
    let (t, c) = (tool.to_str().unwrap(), cri.to_str().unwrap());
    let run = node_run_with_extra("fresh-install.sh", &[t, c], &[t, c]);
    run.assert_success();
    let mut k = kata_rs_tests::Checks::new(&run);
    k.check(
        k.m("check-before-rc") != "0",
        "kata-rs check must fail on a node without kata-rs",
    );
    k.eq("install-rc", "0", "kata-rs install");
    k.eq("install-again-rc", "0", "a second kata-rs install");
    k.eq(
        "install-again-nothing",
        "1",
        "a second install changes nothing",
    );
    k.eq(
        "merged-handler",
        "1",
        "the kata handler in containerd's config",
    );
    k.eq("check-after-rc", "0", "kata-rs check after install");
    k.eq(
        "containerd-up",
        "yes",
        "containerd on the merged configuration",
    );
    k.eq(
        "kata-run-rc",
        "0",
        "ctr run --runtime io.containerd.kata.v2",
    );
    let out = run.prefixed("kata-run").join("\n");
    k.check(
        out.contains("hello-from-a-fresh-node") && out.contains("kata-rs"),
        format!("the container ran in a kata-rs guest kernel:\n{out}"),
    );
    k.eq("kata-pod-rc", "0", "a kata pod through CRI (handler kata)");
    k.eq("uninstall-rc", "0", "kata-rs uninstall");
    k.eq(
        "config-restored",
        "yes",
        "containerd's configuration byte for byte",
    );
    k.eq("files-left", "0", "installed files after uninstall");
    k.eq("leftovers-rc", "0", "kata-rs leftovers on the node");
    k.finish("a_fresh_node_runs_kata_after_kata_rs_install");
}
