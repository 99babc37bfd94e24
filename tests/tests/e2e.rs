//! End to end, as a user sees it: `ctr run` of the busybox image through the kata runtime runs
//! in a microVM (guest kernel `*-kata-rs`), through runc on the node's kernel; the container's
//! exit code is ctr's; no VMM, shim, mount or socket is left afterwards.
use kata_rs_tests::{node_run, require_kata_artifacts};

#[test]
fn kata_and_runc_containers() {
    require_kata_artifacts();
    let run = node_run("e2e.sh", &[]);
    run.assert_success();
    let node_kernel = run.expect_marker("node-kernel").to_string();

    let kata = run.section("kata");
    assert!(
        kata.contains(&"hello"),
        "kata container did not print hello:\n{}",
        run.stdout
    );
    assert!(
        kata.iter().any(|l| l.contains("-kata-rs")),
        "kata container must run on the kata-rs guest kernel (uname -r *-kata-rs):\n{}",
        run.stdout
    );
    assert!(
        !kata.contains(&node_kernel.as_str()),
        "kata container ran on the node kernel"
    );
    assert_eq!(
        run.expect_marker("kata-rc"),
        "3",
        "ctr must exit with the container's status"
    );
    assert_eq!(
        run.expect_marker("kata-leftovers-rc"),
        "0",
        "leftovers after the kata container"
    );

    let runc = run.section("runc");
    assert!(
        runc.contains(&"hello"),
        "runc container did not print hello"
    );
    assert!(
        runc.contains(&node_kernel.as_str()),
        "runc container must run on the node kernel"
    );
    assert!(!runc.iter().any(|l| l.contains("-kata-rs")));
    assert_eq!(run.expect_marker("runc-rc"), "3");

    assert_eq!(
        run.expect_marker("containers"),
        "0",
        "ctr run --rm left a container"
    );
    assert_eq!(run.expect_marker("tasks"), "0", "ctr run --rm left a task");
    assert_eq!(run.expect_marker("leftovers-rc"), "0");
    println!(
        "kata container on a {} node: {} s",
        run.node_kind(),
        run.expect_marker("kata-seconds")
    );
}
