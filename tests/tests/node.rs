//! The harness itself, through the runc runtime only (needs none of kata-rs's parts): the node
//! comes up with a private containerd, the test image is imported, a container runs and its
//! exit code comes back, nothing is left behind.
use kata_rs_tests::node_run;

#[test]
fn runc_container_on_the_node() {
    let run = node_run("runc-smoke.sh", &[]);
    run.assert_success();
    let kind = run.node_kind();
    assert_eq!(run.expect_marker("kind"), kind);
    if std::path::Path::new("/sys/module/kvm_pvm").exists()
        && std::env::var_os("KATA_RS_NODE").is_none()
    {
        assert_eq!(
            kind, "emulated",
            "host KVM is kvm_pvm: the node must be the emulated one"
        );
    }
    assert_eq!(run.expect_marker("image"), "kata-rs.local/busybox:latest");
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert!(
        lines.contains(&"hello"),
        "no `hello` from the container:\n{}",
        run.stdout
    );
    assert!(
        lines.contains(&"root"),
        "container user is not root:\n{}",
        run.stdout
    );
    assert_eq!(
        run.expect_marker("runc-rc"),
        "3",
        "ctr must pass the container's exit code on"
    );
    assert!(
        !run.stdout.contains("-kata-rs"),
        "runc must run on the node's kernel"
    );
    assert_eq!(run.expect_marker("leftovers-rc"), "0");
}
