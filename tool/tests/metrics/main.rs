//! `kata-rs metrics` on a sandbox state directory made up of real processes: a copy of `sh`
//! named `containerd-shim-kata-v2` that starts copies of `sleep` named `kata-vmm` and
//! `virtiofsd` (so /proc has real figures and the right `comm`s), and a fake host cgroup;
//! guest-side figures from a fake shim's Task service found through containerd bundles.
//! The output is checked by name and value, by `promtool check metrics`, and by a real
//! Prometheus server scraping it (Debian's `prometheus` package, installed by `make deps`).

//!
//! `sandbox`: the fake sandbox; here: the host figures and `kata-rs overhead`; `scrape`:
//! promtool, HTTP and Prometheus; `guest`: the guest figures through a fake shim.

mod guest;
mod sandbox;
mod scrape;

use std::{fs, process::Command};

use sandbox::{once, sandbox, value, BIN};

#[test]
fn figures_of_each_host_process_and_the_cgroup() {
    let sb = sandbox();
    let (out, err) = once(&sb);
    assert_eq!(value(&out, "kata_rs_sandboxes "), 1.0);
    for p in ["vmm", "virtiofsd", "shim"] {
        let l = format!("{{sandbox_id=\"sb1\",process=\"{p}\"}} ");
        let rss = value(&out, &format!("kata_rs_process_resident_memory_bytes{l}"));
        assert!(rss > 100_000.0, "{p}: rss {rss}\n{out}");
        assert!(value(&out, &format!("kata_rs_process_threads{l}")) >= 1.0);
        assert!(value(&out, &format!("kata_rs_process_cpu_seconds_total{l}")) >= 0.0);
        // PSS and io need the process to be ours (or root): they are.
        assert!(
            value(
                &out,
                &format!("kata_rs_process_proportional_memory_bytes{l}")
            ) > 0.0
        );
    }
    assert_eq!(
        value(
            &out,
            "kata_rs_sandbox_cgroup_cpu_seconds_total{sandbox_id=\"sb1\"} "
        ),
        2.5
    );
    assert_eq!(
        value(
            &out,
            "kata_rs_sandbox_cgroup_memory_bytes{sandbox_id=\"sb1\"} "
        ),
        268435456.0
    );
    assert_eq!(
        value(&out, "kata_rs_sandbox_cgroup_pids{sandbox_id=\"sb1\"} "),
        7.0
    );
    assert_eq!(value(&out, "kata_rs_metrics_scrape_errors "), 0.0, "{err}");
    assert_eq!(err, "");
}

#[test]
fn stale_pid_files_and_bad_records_are_errors_not_figures() {
    let sb = sandbox();
    // The VMM is gone and its pid taken by someone else (this test process); the record
    // climbs out of the cgroup root.
    fs::write(
        sb.state.join("sb1/kata-vmm.pid"),
        format!("{}\n", std::process::id()),
    )
    .unwrap();
    fs::write(sb.state.join("sb1/host-cgroup"), "../../etc").unwrap();
    // Not a sandbox id: ignored.
    fs::create_dir_all(sb.state.join("not an id")).unwrap();
    let (out, err) = once(&sb);
    assert_eq!(value(&out, "kata_rs_sandboxes "), 1.0);
    assert!(!out.contains("process=\"vmm\""), "{out}");
    assert!(out.contains("process=\"virtiofsd\""), "{out}");
    assert!(
        !out.contains("kata_rs_sandbox_cgroup_memory_bytes{"),
        "{out}"
    );
    assert_eq!(value(&out, "kata_rs_metrics_scrape_errors "), 2.0);
    assert!(err.contains("sandbox sb1: vmm: process"), "{err}");
    assert!(err.contains("(a stale pid file)"), "{err}");
    assert!(err.contains("host-cgroup: not a cgroup path"), "{err}");
}

/// `kata-rs overhead` on the fake sandbox: a RuntimeClass whose memory is at least the PSS
/// of its three processes plus the margin, with the figures in its comments.
#[test]
fn overhead_measured_on_a_running_sandbox() {
    let sb = sandbox();
    let (out, _) = once(&sb);
    let pss: f64 = ["vmm", "virtiofsd", "shim"]
        .iter()
        .map(|p| {
            value(
                &out,
                &format!(
                    "kata_rs_process_proportional_memory_bytes{{sandbox_id=\"sb1\",process=\"{p}\"}} "
                ),
            )
        })
        .sum();
    let o = Command::new(BIN)
        .args([
            "overhead",
            "--secs",
            "1",
            "--margin-percent",
            "50",
            "--state-dir",
        ])
        .arg(&sb.state)
        .output()
        .unwrap();
    assert!(o.status.success(), "{o:?}");
    let y = String::from_utf8(o.stdout).unwrap();
    assert!(y.contains("sandbox sb1, idle, sampled 1 s."), "{y}");
    assert!(y.contains("margin: 50 %"), "{y}");
    let mem: f64 = y
        .lines()
        .find_map(|l| l.trim().strip_prefix("memory: \""))
        .and_then(|v| v.strip_suffix("Mi\""))
        .unwrap()
        .parse()
        .unwrap();
    // The PSS of the three moves a little between the two reads: within 10 %.
    let want = pss * 1.5 / 1048576.0;
    assert!(
        mem >= want * 0.9 && mem <= want * 1.1 + 1.0,
        "{mem} MiB vs {want}\n{y}"
    );
    assert!(y.contains("    cpu: \""), "{y}");
    // No sandbox: a clear refusal.
    let empty = tempfile::tempdir().unwrap();
    let o = Command::new(BIN)
        .args(["overhead", "--secs", "1", "--state-dir"])
        .arg(empty.path())
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("no sandbox under"),
        "{o:?}"
    );
}
