//! [`HostCreate`]: Create's steps on the real host ([`CreateHost`]): containerd's rootfs
//! mounts, the sandbox's state directory, the share (`crate::share`), the pod network
//! (`crate::network`), the host cgroup (`crate::host_cgroup`) and the VM
//! ([`Sandbox::start`]).

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use async_trait::async_trait;
use containerd_shim_protos::api;
use tracing::info;

use super::resources::{CreateHost, Rootfs, Undo};
use crate::{
    bundle::unmount,
    config::Config,
    error::{ShimError, ShimResult},
    host_cgroup::{self, HostCgroup, SandboxCgroup},
    network::PodNetwork,
    sandbox::{Sandbox, SandboxPaths},
    share::{Share, SharedBind},
};

/// One Create on this host: the request, what was read for it, and the sandbox it goes in
/// (its own, or its pod's).
pub(super) struct HostCreate<'a> {
    /// The request.
    pub req: &'a api::CreateTaskRequest,
    /// The container's OCI spec.
    pub spec: &'a oci_spec::runtime::Spec,
    /// The bundle directory.
    pub bundle: &'a Path,
    /// The configuration (with the spec's annotations applied).
    pub config: &'a Config,
    /// The sandbox's id (the container's own for a new VM).
    pub sandbox_id: &'a str,
    /// The sandbox's files.
    pub paths: SandboxPaths,
    /// Whether a new VM is a pod's (later containers may join it).
    pub is_pod: bool,
    /// The host bind mounts to share.
    pub binds: &'a [SharedBind],
}

impl HostCreate<'_> {
    fn id(&self) -> &str {
        &self.req.id
    }
}

#[async_trait]
impl CreateHost for HostCreate<'_> {
    type Vm = Sandbox;
    type Net = PodNetwork;
    type Cgroup = Arc<SandboxCgroup>;

    fn rootfs(&self) -> ShimResult<Rootfs> {
        if self.req.rootfs.is_empty() {
            let root = self
                .spec
                .root()
                .as_ref()
                .map(|r| r.path().clone())
                .unwrap_or_else(|| PathBuf::from("rootfs"));
            return Ok(Rootfs::Spec(self.bundle.join(root)));
        }
        let target = self.bundle.join("rootfs");
        std::fs::create_dir_all(&target)
            .map_err(|e| ShimError::Failed(format!("create {}: {e}", target.display())))?;
        Ok(Rootfs::MountPoint(target))
    }

    async fn mount_rootfs(&self, target: &Path) -> ShimResult<()> {
        for m in &self.req.rootfs {
            containerd_shim::asynchronous::util::mount_rootfs(m, target)
                .await
                .map_err(|e| {
                    ShimError::Failed(format!(
                        "mount {} rootfs on {}: {e}",
                        m.type_,
                        target.display()
                    ))
                })?;
        }
        Ok(())
    }

    fn unmount_rootfs(&self, target: &Path) -> Undo {
        let t = target.to_path_buf();
        Undo::new(
            format!("unmount {}", t.display()),
            async move { unmount(&t) },
        )
    }

    fn make_state_dirs(&self) -> ShimResult<()> {
        let paths = &self.paths;
        std::fs::create_dir_all(&paths.state_dir)
            .map_err(|e| ShimError::Failed(format!("create {}: {e}", paths.state_dir.display())))?;
        let console_dir = paths.console_log.parent().unwrap_or(Path::new("/"));
        crate::sandbox::create_console_dir(console_dir)
            .map_err(|e| ShimError::Failed(format!("create {} (0700): {e}", console_dir.display())))
    }

    fn remove_state_dirs(&self) -> Undo {
        let p = self.paths.clone();
        let keep = self.config.file.runtime.debug;
        Undo::new(format!("remove {}", p.state_dir.display()), async move {
            p.remove(keep)
        })
    }

    fn share_in_new_sandbox(&self, rootfs: &Path) -> ShimResult<()> {
        // The share (removed with the state directory), with the container in it.
        let t0 = std::time::Instant::now();
        let share = Share::create(&self.paths.state_dir).map_err(|e| {
            ShimError::Failed(format!("sandbox {}: the share: {e}", self.sandbox_id))
        })?;
        add_to_share(&share, self.id(), rootfs, self.binds)?;
        info!(
            id = self.id(),
            binds = self.binds.len(),
            "root file system and bind mounts shared in {:?}",
            t0.elapsed()
        );
        Ok(())
    }

    fn share_in_pod(&self, rootfs: &Path) -> ShimResult<()> {
        add_to_share(&self.paths.share(), self.id(), rootfs, self.binds)
    }

    fn unshare_from_pod(&self) -> Undo {
        let share = self.paths.share();
        let cid = self.id().to_string();
        Undo::new(
            format!("remove container {cid} from the share"),
            async move { share.remove_container(&cid) },
        )
    }

    async fn setup_network(&self) -> ShimResult<Option<PodNetwork>> {
        // Pod networking: a network namespace named by path (CRI: the CNI netns) gets a tap
        // wired to its eth0, and the VM that interface's configuration.
        match crate::network::netns_path(self.spec) {
            Some(ns) => Ok(Some(PodNetwork::setup(&ns).await.map_err(|e| {
                ShimError::Precondition(format!("container {}: {e}", self.id()))
            })?)),
            None => Ok(None),
        }
    }

    async fn teardown_network(&self, net: PodNetwork) -> Result<(), String> {
        net.teardown().await
    }

    fn enter_cgroup(&self) -> ShimResult<Option<Arc<SandboxCgroup>>> {
        // The host cgroup: the shim moves in, virtiofsd and the VMM are born there.
        enter_host_cgroup(
            self.config,
            self.spec,
            self.sandbox_id,
            &self.paths.state_dir,
        )
    }

    fn leave_cgroup(&self, cg: &Arc<SandboxCgroup>) -> Undo {
        let cg = cg.clone();
        Undo::new(
            format!("leave host cgroup {}", cg.cgroup.dir().display()),
            async move {
                tokio::task::spawn_blocking(move || cg.leave(Duration::from_secs(5)))
                    .await
                    .map_err(|e| e.to_string())?
            },
        )
    }

    async fn boot(
        &self,
        net: Option<PodNetwork>,
        cgroup: Option<Arc<SandboxCgroup>>,
    ) -> ShimResult<Arc<Sandbox>> {
        let sandbox = Sandbox::start(
            self.config,
            self.sandbox_id,
            self.paths.clone(),
            self.is_pod,
            net,
            cgroup,
        )
        .await
        .map_err(|e| ShimError::Failed(e.0))?;
        Ok(Arc::new(sandbox))
    }
}

