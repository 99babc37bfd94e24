//! Launching a sandbox's processes: its virtiofsd, and its VMM (for a cold boot and for a
//! restore from a template alike: state directory 0700, a fresh console log, the VMM
//! spawned, its pid file), and the messages about a VM that did not start.

use std::path::Path;

use super::{SandboxPaths, StartError};
use crate::{
    config::Config,
    util::file_tail,
    virtiofsd::{self, Virtiofsd, VirtiofsdSpec},
    vmm::{self, Vmm, VmmExit, VmmSpec},
};

/// Starts the VMM `spec` describes for the sandbox at `paths`: its state directory set to
/// 0700 (the agent's socket lives there), a fresh console log (so its tail is this VM's),
/// the VMM spawned (jailed, in the pod's network namespace if `spec.net` names one) and its
/// pid file written. On failure the VMM, if started, is killed and reaped.
pub async fn launch(spec: &VmmSpec, paths: &SandboxPaths) -> Result<Vmm, StartError> {
    // The agent is reached through the VMM's socket in the state directory: only root may
    // enter it (the socket itself is 0600 too).
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&paths.state_dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| StartError(format!("chmod 0700 {}: {e}", paths.state_dir.display())))?;
    }
    // A fresh console log for every boot, so its tail is this boot's: made here, 0600 and
    // exclusively (never through a symlink or into a file someone placed there), then
    // opened by kata-vmm (O_NOFOLLOW).
    let _ = std::fs::remove_file(&paths.console_log);
    create_console_log(&paths.console_log).map_err(|e| {
        StartError(format!(
            "cannot create the console log {}: {e}",
            paths.console_log.display()
        ))
    })?;
    let vmm = Vmm::spawn(spec).map_err(|e| StartError(e.to_string()))?;
    if let Err(e) = vmm::write_pid_file(&paths.state_dir, vmm.pid()) {
        vmm.kill_and_wait().await;
        return Err(StartError(format!(
            "cannot write {}: {e}",
            paths.state_dir.join(vmm::PID_FILE).display()
        )));
    }
    Ok(vmm)
}

/// Starts the sandbox's virtiofsd on its share (on a socket bound for it: the VMM may be
/// started at once) and records its pid.
pub async fn start_virtiofsd(
    config: &Config,
    paths: &SandboxPaths,
) -> Result<Virtiofsd, StartError> {
    let c = &config.file.shared_fs;
    let spec = VirtiofsdSpec {
        path: c.virtiofsd.clone(),
        shared_dir: paths.share().exported(),
        socket: paths.state_dir.join(virtiofsd::SOCKET_FILE),
        cache: c.cache.clone(),
    };
    let fs = Virtiofsd::start(&spec).map_err(StartError)?;
    if let Err(e) = crate::util::write_private(
        &paths.state_dir.join(virtiofsd::PID_FILE),
        format!("{}\n", fs.process.pid()).as_bytes(),
    ) {
        fs.kill().await;
        return Err(StartError(format!(
            "cannot write {}: {e}",
            paths.state_dir.join(virtiofsd::PID_FILE).display()
        )));
    }
    Ok(fs)
}

/// Creates an empty console log: mode 0600, `O_CREAT|O_EXCL|O_NOFOLLOW`.
pub fn create_console_log(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map(drop)
}

/// Makes the console log directory (and its parents) and sets it to 0700: console logs are
/// guest output, for root only.
pub fn create_console_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let m = std::fs::symlink_metadata(dir)?;
    if !m.is_dir() {
        return Err(std::io::Error::other("not a directory"));
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

/// `; last lines of the guest console (PATH):` and its last 15 lines, or that it is empty.
pub fn console_tail(path: &Path) -> String {
    let tail = file_tail(path, 15);
    if tail.is_empty() {
        format!("; the guest console log {} is empty", path.display())
    } else {
        format!(
            "; last lines of the guest console ({}):\n{tail}",
            path.display()
        )
    }
}

/// The message for a VMM that exited before its agent answered.
pub fn vmm_exit_message(
    vmm: &Path,
    exit: VmmExit,
    error_line: Option<&str>,
    console_log: &Path,
) -> String {
    let mut msg = format!("VMM {} {exit} before the agent answered", vmm.display());
    match error_line {
        Some(l) => msg.push_str(&format!(": {l}")),
        None => msg.push_str(" (it printed nothing on stderr)"),
    }
    // A panic (2), a guest that stopped by itself (0) or a silent VMM: the console says why.
    if matches!(exit, VmmExit::Code(0) | VmmExit::Code(2)) || error_line.is_none() {
        msg.push_str(&console_tail(console_log));
    }
    msg
}
