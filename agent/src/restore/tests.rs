//! AfterRestore's order, errors, bounds and idempotence through a recording fake, and the
//! agent's side of it (the share CreateContainer then finds, development mode refused).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use kata_rs_protocol::agent::{
    AfterRestoreRequest, CreateContainerRequest, SetGuestDateTimeRequest,
};
use ttrpc::Code;

use super::*;

/// A platform device of the fake.
#[derive(Clone)]
struct Dev {
    name: &'static str,
    /// An empty placeholder slot: bind answers ENODEV.
    empty: bool,
    /// Polls of `binding` before it is ready (u32::MAX: never).
    polls: u32,
    bound: bool,
}

fn dev(name: &'static str, polls: u32) -> Dev {
    Dev {
        name,
        empty: false,
        polls,
        bound: false,
    }
}

fn empty(name: &'static str) -> Dev {
    Dev {
        empty: true,
        ..dev(name, 0)
    }
}

/// Records each call; `fail` names the call that fails (with EPERM's text).
#[derive(Default)]
struct Fake {
    calls: Mutex<Vec<String>>,
    fail: Option<&'static str>,
    devices: Mutex<Vec<Dev>>,
}

impl Fake {
    fn with(devices: Vec<Dev>) -> Self {
        Self {
            devices: Mutex::new(devices),
            ..Default::default()
        }
    }
    fn failing(mut self, call: &'static str) -> Self {
        self.fail = Some(call);
        self
    }
    fn call(&self, name: &'static str, text: String) -> std::result::Result<(), String> {
        self.calls.lock().unwrap().push(text);
        match self.fail == Some(name) {
            true => Err("Operation not permitted".into()),
            false => Ok(()),
        }
    }
    fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }
}

impl RestoreSys for Fake {
    fn set_clock(&self, sec: i64, usec: i64) -> std::result::Result<(), String> {
        self.call("clock", format!("clock {sec}.{usec:06}"))
    }
    fn add_entropy(&self, bytes: &[u8]) -> std::result::Result<(), String> {
        self.call("add_entropy", format!("add_entropy {}", bytes.len()))
    }
    fn reseed_crng(&self) -> std::result::Result<(), String> {
        self.call("reseed", "reseed".into())
    }
    fn set_hostname(&self, name: &str) -> std::result::Result<(), String> {
        self.call("hostname", format!("hostname {name}"))
    }
    fn unbound_devices(&self) -> std::result::Result<Vec<String>, String> {
        self.call("scan", "scan".into())?;
        let d = self.devices.lock().unwrap();
        // Directory order: not slot order.
        Ok(d.iter()
            .rev()
            .filter(|d| !d.bound)
            .map(|d| d.name.to_string())
            .collect())
    }
    fn bind(&self, device: &str) -> std::result::Result<BindOutcome, String> {
        self.call("bind", format!("bind {device}"))?;
        let mut all = self.devices.lock().unwrap();
        let d = all.iter_mut().find(|d| d.name == device).unwrap();
        if d.empty {
            return Ok(BindOutcome::Empty);
        }
        d.bound = true;
        Ok(BindOutcome::Attached)
    }
    fn binding(&self, device: &str) -> std::result::Result<Binding, String> {
        self.call("binding", format!("binding {device}"))?;
        let mut all = self.devices.lock().unwrap();
        let d = all.iter_mut().find(|d| d.name == device).unwrap();
        if d.polls == 0 {
            return Ok(Binding::Ready);
        }
        d.polls = d.polls.saturating_sub(u32::from(d.polls != u32::MAX));
        Ok(Binding::Waiting("no driver bound".into()))
    }
    fn mount_share(&self, tag: &str, dir: &Path) -> std::result::Result<(), String> {
        self.call("mount", format!("mount {tag} {}", dir.display()))
    }
}

fn request() -> AfterRestoreRequest {
    AfterRestoreRequest {
        entropy: vec![7; 64],
        hostname: "pod-a".into(),
        share_tag: "kata-rs".into(),
        probe_devices: true,
        clock: Some(SetGuestDateTimeRequest {
            sec: 1_800_000_000,
            usec: 42,
            ..Default::default()
        })
        .into(),
        ..Default::default()
    }
}

const SECOND: Duration = Duration::from_secs(1);

fn run_on(fake: &Fake, req: &AfterRestoreRequest, share: &RwLock<Share>) -> Result<Vec<String>> {
    run(fake, req, share, Path::new("/share"), SECOND)
}