/// Creates the sandbox's host cgroup (see `crate::host_cgroup`) and moves the shim into it,
/// when `[cgroup] sandbox_cgroup_only` is on.
fn enter_host_cgroup(
    config: &Config,
    spec: &oci_spec::runtime::Spec,
    sandbox_id: &str,
    state_dir: &Path,
) -> ShimResult<Option<Arc<SandboxCgroup>>> {
    let c = &config.file.cgroup;
    if !c.sandbox_cgroup_only {
        return Ok(None);
    }
    let root = Path::new(host_cgroup::CGROUP_ROOT);
    if !host_cgroup::is_cgroup2(root) {
        return Err(ShimError::Precondition(format!(
            "sandbox {sandbox_id}: {} is not a cgroup v2 hierarchy; kata-rs puts each sandbox's host processes in a cgroup v2 cgroup (set [cgroup] sandbox_cgroup_only = false to run without)",
            root.display()
        )));
    }
    let path = spec.linux().as_ref().and_then(|l| l.cgroups_path().clone());
    let rel = host_cgroup::sandbox_cgroup_path(
        path.as_deref().and_then(Path::to_str),
        &c.parent,
        sandbox_id,
    )
    .map_err(|e| ShimError::Invalid(format!("sandbox {sandbox_id}: {e}")))?;
    let cg = SandboxCgroup::enter(
        HostCgroup::new(root, host_cgroup::own_leaf(root, rel, sandbox_id)),
        state_dir,
    )
    .map_err(|e| ShimError::Failed(format!("sandbox {sandbox_id}: {e}")))?;
    info!(
        sandbox = sandbox_id,
        cgroup = %cg.cgroup.dir().display(),
        "shim in the sandbox's host cgroup"
    );
    Ok(Some(Arc::new(cg)))
}

/// Mounts container `id`'s root file system and bind-mount sources into the share. A
/// bind-mount failure (a source that vanished, a mount refused) is the user's error, named.
fn add_to_share(share: &Share, id: &str, rootfs: &Path, binds: &[SharedBind]) -> ShimResult<()> {
    share
        .add_container(id, rootfs, binds)
        .map_err(|e| ShimError::Precondition(format!("container {id}: {e}")))
}
