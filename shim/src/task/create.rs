//! Create: the request checked, the configuration and spec read, the pod role decided,
//! then the steps (`super::create_steps`) run with a rollback that undoes them if one fails;
//! the container is recorded and `/tasks/create` published only when all went well.

use std::{
    path::PathBuf,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
};

use containerd_shim::asynchronous::io::Stdio;
use containerd_shim_protos::{
    api,
    events::task::{TaskCreate, TaskIO},
    protobuf::MessageField,
};
use tracing::{info, warn};

use super::{
    create_host::HostCreate,
    create_steps::{create_in_pod, create_with_new_vm, Created, GuestContainer},
    delete::TeardownBy,
    detached::{detached, Abandoned},
    TaskService,
};
use crate::{
    bundle::{read_spec, CONFIG_PATH_FILE},
    config::Config,
    container::Container,
    error::{ShimError, ShimResult},
    mounts, options,
    pod::{self, PodRole},
    sandbox::{Sandbox, SandboxPaths},
    util::{validate_id, Rollback},
};

impl TaskService {
    /// Create, on its own task (see [`detached`]) so that it ends or is rolled back
    /// whatever containerd does with the request.
    pub(super) async fn create_container(
        &self,
        req: api::CreateTaskRequest,
    ) -> ShimResult<api::CreateTaskResponse> {
        let this = self.clone();
        let abandoned = Abandoned::default();
        let flag = abandoned.flag();
        detached("Create", abandoned, async move {
            this.create_task(req, flag).await
        })
        .await
    }

    /// Create, on its own task (see [`detached`]): when containerd gave up on the request
    /// while it ran (`abandoned`), a container that was created after all is torn down
    /// again instead of being published, so nothing is left that containerd does not know.
    async fn create_task(
        &self,
        req: api::CreateTaskRequest,
        abandoned: Arc<AtomicBool>,
    ) -> ShimResult<api::CreateTaskResponse> {
        info!(id = %req.id, bundle = %req.bundle, "Create");
        // One create at a time; other requests go on, and see the container only once
        // it is created.
        let _creating = self.inner.create_lock.lock().await;
        if self
            .inner
            .state
            .lock()
            .await
            .containers
            .contains_key(&req.id)
        {
            return Err(ShimError::Exists(format!(
                "container {} already exists",
                req.id
            )));
        }
        let created = self.do_create(&req).await;
        if abandoned.load(Ordering::SeqCst) {
            if let Ok((c, _)) = created {
                warn!(id = %req.id, "Create finished after containerd gave up on it: tearing it down");
                let _ = self.teardown(c, TeardownBy::AbandonedCreate).await;
            } else {
                info!(id = %req.id, "Create containerd gave up on failed and was rolled back");
            }
            // containerd has already sent its Delete and Shutdown for the failed Create
            // (answered while this ran): nobody will ask this shim to exit again.
            self.exit_if_no_containers("the abandoned Create").await;
            return Err(ShimError::GaveUp(format!(
                "container {}: containerd gave up on Create; undone",
                req.id
            )));
        }
        let (c, pid) = match created {
            Ok(x) => x,
            Err(e) => {
                warn!(id = %req.id, "Create failed: {}", e);
                return Err(e);
            }
        };
        {
            let mut state = self.inner.state.lock().await;
            state.containers.insert(req.id.clone(), c.clone());
            if c.owns_vm() {
                state
                    .sandboxes
                    .insert(c.sandbox.id.clone(), c.sandbox.clone());
            }
        }
        self.inner
            .publish(Box::new(TaskCreate {
                container_id: req.id.clone(),
                bundle: req.bundle.clone(),
                rootfs: req.rootfs.clone(),
                io: MessageField::some(TaskIO {
                    stdin: req.stdin.clone(),
                    stdout: req.stdout.clone(),
                    stderr: req.stderr.clone(),
                    terminal: req.terminal,
                    ..Default::default()
                }),
                pid,
                ..Default::default()
            }))
            .await;
        if c.owns_vm() {
            // One watcher per VM: it reports every container of the sandbox.
            self.spawn_oom_watcher(&c);
        }
        info!(id = %req.id, pid, "created");
        Ok(api::CreateTaskResponse {
            pid,
            ..Default::default()
        })
    }

