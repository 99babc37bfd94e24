//! What a hostile guest can make the host do, bounded (issue 11), on the node
//! (tests/scripts/vmm-hardening.sh, one node boot): a privileged kata container floods the
//! serial console (it makes the device node itself) with fake "Kernel panic - not syncing"
//! lines. Asserted, as a user sees it: the console log in /var/log/kata-rs/console (0700, log
//! 0600) stays under its cap and the rate limit dropped the excess; the container and VM keep
//! running and exec works (the fake panic does not end the VM); kata-vmm's /proc/PID/limits
//! shows RLIMIT_FSIZE/NOFILE/NPROC bounded to what it needs, its /proc entries are root's
//! although it runs as its jail uid (non-dumpable even with fs.suid_dumpable=1), its fds are
//! only its own; a normal stop gives the container's 137 and the VMM's exit status 0; nothing
//! is left behind.
use kata_rs_tests::{node_run, require_kata_artifacts, Checks};

/// `runtime.console_log_max_kib` in the script's configuration (its rate limit is 1 KiB/s).
const MAX_KIB: u64 = 64;
/// The marker line kata-vmm puts between head and tail (fixed length, see
/// vmm/src/devices/console_log.rs) is well under this.
const MARKER_MAX: u64 = 256;

/// A `soft/hard` limit marker: both equal and a number (not "unlimited").
fn limit(c: &mut Checks, key: &str) -> Option<u64> {
    let v = c.m(key);
    match v.split_once('/') {
        Some((s, h)) if s == h && s.parse::<u64>().is_ok() => s.parse().ok(),
        _ => {
            c.failed
                .push(format!("{key}={v}: expected a bounded limit, soft = hard"));
            None
        }
    }
}

#[test]
fn hostile_console_flood_and_vmm_limits() {
    require_kata_artifacts();
    let run = node_run("vmm-hardening.sh", &[]);
    run.assert_success();
    let mut c = Checks::new(&run);

    c.eq(
        "run-rc",
        "0",
        "ctr run -d --privileged of the kata container",
    );
    c.eq("status-before", "RUNNING", "the container before the flood");
    c.eq("vmm-comm", "kata-vmm", "the task pid is the VMM's");

    // Where the console log lives and who may read it.
    c.eq("console-dir-mode", "700", "the console log directory");
    c.eq("console-log-mode", "600", "the console log");
    c.eq("console-log-owner", "0:0", "the console log's owner");
    c.eq(
        "old-console-dir",
        "unused",
        "nothing in /run/kata-rs/console (host memory)",
    );

    // Limits of the VMM.
    let max_file = MAX_KIB * 1024;
    if let Some(fsize) = limit(&mut c, "limit-fsize") {
        c.check(
            fsize > max_file && fsize <= max_file + MARKER_MAX,
            format!(
                "RLIMIT_FSIZE {fsize}: expected the console log cap {max_file} + its marker line"
            ),
        );
    }
    let fds = c.num("fd-total").unwrap_or(0);
    if let Some(nofile) = limit(&mut c, "limit-nofile") {
        // Room for the vsock device's 128 connections (+1 accepted and closed), not much more.
        c.check(
            nofile >= fds + 129 && nofile <= fds + 129 + 9 + 64,
            format!(
                "RLIMIT_NOFILE {nofile} for a VMM with {fds} fds: expected its fds + 129 + slack"
            ),
        );
    }
    let threads = c.num("vmm-threads").unwrap_or(0);
    if let Some(nproc) = limit(&mut c, "limit-nproc") {
        c.check(
            nproc >= threads && nproc <= threads + 8,
            format!("RLIMIT_NPROC {nproc} for a VMM with {threads} threads (its own uid)"),
        );
    }
    c.eq(
        "suid-dumpable",
        "1",
        "the node's fs.suid_dumpable for this test",
    );
    let uid = c.m("vmm-uid");
    c.check(
        uid != "0" && uid.parse::<u64>().is_ok(),
        format!("the VMM runs as its jail uid, not root: Uid {uid}"),
    );
    c.eq(
        "proc-status-owner",
        "0:0",
        "/proc/PID/status of the VMM is root's (non-dumpable after the uid change; a dumpable VMM's would be its uid's)",
    );
    c.eq(
        "fd-unexpected",
        "0",
        "fds of the VMM other than its own (see the fd| lines)",
    );

    // The flood.
    c.eq(
        "mknod",
        "ok",
        "mknod of the serial console in the container",
    );
    let flooded = c.num("flood-bytes").unwrap_or(0);
    c.check(
        flooded >= 4 * max_file,
        format!(
            "the container flooded only {flooded} bytes, not enough to test a {max_file}-byte cap"
        ),
    );
    c.eq(
        "status-after",
        "RUNNING",
        "the container after the fake panic lines",
    );
    c.eq("vmm-alive", "yes", "the VMM after the fake panic lines");
    // A real oops leaves the guest kernel holding locks (a virtio-fs completion worker that
    // dies stops every file request): the guest panics and its VM ends within a second, and
    // the shim reports its containers exited, instead of waiting out the agent's timeout.
    c.eq(
        "guest-panic-on-oops",
        "1",
        "the guest kernel's panic_on_oops (oops=panic on its command line)",
    );
    c.eq("exec-after", "alive", "ctr task exec after the flood");
    if let Some(size) = c.num("console-log-size") {
        c.check(
            size <= max_file + MARKER_MAX,
            format!("console log of {size} bytes, over the cap {max_file} (+ marker)"),
        );
    }
    c.eq(
        "console-log-cap-line",
        "1",
        "the console log says where output was left out",
    );
    c.eq(
        "console-log-agent-ready",
        "1",
        "the console log's head keeps the boot (the agent's ready line)",
    );
    let received = c.num("log-received").unwrap_or(0);
    let dropped = c.num("log-rate_dropped").unwrap_or(0);
    c.check(
        received >= flooded,
        format!("kata-vmm saw {received} console bytes, the container wrote {flooded}"),
    );
    c.check(
        dropped > 0,
        format!("the rate limit dropped nothing of {received} bytes"),
    );
    c.eq("log-write_errors", "0", "console log write errors");
    // The drops are noted in the log, but not once per accepted byte (a note is ~55 bytes:
    // that would fill the log with notes).
    let secs = c.num("flood-secs").unwrap_or(0);
    if let Some(notes) = c.num("console-log-rate-notes") {
        c.check(
            (1..=secs.max(1)).contains(&notes),
            format!("{notes} rate-limit notes in the log for a {secs}-s flood: expected 1 to one per second"),
        );
    }
    c.check(
        c.m("panic-hint-lines") == "1",
        format!(
            "kata-vmm reports console panic text once on stderr, got {} lines",
            c.m("panic-hint-lines")
        ),
    );

    // A normal stop.
    c.eq(
        "container-exit",
        "137",
        "the container's exit status after SIGKILL",
    );
    c.eq("delete-rc", "0", "ctr task delete");
    c.eq("vmm-exit", "status-0", "the VMM's exit after a normal stop");
    c.eq(
        "console-log-left",
        "no",
        "the console log is removed with the sandbox",
    );
    c.eq("leftovers-rc", "0", "leftovers after the test");

    c.finish("hardening");
}
