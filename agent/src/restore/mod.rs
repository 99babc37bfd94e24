//! AfterRestore (docs/templates.md): a VM restored from a template becomes this sandbox's.
//!
//! The steps, in this order, each behind [`RestoreSys`] (the real calls in [`sys`], a
//! recording fake in the tests):
//! 0. clock, when the request has one: `CLOCK_REALTIME` set as SetGuestDateTime sets it (the
//!    template's clock stood still from its save to this restore);
//! 1. entropy: the host's bytes written with `RNDADDENTROPY`, all of their bits credited, then
//!    `RNDRESEEDCRNG`: every clone of a template starts with the template's pool until here;
//! 2. hostname: `sethostname` (the guest's UTS namespace, which is the agent's);
//! 3. probe_devices: every `virtio-mmio.N` platform device without a driver is written to
//!    the virtio-mmio driver's `bind`; a placeholder slot the VMM left empty (DeviceID 0)
//!    answers ENODEV and stays unbound, which is not an error; the others are waited for
//!    (at most [`PROBE_TIMEOUT`]) until they and their virtio device have a driver;
//! 4. the share: virtio-fs `<share_tag>` mounted at the share directory as at boot, and the
//!    agent's [`Share`] becomes `Ready`, so CreateContainer finds it.
//!
//! Every failure is an error `AfterRestore: <step>: ...`, and nothing after a failed step is
//! tried. Each step is idempotent: a second call mounts nothing twice (the share is already
//! `Ready`) and finds no unbound device (empty `probed`).

use std::path::Path;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use kata_rs_protocol::agent::AfterRestoreRequest;

use crate::error::{AgentError, Result};
use crate::share::Share;

pub mod sys;
#[cfg(test)]
mod tests;

pub use sys::RealRestoreSys;

/// Fewest entropy bytes accepted (256 bits: what the kernel's crng needs to count as seeded).
pub const ENTROPY_MIN: usize = 32;
/// Most entropy bytes accepted (4096 bits: a bound on the request; the crng needs 256).
pub const ENTROPY_MAX: usize = 512;
/// Longest hostname (the kernel's `HOST_NAME_MAX`).
pub const HOSTNAME_MAX: usize = 64;
/// Longest virtio-fs tag (the device's config field, as on the VMM's `--fs tag=`).
pub const TAG_MAX: usize = 36;
/// How long probe_devices waits for the rebound devices to have their drivers.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the wait looks again.
const POLL: Duration = Duration::from_millis(10);

/// What writing a device's name to the driver's `bind` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BindOutcome {
    /// The driver took the device (or it already had a driver: EBUSY).
    Attached,
    /// ENODEV: the slot is an empty placeholder (DeviceID 0), or the device is gone.
    Empty,
}

/// Whether a rebound device is usable yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Binding {
    /// The platform device and its virtio device have their drivers.
    Ready,
    /// Not yet: what is missing.
    Waiting(String),
}

/// The system calls of AfterRestore. Errors are the failed call and its errno text.
pub trait RestoreSys {
    /// `clock_settime(CLOCK_REALTIME)` to `sec` s and `usec` µs (ranges checked before).
    fn set_clock(&self, sec: i64, usec: i64) -> std::result::Result<(), String>;
    /// `RNDADDENTROPY` of `bytes`, crediting `8 * bytes.len()` bits.
    fn add_entropy(&self, bytes: &[u8]) -> std::result::Result<(), String>;
    /// `RNDRESEEDCRNG`.
    fn reseed_crng(&self) -> std::result::Result<(), String>;
    /// `sethostname(name)`.
    fn set_hostname(&self, name: &str) -> std::result::Result<(), String>;
    /// The `virtio-mmio.N` platform devices without a `driver` link.
    fn unbound_devices(&self) -> std::result::Result<Vec<String>, String>;
    /// Writes `device` to the virtio-mmio driver's `bind`.
    fn bind(&self, device: &str) -> std::result::Result<BindOutcome, String>;
    /// Whether `device` (bound a moment ago) is usable.
    fn binding(&self, device: &str) -> std::result::Result<Binding, String>;
    /// `mount -t virtiofs tag dir` (nosuid, nodev), as at boot.
    fn mount_share(&self, tag: &str, dir: &Path) -> std::result::Result<(), String>;
}

/// Checks every field before anything acts; errors are INVALID_ARGUMENT naming the step.
pub fn validate(req: &AfterRestoreRequest) -> Result<()> {
    if let Some(c) = req.clock.as_ref() {
        crate::service::check_time(c.sec, c.usec)
            .map_err(|e| AgentError::invalid(format!("AfterRestore: clock: {e}")))?;
    }
    let n = req.entropy.len();
    if !(ENTROPY_MIN..=ENTROPY_MAX).contains(&n) {
        return Err(AgentError::invalid(format!(
            "AfterRestore: entropy: {n} bytes; {ENTROPY_MIN}..={ENTROPY_MAX} are needed"
        )));
    }
    if !req.hostname.is_empty() {
        check_hostname(&req.hostname)
            .map_err(|e| AgentError::invalid(format!("AfterRestore: hostname: {e}")))?;
    }
    if !req.share_tag.is_empty() {
        check_tag(&req.share_tag)
            .map_err(|e| AgentError::invalid(format!("AfterRestore: share: {e}")))?;
    }
    Ok(())
}

