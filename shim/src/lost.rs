//! A lost shim's cleanup (the `delete` subcommand containerd runs when the shim process is
//! gone): kill what is left of the sandbox by its pid files, unmount and remove its files,
//! take a pod container out of its pod's share, remove the pod network.

use std::{
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use containerd_shim::DeleteResponse;
use containerd_shim_protos::protobuf::MessageField;

use crate::{
    bundle::{read_spec, unmount, CONFIG_PATH_FILE},
    config::{Config, ConfigFile, ConfigSource},
    host_cgroup::{self, HostCgroup},
    pod::{self, PodRole},
    sandbox::SandboxPaths,
    util::{timestamp, validate_id},
};

/// What a lost shim's cleanup needs from its bundle's config.json, read once.
#[derive(Debug, Default)]
pub struct LostBundle {
    /// The container's pod role, if its annotations give a valid one.
    role: Option<PodRole>,
    /// The network namespace the spec names, if any.
    netns: Option<PathBuf>,
}

impl LostBundle {
    /// Reads `<bundle>/config.json` (bounded); a missing or broken file gives nothing.
    pub fn read(id: &str, bundle: &Path) -> Self {
        let Ok(bytes) = read_spec(&bundle.join("config.json")) else {
            return Self::default();
        };
        let annotations = pod::annotations_of(&bytes);
        let spec = serde_json::from_slice::<oci_spec::runtime::Spec>(&bytes).ok();
        LostBundle {
            role: pod::pod_role(id, annotations.as_ref()).ok(),
            netns: spec.as_ref().and_then(crate::network::netns_path),
        }
    }
}

/// What the `delete` subcommand does after containerd lost a shim: kill the sandbox's VMM
/// if it is still there (pid file in the state directory), unmount `<bundle>/rootfs`,
/// remove the sandbox's files; report exit status 128+9.
pub fn cleanup_lost_shim(id: &str, bundle: &Path, lost: &LostBundle) -> DeleteResponse {
    // The configuration Create used: the ConfigPath it recorded in the bundle, if any.
    let recorded = std::fs::read_to_string(bundle.join(CONFIG_PATH_FILE))
        .ok()
        .filter(|p| p.len() <= 4096 && p.starts_with('/'));
    let loaded = match &recorded {
        Some(p) => Config::load_file(Path::new(p.trim_end()), crate::config::FROM_CONFIG_PATH),
        None => Config::load(),
    };
    let config = loaded.unwrap_or_else(|e| {
        eprintln!("kata-rs: {e}; cleaning up with the built-in defaults");
        Config {
            file: ConfigFile::default(),
            source: ConfigSource::Defaults,
        }
    });
    let mut pid = 0;
    if validate_id(id).is_ok() {
        let paths = SandboxPaths::new(&config, id);
        pid = crate::vmm::kill_leftover(&paths.state_dir, Duration::from_secs(5)).unwrap_or(0);
        crate::vmm::kill_leftover_named(
            &paths.state_dir,
            crate::virtiofsd::PID_FILE,
            Duration::from_secs(5),
        );
        // Whatever else is left in the sandbox's host cgroup dies with it.
        if let Some(cg) =
            HostCgroup::recorded(Path::new(host_cgroup::CGROUP_ROOT), &paths.state_dir)
        {
            if let Err(e) = cg.destroy(Duration::from_secs(5)) {
                eprintln!("kata-rs: {e}");
            }
        }
        if let Err(e) = paths.remove(config.file.runtime.debug) {
            eprintln!("kata-rs: {e}");
        }
        // A pod container: its entry in the pod sandbox's share, if that is still there.
        if let Some(PodRole::Container { sandbox_id }) = &lost.role {
            if validate_id(sandbox_id).is_ok() {
                let share = SandboxPaths::new(&config, sandbox_id).share();
                if let Err(e) = share.remove_container(id) {
                    eprintln!("kata-rs: {e}");
                }
            }
        }
    }
    let rootfs = bundle.join("rootfs");
    if let Err(e) = unmount(&rootfs) {
        eprintln!("kata-rs: unmount {}: {e}", rootfs.display());
    }
    DeleteResponse {
        pid,
        exit_status: 128 + 9,
        exited_at: MessageField::some(timestamp(SystemTime::now())),
        ..Default::default()
    }
}

/// After a lost shim (the VMM is gone by now): removes the pod network the sandbox made (the
/// tap and the tc qdiscs) in the network namespace its spec names, if that still exists. Only
/// for the sandbox itself: containerd also runs `delete` for a pod container whose Create
/// failed while the pod's VM lives on, and the network is the sandbox's.
pub async fn cleanup_lost_network(id: &str, lost: &LostBundle) {
    if !matches!(lost.role, Some(PodRole::Sandbox) | Some(PodRole::Single)) {
        return;
    }
    let Some(netns) = &lost.netns else {
        return;
    };
    if netns.exists() {
        if let Err(e) = crate::network::remove_from(netns).await {
            eprintln!("kata-rs: pod network of {id}: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lost_bundle_gives_its_role_and_network_namespace() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("config.json"),
            r#"{"ociVersion":"1.0.2","annotations":{"io.kubernetes.cri.container-type":"sandbox","io.kubernetes.cri.sandbox-id":"p1"},
                "linux":{"namespaces":[{"type":"pid"},{"type":"network","path":"/var/run/netns/cni-1"}]}}"#,
        )
        .unwrap();
        let lost = LostBundle::read("p1", dir.path());
        assert_eq!(lost.role, Some(PodRole::Sandbox));
        assert_eq!(lost.netns, Some(PathBuf::from("/var/run/netns/cni-1")));
        // A pod container of that sandbox: its role names the sandbox.
        std::fs::write(
            dir.path().join("config.json"),
            r#"{"ociVersion":"1.0.2","annotations":{"io.kubernetes.cri.container-type":"container","io.kubernetes.cri.sandbox-id":"p1"}}"#,
        )
        .unwrap();
        let lost = LostBundle::read("c1", dir.path());
        assert_eq!(
            lost.role,
            Some(PodRole::Container {
                sandbox_id: "p1".into()
            })
        );
        assert_eq!(lost.netns, None);
    }

    #[test]
    fn lost_shim_cleanup_without_anything_left_reports_137() {
        let dir = tempfile::tempdir().unwrap();
        let lost = LostBundle::read("c1", dir.path());
        assert!(lost.role.is_none() && lost.netns.is_none());
        let r = cleanup_lost_shim("c1", dir.path(), &lost);
        assert_eq!(r.exit_status, 137);
        assert_eq!(r.pid, 0);
        assert!(r.exited_at.is_some());
    }
}
