//! The VMM alone: kata-vmm boots the installed guest kernel + image, the agent says ready on
//! the console, answers `kata-agent-ctl check` over vsock, powers the guest off on
//! `kata-agent-ctl shutdown`, and kata-vmm then exits 0.
use kata_rs_tests::{node_run, require_kata_artifacts};

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