#[test]
fn steps_run_in_order_and_empty_slots_stay_unbound() {
    let fake = Fake::with(vec![
        dev("virtio-mmio.9", 2),
        dev("virtio-mmio.10", 0),
        empty("virtio-mmio.11"),
    ]);
    let share = RwLock::new(Share::Absent);
    let probed = run_on(&fake, &request(), &share).unwrap();
    assert_eq!(probed, ["virtio-mmio.9", "virtio-mmio.10"]);
    assert_eq!(
        fake.calls(),
        [
            "clock 1800000000.000042",
            "add_entropy 64",
            "reseed",
            "hostname pod-a",
            "scan",
            "bind virtio-mmio.9",
            "bind virtio-mmio.10",
            "bind virtio-mmio.11",
            "binding virtio-mmio.9",
            "binding virtio-mmio.9",
            "binding virtio-mmio.9",
            "binding virtio-mmio.10",
            "mount kata-rs /share",
        ]
    );
    assert_eq!(
        *share.read().unwrap(),
        Share::Ready {
            dir: PathBuf::from("/share")
        }
    );
}

#[test]
fn optional_steps_are_skipped() {
    let fake = Fake::with(vec![dev("virtio-mmio.3", 0)]);
    let share = RwLock::new(Share::Absent);
    let req = AfterRestoreRequest {
        entropy: vec![1; 32],
        ..Default::default()
    };
    assert!(run_on(&fake, &req, &share).unwrap().is_empty());
    assert_eq!(fake.calls(), ["add_entropy 32", "reseed"]);
    assert_eq!(*share.read().unwrap(), Share::Absent);
}

/// Each failing call: the error names its step and the call, nothing after it is tried.
#[test]
fn each_failure_names_its_step_and_stops_there() {
    let cases = [
        (
            "clock",
            "AfterRestore: clock: clock_settime: Operation not permitted",
            1,
        ),
        (
            "add_entropy",
            "AfterRestore: entropy: RNDADDENTROPY: Operation not permitted",
            2,
        ),
        (
            "reseed",
            "AfterRestore: entropy: RNDRESEEDCRNG: Operation not permitted",
            3,
        ),
        (
            "hostname",
            "AfterRestore: hostname: sethostname \"pod-a\": Operation not permitted",
            4,
        ),
        (
            "scan",
            "AfterRestore: probe_devices: Operation not permitted",
            5,
        ),
        (
            "bind",
            "AfterRestore: probe_devices: bind virtio-mmio.4: Operation not permitted",
            6,
        ),
        (
            "binding",
            "AfterRestore: probe_devices: virtio-mmio.4: Operation not permitted",
            7,
        ),
        (
            "mount",
            "AfterRestore: share: mount virtio-fs \"kata-rs\" at /share: Operation not permitted",
            8,
        ),
    ];
    for (call, message, n) in cases {
        let fake = Fake::with(vec![dev("virtio-mmio.4", 0)]).failing(call);
        let share = RwLock::new(Share::Absent);
        let e = run_on(&fake, &request(), &share).unwrap_err();
        assert_eq!(e.code, Code::INTERNAL, "{call}");
        assert_eq!(e.message, message, "{call}");
        assert_eq!(fake.calls().len(), n, "{call}: {:?}", fake.calls());
        let want = match call {
            // CreateContainer then names the tag and the mount's error.
            "mount" => Share::Failed {
                tag: "kata-rs".into(),
                dir: PathBuf::from("/share"),
                error: "Operation not permitted".into(),
            },
            _ => Share::Absent,
        };
        assert_eq!(*share.read().unwrap(), want, "{call}");
    }
}

#[test]
fn the_wait_for_a_driver_is_bounded() {
    let fake = Fake::with(vec![dev("virtio-mmio.4", u32::MAX)]);
    let share = RwLock::new(Share::Absent);
    let t = Instant::now();
    let e = run(
        &fake,
        &request(),
        &share,
        Path::new("/share"),
        Duration::from_millis(50),
    )
    .unwrap_err();
    assert!(t.elapsed() < SECOND, "{:?}", t.elapsed());
    assert_eq!(
        e.message,
        "AfterRestore: probe_devices: virtio-mmio.4: no driver bound after 50 ms"
    );
    assert!(!fake.calls().iter().any(|c| c.starts_with("mount")));
}

/// A second call (or one on a VM that was not restored): the share is not mounted again,
/// no device is unbound, `probed` is empty; entropy and hostname are simply done again.
#[test]
fn a_second_call_mounts_nothing_and_probes_nothing() {
    let fake = Fake::with(vec![dev("virtio-mmio.4", 0)]);
    let share = RwLock::new(Share::Absent);
    assert_eq!(
        run_on(&fake, &request(), &share).unwrap(),
        ["virtio-mmio.4"]
    );
    fake.calls.lock().unwrap().clear();
    assert!(run_on(&fake, &request(), &share).unwrap().is_empty());
    assert_eq!(
        fake.calls(),
        [
            "clock 1800000000.000042",
            "add_entropy 64",
            "reseed",
            "hostname pod-a",
            "scan"
        ]
    );
    // A failed mount is tried again.
    let fake = Fake::default().failing("mount");
    let share = RwLock::new(Share::Absent);
    run_on(&fake, &request(), &share).unwrap_err();
    let fake = Fake::default();
    run_on(&fake, &request(), &share).unwrap();
    assert!(matches!(*share.read().unwrap(), Share::Ready { .. }));
}

