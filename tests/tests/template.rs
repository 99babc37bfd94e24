//! VM templates through ctr (tests/scripts/template.sh, one node boot), with a shim
//! configuration that has `[factory] template = true`: the first sandbox boots cold and a
//! template of its VM appears (0700, a state and a memory file); the shim that made it exits,
//! and the next two sandboxes, each started by a new shim process, start from it (the
//! shim's log says so) and run their containers with the right output, and their guests
//! draw different random numbers (AfterRestore's entropy); a truncated template state file
//! is refused, that sandbox still starts (cold), a new template is made and the next sandbox
//! starts from it; a pod sandbox in a network namespace starts from it with the pod's
//! address; two pod sandboxes started from it at once have their own hostnames, addresses
//! and MACs; a template of another configuration under the key is refused naming the
//! difference, the sandbox boots cold and a right template is made; a replaced guest image
//! makes a new key: a cold boot, a template of the new image, the old image's templates
//! removed, the next sandbox from the new one; nothing is left. Cold vs template start times
//! are printed, not asserted. (The parity cases in template mode: tests/tests/parity.rs.)
use kata_rs_tests::{node_run, require_kata_artifacts};

/// The `N` of each `sandbox started ... in N ms` line (`start|`) whose text contains `what`.
fn start_ms(lines: &[&str], what: &str) -> Vec<u64> {
    lines
        .iter()
        .filter(|l| l.contains(what))
        .filter_map(|l| l.rsplit(" in ").next()?.strip_suffix(" ms")?.parse().ok())
        .collect()
}

