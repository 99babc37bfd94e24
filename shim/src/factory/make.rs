//! Making a template: a VM of the sandbox's configuration booted without per-sandbox
//! devices (no network, no disk; the share's virtio-fs device without a backend, bound by the
//! guest but not mounted) but with [`PLACEHOLDER_SLOTS`] empty slots for the others, paused
//! and saved once its agent answers `Check`, then stopped. Its files live in
//! `<template_dir>/.work-<key>/` (removed on every outcome); the snapshot is published by a
//! rename. The VMM is the shim's child (PR_SET_PDEATHSIG): it dies with the shim.

use std::path::Path;
use std::time::{Duration, Instant};

use kata_rs_protocol::control::{Client, Reply, Request, Response, VmState};

use super::{key::TemplateKey, store, PLACEHOLDER_SLOTS};
use crate::config::Config;
use crate::host_cgroup::HostCgroup;
use crate::vmm::{self, Vmm, VmmSpec};

/// How long the template VM runs on after its agent answered, before it is paused: the
/// Check connection ends in the guest too.
const SETTLE: Duration = Duration::from_millis(1000);
/// Saves of a template VM while vsock is busy (see `control`).
const BUSY_SAVES: u32 = 3;
/// Running time between two saves of a template VM while vsock is busy.
const BUSY_PAUSE: Duration = Duration::from_millis(500);
/// How long the control requests (pause, snapshot) may take each.
const CONTROL_TIMEOUT: Duration = Duration::from_secs(60);
/// Beyond the agent's dial timeout, how long saving the template VM may take.
const SAVE_TIMEOUT: Duration = Duration::from_secs(120);

/// What became of one attempt.
#[derive(Debug, PartialEq, Eq)]
pub enum Made {
    /// The template is at this path; the time it took.
    Made(std::path::PathBuf, Duration),
    /// Another shim holds the key's lock, or the template exists already.
    Skipped(&'static str),
}

/// Makes `key`'s template under `config`'s `factory.template_dir`, unless another shim is
/// making it or it exists. Leaves nothing but the published template behind; an error says
/// which step failed.
pub async fn make(
    config: &Config,
    key: &TemplateKey,
    cgroup: Option<&HostCgroup>,
) -> Result<Made, String> {
    let t0 = Instant::now();
    let root = config.file.factory.template_dir.clone();
    store::ensure_root(&root).map_err(|e| format!("template directory: {e}"))?;
    let Some(lock) =
        store::try_lock(&root, &key.name).map_err(|e| format!("lock of {key}: {e}"))?
    else {
        return Ok(Made::Skipped("another shim is making it"));
    };
    if store::find(&root, key).ok().flatten().is_some() {
        return Ok(Made::Skipped("it exists"));
    }
    let work = store::work_dir(&root, key);
    // A work directory left by a shim that died while making this key (we hold its lock).
    let _ = store::remove_entry(&root, &format!(".work-{}", key.name));
    let r = make_in(config, key, &work, cgroup).await;
    let _ = std::fs::remove_dir_all(&work);
    drop(lock);
    let dir = r?;
    for gone in store::remove_stale(&root, key) {
        tracing::info!("template {gone} removed (stale)");
    }
    Ok(Made::Made(dir, t0.elapsed()))
}

async fn make_in(
    config: &Config,
    key: &TemplateKey,
    work: &Path,
    cgroup: Option<&HostCgroup>,
) -> Result<std::path::PathBuf, String> {
    use std::os::unix::fs::DirBuilderExt;
    let h = &config.file.hypervisor;
    let snap = work.join("snap");
    let mkdir = |d: &Path| {
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(d)
            .map_err(|e| format!("create {}: {e}", d.display()))
    };
    mkdir(work)?;
    mkdir(&snap)?;
    let console = work.join("console.log");
    crate::sandbox::create_console_log(&console)
        .map_err(|e| format!("create {}: {e}", console.display()))?;
    let cid = vmm::random_cid();
    let jail_id = h.jail_id(cid);
    // The jailed VMM writes the snapshot as its own id.
    if let Some(id) = jail_id {
        std::os::unix::fs::lchown(&snap, Some(id), Some(id))
            .map_err(|e| format!("chown {}: {e}", snap.display()))?;
    }
    let api = work.join("api.sock");
    let uds = work.join(vmm::VSOCK_SOCKET_FILE);
    let spec = VmmSpec {
        jail_id,
        placeholder_slots: PLACEHOLDER_SLOTS,
        fs_slot: true,
        api_sock: Some(api.clone()),
        snapshot_root: Some(snap.clone()),
        // No `kata_rs.share=`: the share's device is bound at boot (`fs_slot`), the share is
        // mounted by AfterRestore.
        ..VmmSpec::for_config(
            config,
            cid,
            uds.clone(),
            console.clone(),
            h.kernel_params.trim().to_string(),
        )
    };
    let vm = Vmm::spawn(&spec).map_err(|e| e.to_string())?;
    let saved = match cgroup.map(|c| c.enter(vm.pid())).transpose() {
        Err(e) => Ok(Err(format!("the template VM's cgroup: {e}"))),
        Ok(_) => {
            tokio::time::timeout(
                config.dial_timeout() + SAVE_TIMEOUT,
                save(config, &vm, &uds, &api, &snap),
            )
            .await
        }
    };
    let exit = vm.kill_and_wait().await;
    match saved {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            let why = vm.error_line().await;
            return Err(match why {
                Some(l) => format!("{e} (template VMM {exit}: {l})"),
                None => e,
            });
        }
        Err(_) => {
            return Err(format!(
                "the template VM was not saved within {:?}",
                config.dial_timeout() + SAVE_TIMEOUT
            ))
        }
    }
    crate::util::write_private(&snap.join(store::CID_FILE), format!("{cid}\n").as_bytes())
        .map_err(|e| format!("recording the template VM's CID: {e}"))?;
    store::publish(&config.file.factory.template_dir, key, &snap)
        .map_err(|e| format!("publishing the template: {e}"))
}

