//! Bad input fails clearly and leaves nothing behind: a configuration naming a kernel that does
//! not exist, a guest that never answers (short dial timeout), a command missing from the image,
//! a misspelt configuration key, a runtime option ConfigPath naming no file, and malformed OCI
//! specs (unknown namespace type, a mount of a file system that does not exist, a uid no user
//! can have).
use kata_rs_tests::{node_run, require_kata_artifacts, NodeRun};

fn assert_clean(run: &NodeRun, case: &str) {
    assert_eq!(
        run.expect_marker(&format!("{case}-containers")),
        "0",
        "{case}: container left"
    );
    assert_eq!(
        run.expect_marker(&format!("{case}-tasks")),
        "0",
        "{case}: task left"
    );
    assert_eq!(
        run.expect_marker(&format!("{case}-leftovers-rc")),
        "0",
        "{case}: leftovers: {:?}",
        run.prefixed(case)
    );
}

fn failed(run: &NodeRun, case: &str) -> String {
    let rc = run.expect_marker(&format!("{case}-rc"));
    assert_ne!(rc, "0", "{case}: ctr run must fail");
    assert_ne!(rc, "124", "{case}: ctr run hung until the script's timeout");
    run.prefixed(case).join("\n")
}

#[test]
fn bad_input_fails_clearly() {
    require_kata_artifacts();
    let run = node_run("bad-input.sh", &[]);
    run.assert_success();

    let out = failed(&run, "missing-kernel");
    assert!(
        out.contains("/nonexistent/kata-rs/vmlinux-missing"),
        "the error must name the missing kernel path:\n{out}"
    );
    assert_clean(&run, "missing-kernel");

    let out = failed(&run, "hang");
    let lower = out.to_lowercase();
    assert!(
        ["timeout", "timed out", "did not answer within"]
            .iter()
            .any(|w| lower.contains(w)),
        "a guest that never answers must give a timeout error:\n{out}"
    );
    // ... that says where the guest's vCPU was (the shim asked kata-vmm with SIGUSR1).
    assert!(
        out.contains("vCPU state (SIGUSR1): vCPU0 rip=0x") && out.contains("mp_state="),
        "the timeout error carries the guest's vCPU state:\n{out}"
    );
    let secs: f64 = run.expect_marker("hang-seconds").parse().unwrap();
    assert!(secs < 200.0, "a 15 s dial timeout took {secs} s to fail");
    assert_clean(&run, "hang");

    let out = failed(&run, "no-command");
    assert!(
        out.contains("no-such-command-xyz"),
        "the error must name the missing command:\n{out}"
    );
    assert_clean(&run, "no-command");

    // Each case: what the error must name.
    for (case, names) in [
        (
            "bad-config",
            &["/etc/kata-rs/bad.toml", "unknown field `vcpu`"][..],
        ),
        ("bad-namespace", &["invalid OCI spec", "nosuchns"][..]),
        ("bad-mount", &["nosuchfs", "/mnt/x"][..]),
        ("bad-uid", &["4294967295"][..]),
        (
            "missing-config-path",
            &["/nonexistent/kata-rs/configuration.toml"][..],
        ),
    ] {
        let out = failed(&run, case);
        for n in names {
            assert!(out.contains(n), "{case}: the error must name {n:?}:\n{out}");
        }
        assert!(
            !out.contains("ran-as-"),
            "{case}: the container must not have run:\n{out}"
        );
        assert_clean(&run, case);
    }
}
