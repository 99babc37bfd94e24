//! The steps of a Create, each followed by the rollback entry that undoes it: for a
//! container that is its own sandbox (rootfs, state directory, share, pod network, host
//! cgroup, VM, CreateContainer) and for a container joining its pod's running VM (rootfs,
//! its entry in the pod's share, CreateContainer).

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use containerd_shim::asynchronous::io::Stdio;
use containerd_shim_protos::api;
use tracing::{debug, info};

use super::{create::wants_terminal, TaskService};
use crate::{
    bundle::unmount,
    config::Config,
    container::Container,
    error::{ShimError, ShimResult},
    host_cgroup::{self, HostCgroup, SandboxCgroup},
    pod::PodRole,
    sandbox::{Sandbox, SandboxPaths},
    share::{Share, SharedBind},
    util::Rollback,
};

impl TaskService {
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn create_steps(
        &self,
        req: &api::CreateTaskRequest,
        config: &Config,
        spec: &oci_spec::runtime::Spec,
        spec_bytes: Vec<u8>,
        bundle: &Path,
        sandbox_id: &str,
        paths: SandboxPaths,
        role: PodRole,
        binds: &[SharedBind],
        rb: &mut Rollback,
    ) -> ShimResult<Arc<Container>> {
        let id = req.id.as_str();
        let terminal = wants_terminal(req, spec);
        let (rootfs, mounted) = prepare_rootfs(req, spec, bundle, rb).await?;

        // Sandbox files.
        std::fs::create_dir_all(&paths.state_dir)
            .map_err(|e| ShimError::Failed(format!("create {}: {e}", paths.state_dir.display())))?;
        let console_dir = paths.console_log.parent().unwrap_or(Path::new("/"));
        crate::sandbox::create_console_dir(console_dir).map_err(|e| {
            ShimError::Failed(format!("create {} (0700): {e}", console_dir.display()))
        })?;
        let p = paths.clone();
        let keep = config.file.runtime.debug;
        rb.push(
            format!("remove {}", paths.state_dir.display()),
            async move { p.remove(keep) },
        );
        // The share (removed with the state directory), with the container in it.
        let t0 = std::time::Instant::now();
        let share = Share::create(&paths.state_dir)
            .map_err(|e| ShimError::Failed(format!("sandbox {sandbox_id}: the share: {e}")))?;
        add_to_share(&share, id, &rootfs, binds)?;
        info!(
            id,
            binds = binds.len(),
            "root file system and bind mounts shared in {:?}",
            t0.elapsed()
        );

        // Pod networking: a network namespace named by path (CRI: the CNI netns) gets a tap
        // wired to its eth0, and the VM that interface's configuration.
        let net = match crate::network::netns_path(spec) {
            Some(ns) => Some(
                crate::network::PodNetwork::setup(&ns)
                    .await
                    .map_err(|e| ShimError::Precondition(format!("container {id}: {e}")))?,
            ),
            None => None,
        };

        // The host cgroup: the shim moves in, virtiofsd and the VMM are born there.
        let cgroup = enter_host_cgroup(config, spec, sandbox_id, &paths.state_dir)?;
        if let Some(cg) = &cgroup {
            let cg = cg.clone();
            rb.push(
                format!("leave host cgroup {}", cg.cgroup.dir().display()),
                async move {
                    tokio::task::spawn_blocking(move || cg.leave(Duration::from_secs(5)))
                        .await
                        .map_err(|e| e.to_string())?
                },
            );
        }

        // Boot the VM.
        let sandbox = Sandbox::start(
            config,
            sandbox_id,
            paths.clone(),
            role == PodRole::Sandbox,
            net,
            cgroup,
        )
        .await
        .map_err(|e| ShimError::Failed(e.0))?;
        let sandbox = Arc::new(sandbox);
        let sb = sandbox.clone();
        rb.push(format!("kill VMM {}", sandbox.vmm.pid()), async move {
            let e = sb.kill().await;
            debug!("VMM {e}");
            Ok(())
        });

        // The container.
        let sandbox_field = role.request_sandbox_id(id).to_string();
        create_in_guest(
            req,
            spec_bytes,
            terminal,
            sandbox,
            &sandbox_field,
            mounted,
            role,
        )
        .await
    }

