//! Parity with runc: the same containers through `io.containerd.runc.v2`,
//! `io.containerd.kata.v2` booted cold, and `io.containerd.kata.v2` from a VM template
//! (`kata-template`: `[factory] template = true`, every sandbox a restored VM; issue 14's
//! "the parity cases pass in template mode") (tests/scripts/parity.sh; one node boot for runc
//! and kata, one for runc and kata-template) must print the same normalised result line per
//! case: process user/groups/umask, capabilities, no_new_privs, read-only root, masked and
//! read-only paths, env/cwd, hostname, rlimits, cgroup limits (memory and cpu visible, pids
//! enforced), seccomp, stdin, terminals (`ctr run -t`, `ctr task exec -t`), `--memory-limit`
//! enforced (OOM kill reported as an exit by SIGKILL and a `/tasks/oom` event), signals and
//! exit statuses, mount destinations under symlinked directories of the image (`/var/run ->
//! /run`, a `../../..` escape) resolved inside the container's root, device access
//! (`linux.resources.devices`: nodes a container may make but not open; privileged opens
//! them; `KATA_RS_PARITY_ONLY=devices` runs only those). Each case is also checked for
//! sanity, so that two identically broken runtimes do not pass.
use std::collections::BTreeMap;
use std::path::Path;

use kata_rs_tests::parity_cases::PARITY_EXPECTED;
use kata_rs_tests::{node_run_counting_guest_faults, require_kata_artifacts};

/// `result <case> <runtime> <rest>` lines → case → runtime → rest.
fn results(stdout: &str) -> BTreeMap<String, BTreeMap<String, String>> {
    let mut m: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for l in stdout.lines() {
        let Some(rest) = l.strip_prefix("result ") else {
            continue;
        };
        let mut it = rest.splitn(3, ' ');
        let (Some(case), Some(rt), Some(v)) = (it.next(), it.next(), it.next()) else {
            panic!("malformed result line {l:?}");
        };
        m.entry(case.into())
            .or_default()
            .insert(rt.into(), v.to_string());
    }
    m
}

/// util-linux `script` (package bsdutils, always on Debian): a pseudo-terminal for ctr's -t.
const SCRIPT: &str = "/usr/bin/script";

/// runc and kata booted cold.
#[test]
fn runc_and_kata_agree() {
    parity(&["runc", "kata"]);
}

/// runc and kata from a VM template: every compared sandbox a restored VM.
#[test]
fn runc_and_kata_from_a_template_agree() {
    parity(&["runc", "kata-template"]);
}

/// Runs parity.sh with `runtimes` (runc first, the reference) on one node and checks that
/// every case's line is runc's under each of the others. One node boot per pair, not one for
/// all three: a fault of the emulated node's own kernel (tests/README.md "Rig faults") then
/// repeats half the cases, not all of them.
fn parity(runtimes: &[&str]) {
    require_kata_artifacts();
    assert!(
        Path::new(SCRIPT).is_file(),
        "{SCRIPT} missing (apt-get install bsdutils): the tty cases need it"
    );
    if std::env::var_os("KATA_RS_NODE_EXTRA").is_none() {
        std::env::set_var("KATA_RS_NODE_EXTRA", SCRIPT);
    }
    // KATA_RS_PARITY_ONLY=devices: only the device cases (parity.sh devices), for iterating.
    let only = std::env::var("KATA_RS_PARITY_ONLY").unwrap_or_default();
    assert_eq!(runtimes.first(), Some(&"runc"), "runc is the reference");
    let runtimes_arg = format!("runtimes={}", runtimes.join(" "));
    let mut args = vec![runtimes_arg.as_str()];
    if !only.is_empty() {
        args.push(only.as_str());
    }
    // A guest triple fault of the emulated rig costs one case's rerun, not the whole run's:
    // parity.sh reruns the attempt it spoiled (`rig-retry` lines); node faults still repeat
    // the run.
    let run = node_run_counting_guest_faults("parity.sh", &args, &[]);
    run.assert_success();
    let rig_retries: u32 = run
        .expect_marker("rig-retries")
        .parse()
        .expect("rig-retries is a count");
    if rig_retries > 0 {
        assert!(run.is_emulated(), "parity.sh reran cases on a native node");
        eprintln!(
            "parity: RIG FAULT, not counted: {rig_retries} attempt(s) run again because a guest \
             triple faulted on the emulated node:\n{}",
            run.stdout
                .lines()
                .filter(|l| l.starts_with("rig-retry"))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    let res = results(&run.stdout);
    let mut failures = Vec::new();
    for (case, wants) in PARITY_EXPECTED {
        if !only.is_empty() && !case.starts_with(only.as_str()) {
            continue;
        }
        let Some(by_rt) = res.get(*case) else {
            failures.push(format!("{case}: no result lines"));
            continue;
        };
        let Some(runc) = by_rt.get("runc") else {
            failures.push(format!("{case}: no runc line: {by_rt:?}"));
            continue;
        };
        for rt in &runtimes[1..] {
            match by_rt.get(*rt) {
                None => failures.push(format!("{case}: no {rt} line: {by_rt:?}")),
                Some(line) if line != runc => {
                    failures.push(format!("{case}: differs\n  runc: {runc}\n  {rt}: {line}"))
                }
                Some(_) => {}
            }
        }
        for w in *wants {
            for (rt, line) in by_rt {
                if !line.contains(w) {
                    failures.push(format!("{case} ({rt}): {w:?} missing in {line:?}"));
                }
            }
        }
    }
    // In template mode every case's sandbox (the one whose result is compared) started from
    // the template, and none booted cold.
    if runtimes.contains(&"kata-template") {
        assert_eq!(
            run.expect_marker("template-made"),
            "yes",
            "no template made"
        );
        let groups = run.expect_marker("case-groups");
        assert_ne!(groups, "0", "no case ran");
        assert_eq!(
            run.expect_marker("template-cases"),
            groups,
            "not every case ran under kata-template"
        );
        assert_eq!(
            run.expect_marker("template-cases-restored"),
            groups,
            "a kata-template sandbox did not start from the template (its template failed: \
             the shims' warnings say why): {:?}",
            run.stdout
                .lines()
                .filter(|l| l.starts_with("template-case-not-restored"))
                .collect::<Vec<_>>()
        );
    }
    let known = |c: &String| PARITY_EXPECTED.iter().any(|(k, _)| k == c);
    assert!(
        res.keys().all(known),
        "a case ran that the test does not check: {:?}",
        res.keys().collect::<Vec<_>>()
    );
    // runc's mounts under the image's symlinks stayed in the container's root.
    if only.is_empty() {
        assert_eq!(
            run.expect_marker("node-run-secrets"),
            "no",
            "node's /run written"
        );
        assert_eq!(
            run.expect_marker("node-tmp-secret"),
            "no",
            "node's /tmp written"
        );
    }
    assert_eq!(run.expect_marker("containers"), "0", "a container was left");
    assert_eq!(run.expect_marker("tasks"), "0", "a task was left");
    assert_eq!(run.expect_marker("leftovers-rc"), "0", "kata leftovers");
    assert!(
        failures.is_empty(),
        "{} parity failure(s):\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn result_lines_parse() {
    let r = results("x\nresult a runc rc=0 out=x ; y\nresult a kata rc=0 out=x ; y\n");
    assert_eq!(r["a"]["runc"], "rc=0 out=x ; y");
    assert_eq!(r["a"]["runc"], r["a"]["kata"]);
}