/// Waits for the template VM's agent, then pauses and saves the VM into `snap`.
async fn save(
    config: &Config,
    vm: &Vmm,
    uds: &Path,
    api: &Path,
    snap: &Path,
) -> Result<(), String> {
    let ready = crate::agent::wait_ready(
        uds,
        kata_rs_protocol::AGENT_VSOCK_PORT,
        crate::agent::Tries::new(config.dial_timeout(), Duration::from_secs(2)),
        config.request_timeout(),
        vm.wait(),
    )
    .await;
    match ready {
        Ok((agent, _)) => drop(agent),
        Err(crate::agent::NotReady::VmmExited(e)) => {
            return Err(format!("the template VMM {e} before its agent answered"))
        }
        Err(crate::agent::NotReady::Timeout(last)) => {
            return Err(format!(
                "the template VM's agent did not answer within {:?}{}",
                config.dial_timeout(),
                last.map(|e| format!(" (last error: {e})"))
                    .unwrap_or_default()
            ))
        }
    }
    // The Check connection closes before the VM is saved: saved idle, a restore needs no vsock
    // transport reset (vmm/README.md, "Snapshot").
    tokio::time::sleep(SETTLE).await;
    let api = api.to_path_buf();
    let dir = snap.to_path_buf();
    tokio::task::spawn_blocking(move || control(&api, &dir))
        .await
        .map_err(|e| format!("control requests: {e}"))?
}

/// `pause`, then `snapshot {dir}` over the VMM's control socket. A save with a vsock host
/// connection still open ("vsock busy": the Check connection still closing on a slow host)
/// is made again after a resume and [`BUSY_PAUSE`], at most [`BUSY_SAVES`] times in all: each
/// restore of a busy save waits for the guest to handle a vsock transport reset.
fn control(api: &Path, dir: &Path) -> Result<(), String> {
    let mut c =
        Client::connect(api, CONTROL_TIMEOUT).map_err(|e| format!("control socket: {e}"))?;
    for save in 1..=BUSY_SAVES {
        match c.call(&Request::Pause {}) {
            Ok(Response::Ok(Reply::State(VmState::Paused))) => {}
            Ok(r) => return Err(format!("pause: {r}")),
            Err(e) => return Err(format!("pause: {e}")),
        }
        let what = match c.call(&Request::Snapshot {
            dir: dir.to_path_buf(),
        }) {
            Ok(Response::Ok(Reply::Snapshot(what))) => what,
            Ok(r) => return Err(format!("snapshot: {r}")),
            Err(e) => return Err(format!("snapshot: {e}")),
        };
        tracing::info!("template VM saved: {what}");
        if !what.contains("; vsock busy") || save == BUSY_SAVES {
            return Ok(());
        }
        match c.call(&Request::Resume {}) {
            Ok(Response::Ok(Reply::State(VmState::Running))) => {}
            Ok(r) => return Err(format!("resume: {r}")),
            Err(e) => return Err(format!("resume: {e}")),
        }
        std::thread::sleep(BUSY_PAUSE);
    }
    Ok(())
}
