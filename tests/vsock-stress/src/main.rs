//! kata-vsock-stress: many concurrent AF_VSOCK connections with verified pseudo-random streams
//! in both directions, and a slow reader for back-pressure. See README.md.
//!
//! ```text
//! kata-vsock-stress serve --ports P[,P...] [--expect N] [--deadline S] [--io-timeout S] [--tag T]
//! kata-vsock-stress client --cid C --ports P[,P...] [--conns N] [--bytes B] [--down-bytes B]
//!                   [--slow-ms MS] [--seed S] [--io-timeout S] [--connect-timeout S] [--tag T]
//! kata-vsock-stress bad-header --cid C --port P [--io-timeout S] [--tag T]
//! ```
//! Every result line starts with `TAG: ` (default `kvs`). Exit 0: everything verified; 1: a
//! connection failed or the server did not see `--expect` connections in time; 2: bad usage.

use std::collections::BTreeMap;
use std::os::fd::OwnedFd;
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Condvar, Mutex};
use std::time::{Duration, Instant};

use kata_rs_vsock_stress::vsock::{accept_on, connect_to, connect_uds, listen_on, set_timeouts};
use kata_rs_vsock_stress::{
    client_conn, err, hex, parse_size, recv_some, send_all, server_conn, ClientConn, Header,
    Result, SendStats, HEADER_LEN, TRAILER_LEN,
};
use sha2::{Digest, Sha256};

const USAGE: &str = "usage:
  kata-vsock-stress serve --ports P[,P...] [--expect N] [--deadline S] [--io-timeout S] [--tag T]
  kata-vsock-stress client --cid C --ports P[,P...] [--conns N] [--bytes B] [--down-bytes B]
                    [--slow-ms MS] [--seed S] [--io-timeout S] [--connect-timeout S] [--tag T]
  kata-vsock-stress bad-header --cid C --port P [--io-timeout S] [--tag T]
  kata-vsock-stress probe --cid C --port P [--tag T]     (one AF_VSOCK connect attempt)
  kata-vsock-stress probe --uds PATH --port P [--tag T]  (one hybrid vsock CONNECT attempt)
  client, bad-header: --uds PATH instead of --cid C goes through kata-vmm's hybrid vsock
sizes: digits with K, M or G (binary); times in seconds";

/// Stack of the per-connection threads: their buffers are on the heap.
const STACK: usize = 256 * 1024;

/// Options of all modes (each mode checks which it needs).
struct Opts {
    ports: Vec<u32>,
    cid: Option<u32>,
    uds: Option<std::path::PathBuf>,
    conns: usize,
    bytes: u64,
    down_bytes: Option<u64>,
    slow_ms: u32,
    seed: u64,
    expect: Option<usize>,
    deadline: Option<Duration>,
    io_timeout: Duration,
    connect_timeout: Duration,
    tag: String,
}

fn num<T: std::str::FromStr>(flag: &str, v: &str) -> Result<T> {
    v.parse()
        .map_err(|_| err!("{flag}: {v:?} is not a valid number"))
}

fn secs(flag: &str, v: &str) -> Result<Duration> {
    let s: u64 = num(flag, v)?;
    if s == 0 || s > 86_400 {
        return Err(err!("{flag}: {s} s is outside 1..=86400"));
    }
    Ok(Duration::from_secs(s))
}