    async fn do_create(&self, req: &api::CreateTaskRequest) -> ShimResult<(Arc<Container>, u32)> {
        let id = req.id.as_str();
        validate_id(id).map_err(ShimError::Invalid)?;
        if !req.checkpoint.is_empty() {
            return Err(ShimError::Unsupported(
                "checkpoint/restore is not supported".into(),
            ));
        }
        // The configuration: the file the runtime options name (ConfigPath), else the
        // usual one; then the pod's annotations.
        let config_path = options::config_path(req.options.as_ref()).map_err(ShimError::Invalid)?;
        let mut config = match &config_path {
            Some(p) => Config::load_file(p, crate::config::FROM_CONFIG_PATH),
            None => Config::load(),
        }
        .map_err(|e| ShimError::Precondition(e.to_string()))?;

        let bundle = PathBuf::from(&req.bundle);
        let spec_path = bundle.join("config.json");
        let spec_bytes = read_spec(&spec_path).map_err(ShimError::Invalid)?;
        let spec: oci_spec::runtime::Spec = serde_json::from_slice(&spec_bytes).map_err(|e| {
            ShimError::Invalid(format!("invalid OCI spec {}: {e}", spec_path.display()))
        })?;
        if let Some(p) = &config_path {
            let f = bundle.join(CONFIG_PATH_FILE);
            std::fs::write(&f, p.to_string_lossy().as_bytes())
                .map_err(|e| ShimError::Failed(format!("cannot write {}: {e}", f.display())))?;
        }
        let pod = pod::pod_info(id, spec.annotations().as_ref()).map_err(ShimError::Invalid)?;
        if pod.dialect != pod::Dialect::None {
            info!(
                id,
                manager = pod.dialect.name(),
                pod = ?pod.pod_name,
                namespace = ?pod.pod_namespace,
                container = ?pod.container_name,
                "pod {:?}",
                pod.role
            );
        }
        let role = pod.role;
        if role == PodRole::Sandbox {
            pod::refuse_host_namespaces(&spec)
                .map_err(|e| ShimError::Invalid(format!("pod sandbox {id}: {e}")))?;
        }
        if let Some(a) = spec.annotations() {
            options::apply_annotations(&mut config, a).map_err(ShimError::Invalid)?;
            // A pod's VM is sized once, at boot, from CRI's sandbox annotations.
            if role == PodRole::Sandbox {
                let sized =
                    options::apply_sandbox_resources(&mut config, a, options::host_limits())
                        .map_err(|e| ShimError::Invalid(format!("pod sandbox {id}: {e}")))?;
                if let Some(r) = sized {
                    info!(
                        id,
                        vcpus = config.file.hypervisor.vcpus,
                        memory_mib = config.file.hypervisor.memory_mib,
                        "pod VM sized from CRI's sandbox annotations: {r:?}"
                    );
                }
            }
        }
        config
            .validate()
            .map_err(|e| ShimError::Precondition(e.to_string()))?;
        // Host bind mounts: shared with the guest through the sandbox's share, sources
        // rewritten to their guest paths.
        let (spec_bytes, binds) = mounts::prepare(spec_bytes, id)
            .map_err(|e| ShimError::Invalid(format!("container {id}: {e}")))?;

        let terminal = wants_terminal(req, &spec);
        let guest = GuestContainer {
            id: id.to_string(),
            spec: spec_bytes,
            stdin: !req.stdin.is_empty(),
            terminal,
            role: role.clone(),
        };
        let mut rb = Rollback::new();
        let result = match &role {
            PodRole::Container { sandbox_id } => {
                // Joins the running VM of its pod; nothing is started.
                let sandbox = self.pod_sandbox(id, sandbox_id).await?;
                let host = HostCreate {
                    req,
                    spec: &spec,
                    bundle: &bundle,
                    config: &config,
                    sandbox_id,
                    paths: sandbox.paths.clone(),
                    is_pod: true,
                    binds: &binds,
                };
                let sandbox_id = sandbox.id.clone();
                create_in_pod(&host, sandbox, &sandbox_id, guest, &mut rb).await
            }
            PodRole::Single | PodRole::Sandbox => {
                if let Some(other) = self.inner.state.lock().await.sandboxes.keys().next() {
                    return Err(ShimError::Precondition(format!(
                        "this shim already runs sandbox {other}; container {id} cannot start another VM here"
                    )));
                }
                // The container is its own sandbox (sandbox id = container id).
                let host = HostCreate {
                    req,
                    spec: &spec,
                    bundle: &bundle,
                    config: &config,
                    sandbox_id: id,
                    paths: SandboxPaths::new(&config, id),
                    is_pod: role == PodRole::Sandbox,
                    binds: &binds,
                };
                create_with_new_vm(&host, guest, &mut rb).await
            }
        };
        match result {
            Ok(Created { vm, mounted }) => {
                rb.disarm();
                let pid = vm.vmm.pid();
                let stdio = Stdio::new(&req.stdin, &req.stdout, &req.stderr, terminal);
                let c =
                    Container::new(id.to_string(), req.bundle.clone(), stdio, mounted, vm, role);
                Ok((Arc::new(c), pid))
            }
            Err(e) => Err(e.with_cleanup_failures(rb.run().await)),
        }
    }

    /// The running pod sandbox `sandbox_id` that container `id` joins, or why it cannot.
    async fn pod_sandbox(&self, id: &str, sandbox_id: &str) -> ShimResult<Arc<Sandbox>> {
        let sandbox = self
            .inner
            .state
            .lock()
            .await
            .sandboxes
            .get(sandbox_id)
            .cloned()
            .ok_or_else(|| {
                ShimError::Precondition(format!(
                        "sandbox {sandbox_id} is not running in this shim: container {id} names it in annotation {} or {}; create and start the pod's sandbox container ({}=sandbox) first",
                        pod::SANDBOX_ID,
                        pod::CRIO_SANDBOX_ID,
                        pod::CONTAINER_TYPE
                    ),
                )
            })?;
        if sandbox.vmm.exited().is_some() {
            return Err(ShimError::Precondition(format!(
                "the VM of sandbox {sandbox_id} has stopped; container {id} cannot join it"
            )));
        }
        if !sandbox.is_pod {
            return Err(ShimError::Precondition(format!(
                    "container {sandbox_id} was not created as a pod sandbox (annotation {} or {} = sandbox), so container {id} cannot join its VM",
                    pod::CONTAINER_TYPE,
                    pod::CRIO_CONTAINER_TYPE
                ),
            ));
        }
        Ok(sandbox)
    }
}

/// Whether the container gets a terminal: containerd sets `terminal` from
/// process.terminal; either one asks for a tty.
fn wants_terminal(req: &api::CreateTaskRequest, spec: &oci_spec::runtime::Spec) -> bool {
    req.terminal
        || spec
            .process()
            .as_ref()
            .is_some_and(|p| p.terminal().unwrap_or(false))
}