#[test]
fn sandboxes_start_from_a_template() {
    require_kata_artifacts();
    let run = node_run("template.sh", &[]);
    run.assert_success();
    let out = &run.stdout;
    let m = |k: &str| run.expect_marker(k).to_string();
    // A probe container (run_probe ID in template.sh) ran and printed its greeting.
    let probe_ok = |id: &str| {
        assert_eq!(m(&format!("{id}-rc")), "0", "{id}:\n{out}");
        assert_eq!(m(&format!("{id}-hello")), format!("hi-from-{id}"), "{out}");
    };

    // Cold boot, then a template of that configuration.
    assert_eq!(m("t1-rc"), "0", "{out}");
    assert_eq!(m("template-made-rc"), "0", "no template appeared:\n{out}");
    let key = m("template-key");
    assert!(!key.is_empty(), "{out}");
    assert_eq!(m("template-dir-mode"), "700", "{out}");
    let files = m("template-files");
    assert!(
        files.contains("memory") && files.contains("state"),
        "the template holds the snapshot: {files}\n{out}"
    );

    // The template outlives the shim that made it: that shim (t1's) is gone before t2
    // starts, so t2 and t3 (each a new shim process) start from a template an earlier shim
    // made, and it is the same file (not remade).
    let maker = m("maker-shim-pids");
    assert!(
        !maker.trim().is_empty() && maker.split_whitespace().all(|p| p.parse::<u32>().is_ok()),
        "t1's shim: {maker:?}\n{out}"
    );
    assert_eq!(m("maker-shim-gone"), "yes", "{out}");
    assert_eq!(m("shims-before-t2"), "0", "{out}");
    assert_eq!(m("template-same"), "yes", "{out}");

    // Two sandboxes from the template, each with its container's output.
    probe_ok("t2");
    probe_ok("t3");
    assert_eq!(
        m("template-starts"),
        "2",
        "t2 and t3 from the template:\n{out}"
    );
    assert_eq!(m("cold-starts"), "1", "only t1 booted cold:\n{out}");
    // The restored guest's clock is the host's (AfterRestore sets it), not the template's
    // save time plus the run: the container's `date` is at most the run's own seconds (and 2
    // of rounding) behind the host's `date` taken right after the run. The template is at
    // least 15 s old, so a clock left alone fails this.
    let age: i64 = m("t2-template-age").parse().expect("template age");
    assert!(age >= 15, "the template was {age} s old:\n{out}");
    for id in ["t2", "t3"] {
        let guest: i64 = m(&format!("{id}-date")).parse().expect("guest date");
        let host: i64 = m(&format!("{id}-host-date")).parse().expect("host date");
        let run_secs: f64 = m(&format!("{id}-seconds")).parse().expect("seconds");
        let behind = host - guest;
        assert!(
            (-2..=run_secs.ceil() as i64 + 2).contains(&behind),
            "{id}'s guest clock is {behind} s behind the host's (its run took {run_secs} s, \
             the template is {age} s old):\n{out}"
        );
    }
    // Two clones of one template draw different random numbers.
    for what in ["uuid", "urandom"] {
        let (a, b) = (m(&format!("t2-{what}")), m(&format!("t3-{what}")));
        assert!(a.len() >= 32, "{what}: {a:?}\n{out}");
        assert_ne!(a, b, "{what} of two sandboxes from one template:\n{out}");
    }

    // A truncated state file: refused, removed, the sandbox still starts (cold), and a new
    // template is made, which the next sandbox starts from.
    assert_eq!(m("truncated-size"), "100", "{out}");
    assert_eq!(m("t4-rc"), "0", "{out}");
    assert_eq!(m("t4-status"), "RUNNING", "{out}");
    assert_eq!(m("refused"), "1", "the shim warns and removes it:\n{out}");
    let refused = run.prefixed("refused-log").join("\n");
    assert!(
        refused.contains("truncated") || refused.contains("state"),
        "the warning names the cause: {refused}\n{out}"
    );
    assert_eq!(m("cold-starts-after"), "2", "t4 booted cold:\n{out}");
    assert_eq!(m("template-remade-rc"), "0", "no new template:\n{out}");
    let size: u64 = m("template-remade-size").parse().unwrap_or(0);
    assert!(size > 4096, "a whole new state file: {size}\n{out}");
    probe_ok("t5");
    assert_eq!(
        m("template-starts-after"),
        "3",
        "t5 from the new template:\n{out}"
    );

    // A pod sandbox with a network namespace from the template: its tap is probed in a
    // placeholder slot and the guest gets the pod's address.
    assert_eq!(m("netns"), "ok", "{out}");
    assert_eq!(m("t6-rc"), "0", "{out}");
    assert_eq!(m("t6-addr"), "10.99.0.2/24", "{out}");
    assert_eq!(
        m("template-starts-net"),
        "4",
        "t6 from the template:\n{out}"
    );
    // The share's virtio-fs device was bound in the template (kata-vmm --fs-slot): a restore
    // probes only a pod's tap (the first placeholder, slot 3), never the share's slot 2.
    let steps: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("restore-steps| "))
        .collect();
    assert!(steps.len() >= 4, "{out}");
    assert!(steps.iter().all(|l| !l.contains("virtio-mmio.2")), "{out}");
    assert!(
        steps.iter().any(|l| l.contains("(bound virtio-mmio.3)")),
        "{out}"
    );

    // Two pod sandboxes from the template at once: each its pod's hostname, address, MAC.
    for (p, host, addr) in [
        ("a", "tpl-pod-a", "10.99.0.11/24"),
        ("b", "tpl-pod-b", "10.99.0.12/24"),
    ] {
        assert_eq!(m(&format!("tp-{p}-netns")), "ok", "{out}");
        assert_eq!(m(&format!("tp-{p}-rc")), "0", "pod {p}:\n{out}");
        assert_eq!(m(&format!("tp-{p}-hostname")), host, "{out}");
        assert_eq!(m(&format!("tp-{p}-addr")), addr, "{out}");
        let mac = m(&format!("tp-{p}-mac"));
        assert_eq!(mac.len(), 17, "pod {p}'s MAC: {mac:?}\n{out}");
        assert_eq!(
            mac,
            m(&format!("tp-{p}-netns-mac")),
            "the guest's eth0 has its pod's MAC:\n{out}"
        );
    }
    assert_ne!(m("tp-a-mac"), m("tp-b-mac"), "{out}");
    // Their guest RAM is the template's memory file mapped copy-on-write (their config's
    // restore_memory = map), not memfds; the container's root file system (virtio-fs) goes
    // through the bounce area and carries the same bytes both ways; the template's file keeps
    // its holes (guest writes never reach it).
    for p in ["a", "b"] {
        let maps: u32 = m(&format!("tp-{p}-vmm-maps-template")).parse().unwrap();
        assert!(maps >= 1, "pod {p}: the template's file is mapped:\n{out}");
        assert_eq!(m(&format!("tp-{p}-vmm-maps-ram-memfd")), "0", "{out}");
        assert_eq!(m(&format!("tp-{p}-vmm-maps-bounce")), "1", "{out}");
        let made: u64 = m("template-memory-kib").parse().unwrap();
        let now: u64 = m(&format!("tp-{p}-template-memory-kib")).parse().unwrap();
        assert!(
            now <= 2 * made,
            "the template's memory file grew from {made} KiB to {now} KiB:\n{out}"
        );
        for dir in ["w", "r"] {
            let guest = m(&format!("tp-{p}-guest-md5-{dir}"));
            assert_eq!(guest.len(), 32, "pod {p} md5 {dir}: {guest:?}\n{out}");
            assert_eq!(
                guest,
                m(&format!("tp-{p}-host-md5-{dir}")),
                "pod {p}: guest and host see the same file ({dir}):\n{out}"
            );
        }
    }
    assert_eq!(
        m("pods-from-template"),
        "2",
        "both pods from the template:\n{out}"
    );

    // A template of another configuration (256 MiB) under the 384 MiB key: refused naming
    // the difference, removed, the sandbox boots cold with 384 MiB, a right template is made.
    let fkey = m("foreign-key");
    assert_eq!(
        fkey,
        format!("{}-384m-1c", key.split('-').next().unwrap_or_default()),
        "{out}"
    );
    assert!(
        m("foreign-copied").contains("state"),
        "the copy is a template: {}\n{out}",
        m("foreign-copied")
    );
    assert_eq!(m("t7-rc"), "0", "{out}");
    assert_eq!(m("t7-hello"), "hi-from-t7", "{out}");
    let memtotal: u64 = m("t7-memtotal-kib").parse().unwrap_or(0);
    assert!(
        memtotal > 256 * 1024,
        "t7's guest has 384 MiB, not the template's 256: MemTotal {memtotal} kB\n{out}"
    );
    assert_eq!(
        m("foreign-refused"),
        "1",
        "the shim warns and removes it:\n{out}"
    );
    let foreign = run.prefixed("foreign-log").join("\n");
    assert!(
        foreign.contains("another configuration")
            && foreign.contains("memory: snapshot 256 MiB, now 384 MiB"),
        "the warning names the difference: {foreign}\n{out}"
    );
    assert_eq!(m("foreign-cold"), "1", "t7 booted cold:\n{out}");
    assert_eq!(m("foreign-remade-rc"), "0", "no 384 MiB template:\n{out}");
    let mem: u64 = m("foreign-remade-memory-bytes").parse().unwrap_or(0);
    assert_eq!(
        mem,
        384 << 20,
        "the new template holds 384 MiB of guest memory:\n{out}"
    );

    // A replaced guest image: a new key, a cold boot, a template of the new image; the old
    // image's templates (both sizes) removed; the next sandbox from the new template.
    probe_ok("t8");
    assert_eq!(m("image-cold"), "1", "t8 booted cold:\n{out}");
    let ikey = m("image-key");
    assert!(
        ikey.ends_with("-256m-1c") && ikey != key,
        "a new key for the new image: {ikey:?} (was {key})\n{out}"
    );
    assert_eq!(
        m("image-remade-rc"),
        "0",
        "no template of the new image:\n{out}"
    );
    probe_ok("t9");
    assert_eq!(
        m("image-from-new"),
        "1",
        "t9 from the new image's template:\n{out}"
    );

    // Nothing left: no process, mount, state; in the template directory only the new
    // image's template and its lock file (the old image's two and their locks removed, no
    // work directory of a template VM, nothing being removed).
    let mut dir: Vec<&str> = run
        .expect_marker("template-dir")
        .split(',')
        .filter(|s| !s.is_empty())
        .collect();
    dir.sort();
    let mut want = vec![format!(".lock-{ikey}"), ikey.clone()];
    want.sort();
    assert_eq!(dir, want, "{out}");
    assert_eq!(
        m("vmm-sigsys"),
        "0",
        "no VMM died of its seccomp filter (SIGSYS):\n{out}"
    );
    assert_eq!(m("containers"), "0", "{out}");
    assert_eq!(m("leftovers-rc"), "0", "{out}");

    let starts = run.prefixed("start");
    let cold = start_ms(&starts, "cold boot");
    let warm = start_ms(&starts, "from template");
    println!(
        "sandbox start on a {} node (shim log, ms): cold boot {cold:?}, from template {warm:?}",
        run.node_kind()
    );
    if let (Some(c), false) = (cold.first(), warm.is_empty()) {
        let avg = warm.iter().sum::<u64>() as f64 / warm.len() as f64;
        println!(
            "ratio_template_start = {:.3} (template {avg:.0} ms / cold {c} ms)",
            avg / *c as f64
        );
    }
    for id in ["t1", "t2", "t3", "t4", "t5", "t8", "t9"] {
        println!("{id}: ctr run {} s", m(&format!("{id}-seconds")));
    }
    let made = run.prefixed("made");
    for l in &made {
        println!("{l}");
    }
    // Every template was saved with vsock idle (its restores send no transport reset).
    let saved = run.prefixed("saved");
    let idle = saved.iter().filter(|l| l.contains("; vsock idle")).count();
    assert!(
        !made.is_empty() && idle >= made.len(),
        "{} templates made, {idle} saved idle: {saved:#?}",
        made.len()
    );
    for s in ["first", "pods", "foreign", "image", "all"] {
        println!("section {s}: {} s", m(&format!("secs-{s}")));
    }
}