/// A hostname: 1..=64 bytes of dot-separated RFC 1123 labels (ASCII letters, digits and
/// `-`, a label neither empty nor starting or ending with `-`). Dots are allowed because a
/// pod's hostname is its name, which may be a DNS subdomain.
pub fn check_hostname(name: &str) -> std::result::Result<(), String> {
    if name.is_empty() || name.len() > HOSTNAME_MAX {
        return Err(format!(
            "{:?} is {} bytes; 1..={HOSTNAME_MAX} are allowed",
            truncated(name),
            name.len()
        ));
    }
    for label in name.split('.') {
        let ok = !label.is_empty()
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-');
        if !ok {
            return Err(format!(
                "{name:?} is not a hostname (dot-separated RFC 1123 labels: letters, digits and \
                 '-', no empty label, no '-' at a label's start or end)"
            ));
        }
    }
    Ok(())
}

/// A virtio-fs tag: 1..=36 bytes of printable ASCII other than space and comma (the rule of
/// the VMM's `--fs tag=` and of the kernel command line's `kata_rs.share=`).
pub fn check_tag(tag: &str) -> std::result::Result<(), String> {
    let ok = !tag.is_empty()
        && tag.len() <= TAG_MAX
        && tag.bytes().all(|b| b.is_ascii_graphic() && b != b',');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid virtio-fs tag {:?} (1-{TAG_MAX} printable ASCII characters, no space or comma)",
            truncated(tag)
        ))
    }
}

/// At most 80 characters of untrusted text for an error message.
fn truncated(s: &str) -> String {
    s.chars().take(80).collect()
}

fn step(name: &str) -> impl Fn(String) -> AgentError + '_ {
    move |e| AgentError::internal(format!("AfterRestore: {name}: {e}"))
}

/// Runs the steps of `req` in order on `sys`: the share goes to `share_dir` and `share`
/// records it. Returns the devices that now have a driver (probe_devices), in slot order.
pub fn run(
    sys: &dyn RestoreSys,
    req: &AfterRestoreRequest,
    share: &RwLock<Share>,
    share_dir: &Path,
    probe_timeout: Duration,
) -> Result<Vec<String>> {
    validate(req)?;
    if let Some(c) = req.clock.as_ref() {
        sys.set_clock(c.sec, c.usec)
            .map_err(|e| step("clock")(format!("clock_settime: {e}")))?;
    }
    sys.add_entropy(&req.entropy)
        .map_err(|e| step("entropy")(format!("RNDADDENTROPY: {e}")))?;
    sys.reseed_crng()
        .map_err(|e| step("entropy")(format!("RNDRESEEDCRNG: {e}")))?;
    if !req.hostname.is_empty() {
        sys.set_hostname(&req.hostname)
            .map_err(|e| step("hostname")(format!("sethostname {:?}: {e}", req.hostname)))?;
    }
    let probed = if req.probe_devices {
        probe_devices(sys, probe_timeout).map_err(step("probe_devices"))?
    } else {
        Vec::new()
    };
    if !req.share_tag.is_empty() {
        mount_share(sys, &req.share_tag, share, share_dir)?;
    }
    Ok(probed)
}

/// Step 3: rebinds every unbound virtio-mmio device and waits for the ones a driver took.
fn probe_devices(
    sys: &dyn RestoreSys,
    timeout: Duration,
) -> std::result::Result<Vec<String>, String> {
    let mut unbound = sys.unbound_devices()?;
    unbound.sort_by_key(|d| slot_order(d));
    let mut attached = Vec::new();
    for d in unbound {
        match sys.bind(&d).map_err(|e| format!("bind {d}: {e}"))? {
            BindOutcome::Attached => attached.push(d),
            BindOutcome::Empty => tracing::debug!("AfterRestore: {d} is an empty slot"),
        }
    }
    let deadline = Instant::now() + timeout;
    for d in &attached {
        loop {
            match sys.binding(d).map_err(|e| format!("{d}: {e}"))? {
                Binding::Ready => break,
                Binding::Waiting(why) if Instant::now() >= deadline => {
                    return Err(format!("{d}: {why} after {} ms", timeout.as_millis()))
                }
                Binding::Waiting(_) => std::thread::sleep(POLL),
            }
        }
    }
    Ok(attached)
}

/// `virtio-mmio.10` after `virtio-mmio.9`: by the number, then by the name.
fn slot_order(device: &str) -> (u64, String) {
    let n = device
        .rsplit_once('.')
        .and_then(|(_, n)| n.parse().ok())
        .unwrap_or(u64::MAX);
    (n, device.to_string())
}

/// Step 4: mounts the share unless it is already `Ready`, and records the outcome so that
/// CreateContainer reports it as it reports a boot-time mount.
fn mount_share(sys: &dyn RestoreSys, tag: &str, share: &RwLock<Share>, dir: &Path) -> Result<()> {
    let mut s = share.write().unwrap_or_else(|e| e.into_inner());
    if let Share::Ready { dir } = &*s {
        tracing::debug!("AfterRestore: the share is already at {}", dir.display());
        return Ok(());
    }
    match sys.mount_share(tag, dir) {
        Ok(()) => {
            *s = Share::Ready {
                dir: dir.to_path_buf(),
            };
            Ok(())
        }
        Err(error) => {
            let msg = format!(
                "AfterRestore: share: mount virtio-fs {tag:?} at {}: {error}",
                dir.display()
            );
            *s = Share::Failed {
                tag: tag.to_string(),
                dir: dir.to_path_buf(),
                error,
            };
            Err(AgentError::internal(msg))
        }
    }
}