    /// Creates a container in the running VM of its pod: its rootfs and bind mounts appear
    /// in the pod's share (live), then CreateContainer joins the sandbox container's
    /// namespaces.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn create_in_pod(
        &self,
        req: &api::CreateTaskRequest,
        spec: &oci_spec::runtime::Spec,
        spec_bytes: Vec<u8>,
        bundle: &Path,
        sandbox: Arc<Sandbox>,
        role: PodRole,
        binds: &[SharedBind],
        rb: &mut Rollback,
    ) -> ShimResult<Arc<Container>> {
        let id = req.id.as_str();
        let terminal = wants_terminal(req, spec);
        let (rootfs, mounted) = prepare_rootfs(req, spec, bundle, rb).await?;
        let share = sandbox.paths.share();
        add_to_share(&share, id, &rootfs, binds)?;
        let cid = id.to_string();
        rb.push(
            format!("remove container {id} from the share"),
            async move { share.remove_container(&cid) },
        );
        let sb = sandbox.clone();
        let cid = id.to_string();
        rb.push(format!("remove container {id} in the guest"), async move {
            sb.agent
                .remove_container(&cid)
                .await
                .map_err(|e| e.to_string())
        });
        let sandbox_id = sandbox.id.clone();
        create_in_guest(
            req,
            spec_bytes,
            terminal,
            sandbox,
            &sandbox_id,
            mounted,
            role,
        )
        .await
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
            ),
        ));
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

/// CreateContainer in the guest (the spec with the node's hostname as its default, the root
/// file system where the shim put it in the guest; `sandbox_id` names the pod's sandbox
/// container, empty for a container that is its own sandbox), then the shim's record of it.
async fn create_in_guest(
    req: &api::CreateTaskRequest,
    spec_bytes: Vec<u8>,
    terminal: bool,
    sandbox: Arc<Sandbox>,
    sandbox_id: &str,
    mounted: Option<PathBuf>,
    role: PodRole,
) -> ShimResult<Arc<Container>> {
    let id = req.id.as_str();
    let created = sandbox
        .agent
        .create_container(
            id,
            crate::spec::with_default_hostname(
                crate::spec::with_node_uts(spec_bytes, matches!(role, PodRole::Container { .. })),
                &crate::spec::node_hostname(),
            ),
            &kata_rs_protocol::guest::guest_rootfs(id),
            !req.stdin.is_empty(),
            terminal,
            sandbox_id,
        )
        .await;
    if let Err(e) = created {
        // A guest that went silent or away: say what became of the VM.
        let why = if e.guest_lost() {
            sandbox.why_lost().await
        } else {
            String::new()
        };
        return Err(ShimError::Failed(format!(
            "the agent could not create the container: {e}{why}"
        )));
    }
    let stdio = Stdio::new(&req.stdin, &req.stdout, &req.stderr, terminal);
    Ok(Arc::new(Container::new(
        id.to_string(),
        req.bundle.clone(),
        stdio,
        mounted,
        sandbox,
        role,
    )))
}

/// The root file system: containerd's mounts on `<bundle>/rootfs` (unmounted again by
/// `rb`), or the directory the spec names when containerd passed none. Returns the
/// directory and the mount point to unmount at Delete.
async fn prepare_rootfs(
    req: &api::CreateTaskRequest,
    spec: &oci_spec::runtime::Spec,
    bundle: &Path,
    rb: &mut Rollback,
) -> ShimResult<(PathBuf, Option<PathBuf>)> {
    let (rootfs, mounted) = if req.rootfs.is_empty() {
        let root = spec
            .root()
            .as_ref()
            .map(|r| r.path().clone())
            .unwrap_or_else(|| PathBuf::from("rootfs"));
        (bundle.join(root), None)
    } else {
        let target = bundle.join("rootfs");
        std::fs::create_dir_all(&target)
            .map_err(|e| ShimError::Failed(format!("create {}: {e}", target.display())))?;
        let t = target.clone();
        rb.push(
            format!("unmount {}", t.display()),
            async move { unmount(&t) },
        );
        for m in &req.rootfs {
            containerd_shim::asynchronous::util::mount_rootfs(m, &target)
                .await
                .map_err(|e| {
                    ShimError::Failed(format!(
                        "mount {} rootfs on {}: {e}",
                        m.type_,
                        target.display()
                    ))
                })?;
        }
        (target.clone(), Some(target))
    };
    Ok((rootfs, mounted))
}
