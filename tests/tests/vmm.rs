//! The VMM alone (no containerd, no shim).
use kata_rs_tests::{node_run, repo_root, require_kata_artifacts};

/// kata-vmm's contract with a test guest (no agent needed): a missing kernel is exit 1 with
/// one `kata-vmm: error:` line naming it; the guest kernel boots to /init; SIGTERM gives exit 0.
#[test]
fn vmm_boots_kernel_and_stops_on_sigterm() {
    for p in ["target/release/kata-vmm", "target/guest/vmlinux"] {
        assert!(
            repo_root().join(p).is_file(),
            "prerequisite missing: {p} (make binaries kernel)"
        );
    }
    let run = node_run("vmm-boot.sh", &[]);
    run.assert_success();

    assert_eq!(run.expect_marker("missing-kernel-rc"), "1");
    let err: Vec<&str> = run
        .prefixed("missing-kernel")
        .into_iter()
        .filter(|l| l.starts_with("kata-vmm: error: "))
        .collect();
    assert_eq!(
        err.len(),
        1,
        "want one `kata-vmm: error:` line: {:?}",
        run.prefixed("missing-kernel")
    );
    assert!(
        err[0].contains("/nonexistent/kata-rs/vmlinux-missing"),
        "the error must name the kernel path: {}",
        err[0]
    );

    assert_eq!(
        run.expect_marker("guest-init"),
        "yes",
        "the guest kernel did not reach /init (see the console lines)"
    );
    assert_eq!(
        run.expect_marker("sigterm-rc"),
        "0",
        "kata-vmm must exit 0 on SIGTERM"
    );
    assert_eq!(run.expect_marker("leftovers-rc"), "0");
    println!(
        "guest kernel to /init on a {} node: {} s",
        run.node_kind(),
        run.expect_marker("guest-init-seconds")
    );
}

/// The installed guest kernel + image boot, the agent says ready on the console, answers
/// `kata-agent-ctl check` over vsock, powers the guest off on `kata-agent-ctl shutdown`, and
/// kata-vmm then exits 0.

#[test]
fn vmm_boots_guest_and_agent_answers() {
    require_kata_artifacts();
    let run = node_run("vmm.sh", &["42"]);
    run.assert_success();
    assert_eq!(
        run.expect_marker("agent-ready"),
        "yes",
        "no `kata-rs-agent: ready` on the guest console"
    );
    assert_eq!(
        run.expect_marker("check-rc"),
        "0",
        "kata-agent-ctl check failed"
    );
    assert_eq!(
        run.expect_marker("shutdown-rc"),
        "0",
        "kata-agent-ctl shutdown failed"
    );
    assert_eq!(
        run.expect_marker("vmm-rc"),
        "0",
        "kata-vmm must exit 0 after the guest powers off"
    );
    assert_eq!(run.expect_marker("leftovers-rc"), "0");
}