fn parse(args: &[String]) -> Result<Opts> {
    let mut o = Opts {
        ports: Vec::new(),
        cid: None,
        uds: None,
        conns: 1,
        bytes: 1 << 20,
        down_bytes: None,
        slow_ms: 0,
        seed: 1,
        expect: None,
        deadline: None,
        io_timeout: Duration::from_secs(120),
        connect_timeout: Duration::from_secs(60),
        tag: "kvs".into(),
    };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let v = it
            .next()
            .ok_or_else(|| err!("{flag} needs a value"))?
            .as_str();
        match flag.as_str() {
            "--ports" | "--port" => {
                for p in v.split(',') {
                    let p: u32 = num(flag, p)?;
                    if p == 0 || p == u32::MAX {
                        return Err(err!("{flag}: port {p} is not usable"));
                    }
                    o.ports.push(p);
                }
            }
            "--cid" => o.cid = Some(num(flag, v)?),
            "--uds" => o.uds = Some(v.into()),
            "--conns" => {
                o.conns = num(flag, v)?;
                if !(1..=1024).contains(&o.conns) {
                    return Err(err!("--conns: {} is outside 1..=1024", o.conns));
                }
            }
            "--bytes" => o.bytes = parse_size(v)?,
            "--down-bytes" => o.down_bytes = Some(parse_size(v)?),
            "--slow-ms" => {
                o.slow_ms = num(flag, v)?;
                if o.slow_ms > kata_rs_vsock_stress::MAX_SLOW_MS {
                    return Err(err!(
                        "--slow-ms: at most {}",
                        kata_rs_vsock_stress::MAX_SLOW_MS
                    ));
                }
            }
            "--seed" => o.seed = num(flag, v)?,
            "--expect" => o.expect = Some(num(flag, v)?),
            "--deadline" => o.deadline = Some(secs(flag, v)?),
            "--io-timeout" => o.io_timeout = secs(flag, v)?,
            "--connect-timeout" => o.connect_timeout = secs(flag, v)?,
            "--tag" => o.tag = v.to_string(),
            _ => return Err(err!("unknown option {flag}")),
        }
    }
    Ok(o)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(mode) = args.first() else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    let opts = match parse(&args[1..]) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("kata-vsock-stress: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let r = match mode.as_str() {
        "serve" => serve(&opts),
        "client" => client(&opts),
        "bad-header" => bad_header(&opts),
        "probe" => probe(&opts),
        "-h" | "--help" | "help" => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        m => Err(err!("unknown mode {m:?}")),
    };
    match r {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("kata-vsock-stress: {e}");
            // Usage problems are found before any socket exists.
            ExitCode::from(if e.0.starts_with("usage:") { 2 } else { 1 })
        }
    }
}

/// Connects to guest `port` the way the options say: AF_VSOCK to `--cid`, or through the
/// hybrid vsock socket `--uds`.
fn dial(o: &Opts, port: u32) -> Result<std::os::fd::OwnedFd> {
    match &o.uds {
        Some(p) => connect_uds(p, port, o.connect_timeout),
        None => connect_to(need_cid(o)?, port, o.connect_timeout, o.connect_timeout),
    }
}

/// One connection attempt, reported (`connected=yes|no error=...`); exit 0 either way.
fn probe(o: &Opts) -> Result<bool> {
    let port = *o
        .ports
        .first()
        .ok_or_else(|| err!("usage: --port is required"))?;
    let (how, r) = match &o.uds {
        Some(p) => ("uds", connect_uds(p, port, Duration::from_secs(1))),
        None => (
            "vsock",
            connect_to(need_cid(o)?, port, Duration::from_secs(5), Duration::ZERO),
        ),
    };
    let (yes, e) = match r {
        Ok(_) => ("yes", String::new()),
        Err(e) => ("no", e.0.replace(' ', "_")),
    };
    println!("{}: probe {how} connected={yes} error={e}", o.tag);
    Ok(true)
}

fn need_cid(o: &Opts) -> Result<u32> {
    o.cid.ok_or_else(|| err!("usage: --cid is required"))
}

fn need_ports(o: &Opts) -> Result<()> {
    if o.ports.is_empty() {
        return Err(err!("usage: --ports is required"));
    }
    Ok(())
}

/// Totals of a server.
#[derive(Default)]
struct ServerTotals {
    done: usize,
    ok: usize,
    errors: usize,
    rejected: usize,
    received: u64,
    sent: SendStats,
    per_port: BTreeMap<u32, usize>,
    first: Option<Instant>,
    last: Option<Instant>,
}

