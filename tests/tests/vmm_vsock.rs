//! vsock stress through kata-vmm's hybrid vsock device (tests/scripts/vmm-vsock.sh, one node
//! boot, VMM + agent image + an overlay with the stress tool `kata-vsock-stress`,
//! tests/vsock-stress): many concurrent connections over several ports, initiated by the node
//! through the VMM's Unix socket (`CONNECT <port>`), full-duplex, one large stream, a slow
//! reader (back-pressure through the device's credit), a bad header; every byte verified,
//! counts and sha256s equal on both ends; a guest-initiated connection is refused; then a
//! clean guest shutdown, VMM exit 0, nothing left behind.
use std::path::PathBuf;

use kata_rs_tests::{
    build_release, node_run_with_extra, require_kata_artifacts, NodeRun, STATIC_TARGET,
};

/// Concurrent connections per direction (spread over 4 ports).
const CONNS: u64 = 64;
/// Bytes each way on each of those connections.
const BYTES: u64 = 256 << 10;
/// The large stream, one per direction (one-way: the server sends nothing back).
const BIG: u64 = 64 << 20;
/// The slow-reader stream, one per direction (one-way), and the reader's pause per 16 KiB.
const SLOW: u64 = 1 << 20;
const SLOW_MS: u64 = 50;
/// What a vsock socket may receive ahead of its reader: the default buffer (256 KiB).
const VSOCK_BUF: u64 = 256 << 10;

/// The stress tool, built static for the guest (the node runs the same binary).
fn stress_tool() -> PathBuf {
    build_release(
        "kata-rs-vsock-stress",
        Some(STATIC_TARGET),
        &["kata-vsock-stress"],
    )
    .remove(0)
}

fn num(run: &NodeRun, key: &str) -> u64 {
    let v = run.expect_marker(key);
    v.parse()
        .unwrap_or_else(|_| panic!("{key}={v} is not a number"))
}

fn secs(run: &NodeRun, key: &str) -> f64 {
    let v = run.expect_marker(key);
    v.parse()
        .unwrap_or_else(|_| panic!("{key}={v} is not a number"))
}

/// One client run (`WHO` = h2g-many, g2h-big, ...): every connection completed, the bytes
/// each way are the ones asked for, the server's sha256s equal the client's.
fn assert_client(run: &NodeRun, who: &str, conns: u64, up: u64, down: u64) {
    let m = |k: &str| format!("{who}-{k}");
    assert_eq!(num(run, &m("conns")), conns, "{who}");
    assert_eq!(
        num(run, &m("errors")),
        0,
        "{who}: failed connections: {:?}",
        run.prefixed("h2g-out")
            .into_iter()
            .chain(run.prefixed("g2h-error"))
            .filter(|l| l.contains(": conn "))
            .collect::<Vec<_>>()
    );
    assert_eq!(num(run, &m("ok")), conns, "{who}: completed connections");
    assert_eq!(
        num(run, &m("want_sent")),
        conns * up,
        "{who}: asked to send"
    );
    assert_eq!(num(run, &m("sent")), conns * up, "{who}: bytes sent");
    assert_eq!(
        num(run, &m("want_received")),
        conns * down,
        "{who}: asked to receive"
    );
    assert_eq!(
        num(run, &m("received")),
        conns * down,
        "{who}: bytes received and verified"
    );
    assert_eq!(
        run.expect_marker(&m("sent_sha")),
        run.expect_marker(&m("peer_received_sha")),
        "{who}: what the server received is not what the client sent"
    );
    assert_eq!(
        run.expect_marker(&m("received_sha")),
        run.expect_marker(&m("peer_sent_sha")),
        "{who}: what the client received is not what the server sent"
    );
}

/// One server (`hserve` on the node, `gserve` in the guest): saw every connection, several at
/// once, on all 4 ports; no stream failed; the bad header was rejected.
fn assert_server(run: &NodeRun, who: &str) {
    let m = |k: &str| format!("{who}-{k}");
    assert_eq!(
        run.expect_marker(&m("complete")),
        "yes",
        "{who}: all connections came"
    );
    assert_eq!(num(run, &m("conns")), CONNS + 3, "{who}: connections");
    assert_eq!(num(run, &m("errors")), 0, "{who}: failed connections");
    assert_eq!(num(run, &m("ok")), CONNS + 2, "{who}: good connections");
    assert_eq!(num(run, &m("rejected")), 1, "{who}: the bad header");
    assert_eq!(
        num(run, &m("received")),
        CONNS * BYTES + BIG + SLOW,
        "{who}: bytes received and verified"
    );
    assert_eq!(num(run, &m("sent")), CONNS * BYTES, "{who}: bytes sent");
    // The clients hold all their connections open before any stream starts (asserted with
    // `open_at_once`); a server accepts and finishes them at its own pace, yet must have
    // served many at once.
    let conc = num(run, &m("max_concurrent"));
    assert!(
        conc >= CONNS / 4,
        "{who}: at most {conc} connections were served at once, want >= {}",
        CONNS / 4
    );
    let ports: Vec<&str> = run.expect_marker(&m("ports")).split(',').collect();
    assert_eq!(ports.len(), 4, "{who}: connections on 4 ports: {ports:?}");
}

