//! Host bind mounts through ctr (tests/scripts/volumes.sh, one node boot): a file and a
//! directory tree bound read-only and a directory bound writable look the same in a runc
//! container, a kata container and a kata pod container (contents, modes, owners, mtimes,
//! symlinks kept, EROFS on writes to the read-only binds); a missing or device source fails
//! clearly and leaves nothing; CRI's /dev/shm bind becomes a tmpfs in the guest; a pod
//! sandbox with CRI's sizing annotations gets more vCPUs and memory (garbage is refused);
//! nothing is left at the end.
use kata_rs_tests::{node_run, require_kata_artifacts};

#[test]
fn host_bind_mounts_are_copied_into_the_vm() {
    require_kata_artifacts();
    let run = node_run("volumes.sh", &[]);
    run.assert_success();
    let out = &run.stdout;

    // The probe: runc is the reference, kata and a kata pod container see the same.
    assert_eq!(run.expect_marker("runc-rc"), "0", "{out}");
    assert_eq!(
        run.expect_marker("kata-rc"),
        "0",
        "{out}\n{}\nthe kata probe printed:\n{}\nthe shim's warnings:\n{}",
        run.stderr,
        run.prefixed("kata").join("\n"),
        run.prefixed("kata-why").join("\n")
    );
    let runc = run.prefixed("runc");
    for want in [
        "host-file-content",
        "tree-file",
        "/x/file 640 1234 5678 18 ",
        "/x/dir/sub 750 0 0",
        "link=/etc/passwd",
        "script-ran",
        "file-write=refused",
        "dir-write=EROFS",
        "rw",
        "file-mount=ro",
    ] {
        assert!(
            runc.iter().any(|l| l.starts_with(want)),
            "runc's probe shows {want:?} (the reference):\n{out}"
        );
    }
    assert_eq!(
        run.prefixed("kata"),
        runc,
        "kata shows the binds as runc does:\n{out}"
    );
    assert_eq!(
        run.expect_marker("host-file-after"),
        "host-file-content",
        "{out}"
    );

    // A missing source: the error names it; no VM, no state.
    assert_ne!(run.expect_marker("missing-rc"), "0", "{out}");
    let missing = run.section("missing-source").join("\n");
    assert!(
        missing.contains("/nonexistent/kata-rs-vol does not exist on the host"),
        "the error names the missing source:\n{missing}"
    );
    assert!(missing.contains("bind mount /x"), "{missing}");
    assert_eq!(run.expect_marker("missing-vmms"), "0", "{out}");
    assert_eq!(run.expect_marker("missing-state"), "0", "{out}");

    // A device node as source: not supported, said clearly.
    assert_ne!(run.expect_marker("device-rc"), "0", "{out}");
    let device = run.section("device-source").join("\n");
    assert!(
        device.contains("the source is a device node"),
        "the error says why:\n{device}"
    );
    assert_eq!(run.expect_marker("device-vmms"), "0", "{out}");
    assert_eq!(run.expect_marker("device-state"), "0", "{out}");

    // A pod: its container's binds come through AddStorage, /dev/shm is a guest tmpfs.
    assert_eq!(
        run.expect_marker("pod-sandbox-rc"),
        "0",
        "{out}\n{}",
        run.stderr
    );
    assert_eq!(run.expect_marker("pod-c1-rc"), "0", "{out}\n{}", run.stderr);
    assert_eq!(run.expect_marker("pod-c1-status"), "RUNNING", "{out}");
    assert_eq!(
        run.expect_marker("pod-probe-rc"),
        "0",
        "{out}\nthe pod probe printed:\n{}\nthe shim's warnings:\n{}",
        run.prefixed("pod").join("\n"),
        run.prefixed("pod-probe-why").join("\n")
    );
    assert_eq!(
        run.prefixed("pod"),
        runc,
        "a pod container shows the binds as runc does:\n{out}"
    );
    assert_eq!(run.expect_marker("shm-fs"), "tmpfs", "{out}");
    assert_eq!(run.expect_marker("shm-write"), "ok", "{out}");
    assert_eq!(run.expect_marker("sandbox-shm-fs"), "tmpfs", "{out}");
    assert_eq!(run.expect_marker("delete-vpc1-rc"), "0", "{out}");
    assert_eq!(run.expect_marker("delete-vpod-rc"), "0", "{out}");

    // Pod VM sizing from CRI's sandbox annotations: 1 + ceil(150000/100000) = 3 vCPUs,
    // capped at the node's 2 online CPUs; 256 + 128 MiB.
    assert_eq!(run.expect_marker("sized-rc"), "0", "{out}\n{}", run.stderr);
    assert_eq!(run.expect_marker("base-nproc"), "1", "{out}");
    assert_eq!(run.expect_marker("sized-nproc"), "2", "{out}");
    assert_eq!(
        run.expect_marker("sized-vmm-args"),
        "--mem-mib,384,--vcpus,2",
        "{out}"
    );
    let kb = |k: &str| -> i64 {
        run.expect_marker(k)
            .parse()
            .unwrap_or_else(|_| panic!("{k} is not a number:\n{out}"))
    };
    let grown = kb("sized-memtotal-kb") - kb("base-memtotal-kb");
    assert!(
        (110 * 1024..=130 * 1024).contains(&grown),
        "MemTotal grew by {grown} kB, expected about 128 MiB:\n{out}"
    );
    assert_eq!(run.expect_marker("delete-spod-rc"), "0", "{out}");
    assert_ne!(run.expect_marker("garbage-rc"), "0", "{out}");
    let size = run.section("pod-size").join("\n");
    assert!(
        size.contains("annotation io.kubernetes.cri.sandbox-memory: \"lots\" is not a byte count"),
        "the error names the annotation:\n{size}"
    );
    assert_eq!(run.expect_marker("garbage-vmms"), "0", "{out}");

    assert_eq!(run.expect_marker("tasks"), "0", "{out}");
    assert_eq!(run.expect_marker("state"), "0", "{out}");
    assert_eq!(run.expect_marker("leftovers-rc"), "0", "{out}");
}