fn serve(o: &Opts) -> Result<bool> {
    need_ports(o)?;
    let listeners: Vec<(u32, OwnedFd)> = o
        .ports
        .iter()
        .map(|&p| listen_on(p).map(|l| (p, l)))
        .collect::<Result<_>>()?;
    let state = Arc::new((Mutex::new(ServerTotals::default()), Condvar::new()));
    let active = Arc::new(AtomicUsize::new(0));
    let max_active = Arc::new(AtomicUsize::new(0));
    let ports: Vec<String> = o.ports.iter().map(u32::to_string).collect();
    println!("{}: listening ports={}", o.tag, ports.join(","));
    let t0 = Instant::now();
    for (port, l) in listeners {
        let (state, active, max_active) = (state.clone(), active.clone(), max_active.clone());
        let (tag, timeout) = (o.tag.clone(), o.io_timeout);
        std::thread::Builder::new()
            .stack_size(STACK)
            .spawn(move || loop {
                let c = match accept_on(&l) {
                    Ok(c) => c,
                    Err(e) => {
                        println!("{tag}: port {port}: {e}");
                        std::thread::sleep(Duration::from_millis(100));
                        continue;
                    }
                };
                let (state, active, max_active, tag) = (
                    state.clone(),
                    active.clone(),
                    max_active.clone(),
                    tag.clone(),
                );
                let spawned = std::thread::Builder::new()
                    .stack_size(STACK)
                    .spawn(move || {
                        let now = active.fetch_add(1, Ordering::SeqCst) + 1;
                        max_active.fetch_max(now, Ordering::SeqCst);
                        {
                            let mut t = lock(&state.0);
                            t.first.get_or_insert_with(Instant::now);
                        }
                        let r = set_timeouts(&c, timeout)
                            .map(|()| server_conn(&c, timeout))
                            .unwrap_or_else(|e| kata_rs_vsock_stress::ServerConn {
                                error: Some(e.0),
                                ..Default::default()
                            });
                        drop(c);
                        active.fetch_sub(1, Ordering::SeqCst);
                        if let Some(e) = &r.error {
                            let what = if r.rejected { "rejected" } else { "error" };
                            println!("{tag}: port {port}: {what}: {e}");
                        }
                        let mut t = lock(&state.0);
                        t.done += 1;
                        if r.rejected {
                            t.rejected += 1;
                        } else if r.error.is_some() {
                            t.errors += 1;
                        } else {
                            t.ok += 1;
                        }
                        t.received += r.received;
                        t.sent.add(&r.sent);
                        *t.per_port.entry(port).or_default() += 1;
                        t.last = Some(Instant::now());
                        state.1.notify_all();
                    });
                if let Err(e) = spawned {
                    println!("kvs: port {port}: cannot start a connection thread: {e}");
                }
            })
            .map_err(|e| err!("cannot start the listener thread: {e}"))?;
    }
    let Some(expect) = o.expect else {
        // Serve until killed.
        loop {
            std::thread::park();
        }
    };
    let mut t = lock(&state.0);
    let complete = loop {
        if t.done >= expect {
            break true;
        }
        let left = match o.deadline {
            Some(d) => match d.checked_sub(t0.elapsed()) {
                Some(l) => l,
                None => break false,
            },
            None => Duration::from_secs(3600),
        };
        t = state
            .1
            .wait_timeout(t, left)
            .unwrap_or_else(|p| p.into_inner())
            .0;
    };
    let busy = match (t.first, t.last) {
        (Some(a), Some(b)) => b.duration_since(a).as_secs_f64(),
        _ => 0.0,
    };
    let per_port: Vec<String> = t.per_port.iter().map(|(p, n)| format!("{p}:{n}")).collect();
    println!(
        "{}: server complete={} conns={} ok={} errors={} rejected={} received={} sent={} \
         max_concurrent={} write_blocked={} blocked_ms={} ports={} seconds={:.1}",
        o.tag,
        if complete { "yes" } else { "no" },
        t.done,
        t.ok,
        t.errors,
        t.rejected,
        t.received,
        t.sent.bytes,
        max_active.load(Ordering::SeqCst),
        t.sent.blocked,
        t.sent.blocked_time.as_millis(),
        per_port.join(","),
        busy
    );
    Ok(complete && t.errors == 0)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn client(o: &Opts) -> Result<bool> {
    if o.uds.is_none() {
        need_cid(o)?;
    }
    need_ports(o)?;
    let down = o.down_bytes.unwrap_or(o.bytes);
    // All connections connect and send their header, then wait for each other: the streams
    // run while every connection is open.
    let barrier = Arc::new(Barrier::new(o.conns));
    // Connections open when the barrier opened: all of them were open at the same time.
    let connected = AtomicUsize::new(0);
    let t0 = Instant::now();
    let mut results: Vec<(u32, ClientConn, Duration)> = Vec::with_capacity(o.conns);
    std::thread::scope(|s| {
        let mut hs = Vec::new();
        for i in 0..o.conns {
            let port = o.ports[i % o.ports.len()];
            let h = Header {
                up: o.bytes,
                down,
                seed: o.seed.wrapping_mul(1_000_003).wrapping_add(i as u64),
                slow_ms: o.slow_ms,
            };
            let (barrier, connected) = (barrier.clone(), &connected);
            let b = std::thread::Builder::new()
                .stack_size(STACK)
                .spawn_scoped(s, move || {
                    let c = dial(o, port).and_then(|c| set_timeouts(&c, o.io_timeout).map(|()| c));
                    if c.is_ok() {
                        connected.fetch_add(1, Ordering::SeqCst);
                    }
                    barrier.wait();
                    let t = Instant::now();
                    let r = match c {
                        Ok(c) => client_conn(&c, &h, o.io_timeout),
                        Err(e) => ClientConn {
                            error: Some(e.0),
                            ..Default::default()
                        },
                    };
                    (port, r, t.elapsed())
                });
            match b {
                Ok(h) => hs.push(h),
                Err(e) => {
                    // The barrier would never open: give up on the whole run.
                    eprintln!("kata-vsock-stress: cannot start connection thread {i}: {e}");
                    std::process::exit(1);
                }
            }
        }
        for h in hs {
            results.push(h.join().unwrap_or_else(|_| {
                (
                    0,
                    ClientConn {
                        error: Some("connection thread panicked".into()),
                        ..Default::default()
                    },
                    Duration::ZERO,
                )
            }));
        }
    });
    let secs = t0.elapsed().as_secs_f64();
    let mut sent = SendStats::default();
    let (mut received, mut errors, mut peer_blocked) = (0u64, 0usize, 0u64);
    let mut shas: [Sha256; 4] = Default::default();
    let mut slowest = Duration::ZERO;
    for (i, (port, r, took)) in results.iter().enumerate() {
        sent.add(&r.sent);
        received += r.received;
        slowest = slowest.max(*took);
        if let Some(e) = &r.error {
            errors += 1;
            println!("{}: conn {i} port {port}: error: {e}", o.tag);
        }
        let t = r.trailer.unwrap_or(kata_rs_vsock_stress::Trailer {
            ok: false,
            received: 0,
            write_blocked: 0,
            sha_received: [0; 32],
            sha_sent: [0; 32],
        });
        peer_blocked += t.write_blocked;
        shas[0].update(r.sha_sent);
        shas[1].update(t.sha_received);
        shas[2].update(r.sha_received);
        shas[3].update(t.sha_sent);
    }
    let [a, b, c, d] = shas.map(|h| hex(&h.finalize()));
    let total = (sent.bytes + received) as f64;
    println!(
        "{}: client conns={} ok={} errors={} open_at_once={} ports={} sent={} received={} want_sent={} \
         want_received={} sent_sha={} peer_received_sha={} received_sha={} peer_sent_sha={} \
         write_blocked={} blocked_ms={} peer_write_blocked={} slowest_ms={} seconds={:.1} \
         mib_per_s={:.1}",
        o.tag,
        o.conns,
        o.conns - errors,
        errors,
        connected.load(Ordering::SeqCst),
        o.ports.len(),
        sent.bytes,
        received,
        o.bytes * o.conns as u64,
        down * o.conns as u64,
        a,
        b,
        c,
        d,
        sent.blocked,
        sent.blocked_time.as_millis(),
        peer_blocked,
        slowest.as_millis(),
        secs,
        total / secs.max(0.001) / (1024.0 * 1024.0)
    );
    Ok(errors == 0)
}

/// Sends a header with a wrong magic: the server must close the connection without a trailer.
fn bad_header(o: &Opts) -> Result<bool> {
    let port = *o
        .ports
        .first()
        .ok_or_else(|| err!("usage: --port is required"))?;
    let c = dial(o, port)?;
    set_timeouts(&c, o.io_timeout)?;
    let mut junk = Header {
        up: 1,
        down: 1,
        seed: 0,
        slow_ms: 0,
    }
    .encode();
    junk[..4].copy_from_slice(b"JUNK");
    debug_assert_eq!(junk.len(), HEADER_LEN);
    use std::os::fd::AsFd;
    send_all(c.as_fd(), &junk, o.io_timeout, &mut SendStats::default())?;
    // The server answers nothing and closes: EOF (or a reset) without trailer bytes.
    let mut buf = [0u8; TRAILER_LEN];
    let (got, how) = match recv_some(c.as_fd(), &mut buf, o.io_timeout) {
        Ok(0) => (0, "closed"),
        Ok(n) => (n, "answered"),
        Err(e) if e.0.contains("ECONNRESET") => (0, "reset"),
        Err(e) => return Err(err!("waiting for the server to close: {e}")),
    };
    let rejected = got == 0;
    println!(
        "{}: bad-header rejected={} server={how} reply_bytes={got}",
        o.tag,
        if rejected { "yes" } else { "no" }
    );
    Ok(rejected)
}