#[test]
fn vmm_vsock_stress_host_to_guest() {
    require_kata_artifacts();
    let tool = stress_tool();
    let tool = tool.to_str().expect("UTF-8 path").to_owned();
    let sizes = [
        CONNS.to_string(),
        format!("{}K", BYTES >> 10),
        format!("{}M", BIG >> 20),
        format!("{}K", SLOW >> 10),
        SLOW_MS.to_string(),
    ];
    let mut args = vec![tool.as_str()];
    args.extend(sizes.iter().map(String::as_str));
    let run = node_run_with_extra("vmm-vsock.sh", &args, &[&tool]);
    run.assert_success();
    assert_eq!(run.expect_marker("agent-ready"), "yes");
    assert_eq!(
        run.expect_marker("guest-started"),
        "yes",
        "the guest's rdinit did not start the stress tool"
    );

    for w in ["many", "big", "slow", "bad"] {
        assert_eq!(
            run.expect_marker(&format!("h2g-{w}-rc")),
            "0",
            "node client {w}"
        );
    }
    // Hybrid vsock refuses guest-initiated connections (RST).
    assert_eq!(run.expect_marker("g2h-probe-connected"), "no");
    {
        let dir = "h2g";
        assert_client(&run, &format!("{dir}-many"), CONNS, BYTES, BYTES);
        assert_eq!(num(&run, &format!("{dir}-many-ports")), 4);
        assert_eq!(
            num(&run, &format!("{dir}-many-open_at_once")),
            CONNS,
            "{dir}: every connection open at the same time"
        );
        assert_client(&run, &format!("{dir}-big"), 1, BIG, 0);
        let slow = format!("{dir}-slow");
        assert_client(&run, &slow, 1, SLOW, 0);
        // The reader takes 16 KiB, then pauses SLOW_MS; the writer can be at most the
        // socket's buffer ahead, so it must have waited for room at least this long
        // (halved: a larger buffer than the default is allowed).
        let floor = (SLOW - VSOCK_BUF) / (16 << 10) * SLOW_MS / 2;
        assert!(
            num(&run, &format!("{slow}-write_blocked")) > 0,
            "{slow}: the writer never blocked on a slow reader"
        );
        let blocked = num(&run, &format!("{slow}-blocked_ms"));
        assert!(
            blocked >= floor,
            "{slow}: the writer waited {blocked} ms for a slow reader, want >= {floor} ms"
        );
        assert_eq!(
            run.expect_marker(&format!("{dir}-bad-rejected")),
            "yes",
            "{dir}: a bad header must be refused with a close, no reply"
        );
    }
    assert_server(&run, "gserve");
    assert!(
        run.prefixed("gserve-out")
            .iter()
            .filter(|l| l.contains("rejected: bad header: magic"))
            .count()
            == 1,
        "the server names the bad header it rejected"
    );

    assert_eq!(run.expect_marker("shutdown-rc"), "0");
    assert_eq!(run.expect_marker("vmm-rc"), "0");
    assert_eq!(run.expect_marker("leftovers-rc"), "0");

    // Throughput: everything both clients of a direction moved (both ways) over the longest
    // of their runs (they ran at the same time).
    {
        let dir = "h2g";
        let mut bytes = 0;
        let mut longest: f64 = 0.0;
        for w in ["many", "big", "slow"] {
            bytes +=
                num(&run, &format!("{dir}-{w}-sent")) + num(&run, &format!("{dir}-{w}-received"));
            longest = longest.max(secs(&run, &format!("{dir}-{w}-seconds")));
        }
        println!(
            "vsock {dir} on a {} node: {} connections, {:.1} MiB in {longest:.1} s = {:.2} MiB/s",
            run.node_kind(),
            CONNS + 3,
            bytes as f64 / 1048576.0,
            bytes as f64 / 1048576.0 / longest.max(0.001),
        );
    }
    println!(
        "vsock: connections served at once by the guest's server: {}",
        run.expect_marker("gserve-max_concurrent"),
    );
}