#[test]
fn requests_are_checked_before_anything_acts() {
    let bad = |f: &dyn Fn(&mut AfterRestoreRequest), step: &str| {
        let mut req = request();
        f(&mut req);
        let fake = Fake::default();
        let e = run_on(&fake, &req, &RwLock::new(Share::Absent)).unwrap_err();
        assert_eq!(e.code, Code::INVALID_ARGUMENT, "{e}");
        assert!(
            e.message.starts_with(&format!("AfterRestore: {step}: ")),
            "{e}"
        );
        assert!(fake.calls().is_empty(), "{:?}", fake.calls());
        e.message
    };
    for n in [0, 31, 513, 4096] {
        let m = bad(&|r| r.entropy = vec![0; n], "entropy");
        assert_eq!(
            m,
            format!("AfterRestore: entropy: {n} bytes; 32..=512 are needed")
        );
    }
    for h in [
        "-pod", "pod-", "a..b", ".a", "a.", "pod_a", "pod a", "pödä", "a\nb", "a/b",
    ] {
        let m = bad(&|r| r.hostname = h.into(), "hostname");
        assert!(m.contains("RFC 1123"), "{m}");
    }
    let m = bad(&|r| r.hostname = "a".repeat(65), "hostname");
    assert!(m.contains("65 bytes; 1..=64"), "{m}");
    for t in ["a b", "a,b", "t\u{7f}", "tägg", "\n"] {
        let m = bad(&|r| r.share_tag = t.into(), "share");
        assert!(m.contains("1-36 printable ASCII"), "{m}");
    }
    bad(&|r| r.share_tag = "t".repeat(37), "share");
    for (sec, usec) in [(-1, 0), (253_402_300_800, 0), (0, 1_000_000), (0, -1)] {
        let m = bad(
            &|r| {
                r.clock.mut_or_insert_default().sec = sec;
                r.clock.mut_or_insert_default().usec = usec;
            },
            "clock",
        );
        assert!(m.contains("out of range"), "{m}");
    }

    for n in [32, 64, 512] {
        let mut r = request();
        r.entropy = vec![0; n];
        validate(&r).unwrap();
    }
    for h in [
        "a",
        "pod-a",
        "Pod-1.example.com",
        "0",
        &"a".repeat(63),
        "a-b.c-d",
    ] {
        check_hostname(h).unwrap_or_else(|e| panic!("{h}: {e}"));
    }
    check_hostname(&format!("{}.b", "a".repeat(62))).unwrap();
    for t in ["kata-rs", "!~", &"t".repeat(36)] {
        check_tag(t).unwrap_or_else(|e| panic!("{t}: {e}"));
    }
}

/// The agent: a development-mode agent (not PID 1) checks and then refuses; one acting as the
/// guest's init mounts the share AfterRestore names, and CreateContainer then finds it.
#[tokio::test]
async fn the_agent_records_the_share_for_create_container() {
    use crate::container::fake::FakeSys;
    let agent = |share: Share| {
        let (tx, _rx) = tokio::sync::mpsc::channel(1);
        crate::service::Agent::with_sys(Arc::new(FakeSys::default()), None, share, tx)
    };
    assert_ne!(std::process::id(), 1);
    let dev_mode = agent(Share::Absent);
    let e = dev_mode.after_restore(request()).await.unwrap_err();
    assert_eq!(e.code, Code::FAILED_PRECONDITION);
    assert!(e.message.contains("not the guest's init"), "{e}");
    let mut short = request();
    short.entropy.truncate(8);
    let e = dev_mode.after_restore(short).await.unwrap_err();
    assert_eq!(e.code, Code::INVALID_ARGUMENT);

    let fake = Arc::new(Fake::with(vec![empty("virtio-mmio.2")]));
    let guest = agent(Share::Absent).with_restore_sys(fake.clone());
    let create = CreateContainerRequest {
        container_id: "c1".into(),
        rootfs_path: "/run/kata-rs/shared/c1/rootfs".into(),
        oci_spec: crate::plan::test_spec::BASIC.into(),
        ..Default::default()
    };
    let e = guest.plan_create(&create).unwrap_err();
    assert!(e.message.contains("no sandbox share"), "{e}");
    assert!(guest.after_restore(request()).await.unwrap().is_empty());
    assert!(fake
        .calls()
        .contains(&"mount kata-rs /run/kata-rs/shared".to_string()));
    guest.plan_create(&create).unwrap();
    fake.calls.lock().unwrap().clear();
    guest.after_restore(request()).await.unwrap();
    assert!(!fake.calls().iter().any(|c| c.starts_with("mount")));
}
