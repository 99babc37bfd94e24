//! VM templates (`[factory] template = true`, docs/templates.md): a sandbox's VM starts
//! from a saved VM of its configuration (`kata-vmm --restore`) instead of booting.
//!
//! - The key ([`TemplateKey`]) hashes what makes the VM: kernel, guest image and kata-vmm
//!   identities, `kernel_params`, memory, vCPUs. One directory per key in
//!   `factory.template_dir` ([`store`]).
//! - No template for the key: the sandbox boots cold as without templates, and a template is
//!   made in the background ([`make`]: one at a time per key, across shims, by a lock file).
//! - A template: the VM is restored with the sandbox's devices ([`restore`]). Any failure
//!   there is a warning naming the cause, the template is removed, and the sandbox boots
//!   cold: a template never adds a way to fail.

mod key;
mod make;
mod restore;
mod store;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tracing::{info, warn};

use crate::config::Config;
use crate::host_cgroup::HostCgroup;

pub use key::TemplateKey;
pub use make::{make, Made};
pub use restore::{restore, Restored, API_SOCKET_FILE, ENTROPY_BYTES};
pub use store::{find, read_cid, remove_entry, remove_stale, CID_FILE, MEMORY_FILE, STATE_FILE};

/// Empty virtio-mmio slots of a template VM, which a restore fills with the sandbox's own
/// devices (the pod's tap, up to two more; the share has a slot of its own, `--fs-slot`).
pub const PLACEHOLDER_SLOTS: u8 = 3;

/// Starts a sandbox's VM: with templates off, `cold()`. With them on, `restore(dir)` when
/// the key's template exists; if that fails (or the template is unusable), the template is
/// removed, a warning names the cause, and `cold()` runs. After a cold boot in template
/// mode `make_later` is asked to make the key's template. Logs which path was taken, at
/// info: `sandbox started from template KEY in N ms` or `sandbox started by a cold boot in
/// N ms` (templates off too: the bench compares the two).
pub async fn start_sandbox<T, E, RF, CF>(
    config: &Config,
    id: &str,
    restore: impl FnOnce(PathBuf) -> RF,
    cold: impl FnOnce() -> CF,
    make_later: impl FnOnce(&Config, TemplateKey),
) -> Result<T, E>
where
    RF: Future<Output = Result<T, String>>,
    CF: Future<Output = Result<T, E>>,
{
    let f = &config.file.factory;
    if !f.template {
        let t0 = Instant::now();
        let v = cold().await?;
        info!(
            sandbox = id,
            "sandbox started by a cold boot in {} ms (templates off)",
            t0.elapsed().as_millis()
        );
        return Ok(v);
    }
    let t0 = Instant::now();
    let key = match TemplateKey::of(&config.file.hypervisor, PLACEHOLDER_SLOTS) {
        Ok(k) => k,
        Err(e) => {
            warn!(
                sandbox = id,
                "VM templates: no template key ({e}); cold boot"
            );
            return cold().await;
        }
    };
    let root = &f.template_dir;
    let failed = match find(root, &key) {
        Ok(Some(dir)) => match restore(dir).await {
            Ok(v) => {
                info!(
                    sandbox = id,
                    "sandbox started from template {key} in {} ms",
                    t0.elapsed().as_millis()
                );
                return Ok(v);
            }
            Err(e) => Some(e),
        },
        Ok(None) => None,
        Err(e) => Some(format!("unusable: {e}")),
    };
    if let Some(e) = failed {
        let removed = match remove_entry(root, &key.name) {
            Ok(()) => "removed".to_string(),
            Err(r) => format!("could not be removed: {r}"),
        };
        warn!(
            sandbox = id,
            "template {key} failed, {removed}; cold boot instead: {e}"
        );
    }
    let t1 = Instant::now();
    let v = cold().await?;
    info!(
        sandbox = id,
        "sandbox started by a cold boot in {} ms (template mode, key {key})",
        t1.elapsed().as_millis()
    );
    make_later(config, key);
    Ok(v)
}

/// Templates being made by this shim.
static PENDING: Mutex<Vec<tokio::task::JoinHandle<()>>> = Mutex::new(Vec::new());

/// Makes `key`'s template on a task of its own (see [`make`]); the template VM moves into
/// `cgroup` when given (the cgroup the shim was started in: the template VM belongs to no
/// pod, and a pod's end must not kill it). The result is logged.
pub fn make_in_background(config: &Config, key: TemplateKey, cgroup: Option<HostCgroup>) {
    let config = config.clone();
    let task = tokio::spawn(async move {
        match make(&config, &key, cgroup.as_ref()).await {
            Ok(Made::Made(dir, took)) => info!(
                "template {key} made in {} ms: {}",
                took.as_millis(),
                dir.display()
            ),
            Ok(Made::Skipped(why)) => info!("template {key} not made: {why}"),
            Err(e) => warn!("template {key} could not be made: {e}"),
        }
    });
    let mut p = PENDING.lock().unwrap_or_else(|e| e.into_inner());
    p.retain(|t| !t.is_finished());
    p.push(task);
}

/// Waits up to `timeout` for the templates this shim is making (called before the shim
/// exits: a template VM dies with the shim, and its work directory would be left for the
/// next maker to remove).
pub async fn wait_pending(timeout: Duration) {
    let tasks = std::mem::take(&mut *PENDING.lock().unwrap_or_else(|e| e.into_inner()));
    let deadline = tokio::time::Instant::now() + timeout;
    for t in tasks {
        if tokio::time::timeout_at(deadline, t).await.is_err() {
            warn!("a template was still being made after {timeout:?}; abandoned");
        }
    }
}

#[cfg(test)]
mod tests;
