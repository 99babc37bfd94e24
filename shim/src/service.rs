//! The containerd side: the `Shim` (start/delete subcommands) and the `Task` ttrpc service.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, SystemTime},
};

use async_trait::async_trait;
use containerd_shim::{
    asynchronous::{io::Stdio, spawn, util::write_str_to_file, ExitSignal, Shim},
    event::Event,
    publisher::RemotePublisher,
    Config as ShimConfig, Context, DeleteResponse, Error as ShimError, Flags, StartOpts,
    TtrpcContext, TtrpcResult,
};
use containerd_shim_protos::{
    api,
    events::task::{
        TaskCreate, TaskDelete, TaskExecAdded, TaskExecStarted, TaskExit, TaskIO, TaskOOM,
        TaskPaused, TaskResumed, TaskStart,
    },
    protobuf::{EnumOrUnknown, MessageDyn, MessageField},
    shim_async::Task,
};
use tokio::sync::Mutex;
use tracing::{debug, error, info, warn};
use ttrpc::{Code, Error as TtrpcError};

use crate::{
    agent::AgentError,
    config::{Config, ConfigFile, ConfigSource},
    container::{Container, Process, Status, MAX_EXECS},
    host_cgroup::{self, HostCgroup, SandboxCgroup},
    metrics, mounts, options,
    pod::{self, PodRole},
    sandbox::{Sandbox, SandboxPaths},
    share::{Share, SharedBind},
    util::{timestamp, validate_id, Rollback},
};

/// containerd's runtime name for this shim.
pub const RUNTIME_ID: &str = "io.containerd.kata.v2";

/// Largest config.json accepted.
const MAX_SPEC_SIZE: u64 = 4 * 1024 * 1024;
/// File in the bundle naming the configuration file Create used when the runtime options
/// named one (ConfigPath), for the `delete` subcommand.
const CONFIG_PATH_FILE: &str = "kata-rs-config-path";

/// Largest OCI process (Exec) or resources (Update) JSON accepted.
const MAX_ANY_SIZE: usize = 1024 * 1024;

fn rpc_err(code: Code, msg: impl Into<String>) -> TtrpcError {
    TtrpcError::RpcStatus(ttrpc::get_status(code, msg.into()))
}

/// The shim process: what containerd's `start`/`delete` subcommands and the server need.
pub struct KataShim {
    exit: Arc<ExitSignal>,
    id: String,
    namespace: String,
    bundle: PathBuf,
}

/// The `containerd-shim` crate's settings for this shim: the VMM is a tokio child process
/// reaped by tokio, so the crate's own SIGCHLD reaper (which reaps every child) is off,
/// and the shim needs no subreaper.
pub fn shim_config() -> ShimConfig {
    ShimConfig {
        no_reaper: true,
        no_sub_reaper: true,
        ..Default::default()
    }
}

#[async_trait]
impl Shim for KataShim {
    type T = TaskService;

    async fn new(_runtime_id: &str, args: &Flags, _config: &mut ShimConfig) -> Self {
        let bundle = if args.bundle.is_empty() {
            std::env::current_dir().unwrap_or_default()
        } else {
            PathBuf::from(&args.bundle)
        };
        KataShim {
            exit: Arc::new(ExitSignal::default()),
            id: args.id.clone(),
            namespace: args.namespace.clone(),
            bundle,
        }
    }

    async fn start_shim(&mut self, opts: StartOpts) -> Result<String, ShimError> {
        // The grouping key picks the socket, hence the shim process: a pod's containers
        // (CRI annotations in <bundle>/config.json) go to the shim of their sandbox, whose
        // server already serves that socket (the process `spawn` starts then sees the
        // socket served and exits; the address is the same).
        let annotations = pod::bundle_annotations(&self.bundle);
        let grouping = pod::grouping_key(&opts.id, annotations.as_ref());
        let legacy = opts.containerd_version.is_empty();
        let address = spawn(opts, &grouping, Vec::new()).await?;
        private_socket(&address);
        write_str_to_file("address", &address).await?;
        if legacy {
            // containerd-shim 0.12 answers the legacy protocol with a JSON object, which
            // containerd 1.6 (Debian 12's) cannot parse: it dials the whole reply as the
            // socket path. A bare address is what 1.6 expects, and 1.7/2.x read a reply
            // that is not JSON as a ttrpc address of task API v2, so print that and exit
            // before the crate writes its JSON. (The bootstrap protocol of newer
            // containerd, which sends its version, keeps the crate's reply.)
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            out.write_all(address.as_bytes())
                .and_then(|_| out.flush())
                .map_err(|e| {
                    ShimError::Other(format!("write the shim address to containerd: {e}"))
                })?;
            std::process::exit(0);
        }
        Ok(address)
    }

    async fn delete_shim(&mut self) -> Result<DeleteResponse, ShimError> {
        let lost = LostBundle::read(&self.id, &self.bundle);
        let r = cleanup_lost_shim(&self.id, &self.bundle, &lost);
        cleanup_lost_network(&self.id, &lost).await;
        Ok(r)
    }

    async fn wait(&mut self) {
        self.exit.wait().await;
    }

    async fn create_task_service(&self, publisher: RemotePublisher) -> Self::T {
        if let Ok(c) = Config::load() {
            if c.file.runtime.debug && log::max_level() < log::LevelFilter::Debug {
                log::set_max_level(log::LevelFilter::Debug);
            }
        }
        TaskService {
            inner: Arc::new(Inner {
                namespace: self.namespace.clone(),
                exit: self.exit.clone(),
                publisher,
                state: Mutex::new(State::default()),
                create_lock: Mutex::new(()),
            }),
        }
    }
}

/// Makes the shim's own ttrpc socket (`unix://PATH`, bound by the crate with the process
/// umask) 0600: only root, i.e. containerd, may connect. Abstract sockets have no mode.
fn private_socket(address: &str) {
    use std::os::unix::fs::PermissionsExt;
    let Some(path) = address.strip_prefix("unix://") else {
        return;
    };
    if path.starts_with('@') || path.starts_with('\0') {
        return;
    }
    if let Err(e) = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)) {
        warn!("chmod 0600 {path}: {e}");
    }
}

/// Who tears a container down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TeardownBy {
    /// containerd's Delete: takes the create lock, publishes TaskDelete.
    Delete,
    /// A Create containerd gave up on: the create lock is held already, and containerd
    /// never heard of the container (no event).
    AbandonedCreate,
}

/// Set when the RPC handler that started a detached task is dropped before the task ended
/// (the ttrpc server drops a handler on the request's deadline or the client's disconnect).
#[derive(Default)]
struct Abandoned {
    flag: Arc<AtomicBool>,
    done: bool,
}

impl Abandoned {
    fn flag(&self) -> Arc<AtomicBool> {
        self.flag.clone()
    }
}

impl Drop for Abandoned {
    fn drop(&mut self) {
        if !self.done {
            self.flag.store(true, Ordering::SeqCst);
        }
    }
}

/// Runs `work` on its own tokio task and waits for it. Create and Delete go through here:
/// when containerd gives up on the request, the ttrpc server drops the handler's future,
/// which would stop them between two steps (a VMM started, its rollback never run); a
/// spawned task runs to its end (or its rollback) whatever happens to the request, and
/// `abandoned` tells it whether anyone still waits for the answer.
async fn detached<T, F>(what: &str, mut abandoned: Abandoned, work: F) -> TtrpcResult<T>
where
    T: Send + 'static,
    F: std::future::Future<Output = TtrpcResult<T>> + Send + 'static,
{
    let r = tokio::spawn(work).await;
    abandoned.done = true;
    r.unwrap_or_else(|e| Err(rpc_err(Code::INTERNAL, format!("{what} failed: {e}"))))
}

/// Creates the sandbox's host cgroup (see `crate::host_cgroup`) and moves the shim into it,
/// when `[cgroup] sandbox_cgroup_only` is on.
fn enter_host_cgroup(
    config: &Config,
    spec: &oci_spec::runtime::Spec,
    sandbox_id: &str,
    state_dir: &Path,
) -> Result<Option<Arc<SandboxCgroup>>, TtrpcError> {
    let c = &config.file.cgroup;
    if !c.sandbox_cgroup_only {
        return Ok(None);
    }
    let root = Path::new(host_cgroup::CGROUP_ROOT);
    if !host_cgroup::is_cgroup2(root) {
        return Err(rpc_err(
            Code::FAILED_PRECONDITION,
            format!(
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
    .map_err(|e| rpc_err(Code::INVALID_ARGUMENT, format!("sandbox {sandbox_id}: {e}")))?;
    let cg = SandboxCgroup::enter(
        HostCgroup::new(root, host_cgroup::own_leaf(root, rel, sandbox_id)),
        state_dir,
    )
    .map_err(|e| rpc_err(Code::UNKNOWN, format!("sandbox {sandbox_id}: {e}")))?;
    info!(
        sandbox = sandbox_id,
        cgroup = %cg.cgroup.dir().display(),
        "shim in the sandbox's host cgroup"
    );
    Ok(Some(Arc::new(cg)))
}

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

/// Unmounts everything at and below `path`.
pub fn unmount(path: &Path) -> Result<(), String> {
    let p = path.to_string_lossy().to_string();
    containerd_shim::mount::umount_recursive(Some(&p), 0)
        .or_else(|_| containerd_shim::mount::umount_recursive(Some(&p), libc::MNT_DETACH))
        .map_err(|e| e.to_string())
}

#[derive(Default)]
struct State {
    containers: HashMap<String, Arc<Container>>,
    /// Running sandboxes (VMs) by sandbox id: at most one per shim (a pod's, or a single
    /// container's).
    sandboxes: HashMap<String, Arc<Sandbox>>,
}

struct Inner {
    namespace: String,
    exit: Arc<ExitSignal>,
    publisher: RemotePublisher,
    state: Mutex<State>,
    /// Held for a whole Create (and a sandbox's Delete): one at a time, while other
    /// requests go on (the state lock is only held briefly).
    create_lock: Mutex<()>,
}

impl Inner {
    async fn publish(&self, event: Box<dyn EventMsg>) {
        let topic = event.topic();
        debug!("publish {topic}");
        if let Err(e) = self
            .publisher
            .publish(
                Context::default(),
                &topic,
                &self.namespace,
                event.into_msg(),
            )
            .await
        {
            error!("publish {topic}: {e}");
        }
    }
}

/// An event that knows its topic and can be sent.
trait EventMsg: Send {
    fn topic(&self) -> String;
    fn into_msg(self: Box<Self>) -> Box<dyn MessageDyn>;
}

impl<T: Event + Send + 'static> EventMsg for T {
    fn topic(&self) -> String {
        Event::topic(self)
    }
    fn into_msg(self: Box<Self>) -> Box<dyn MessageDyn> {
        self
    }
}

/// The Task service containerd talks to.
#[derive(Clone)]
pub struct TaskService {
    inner: Arc<Inner>,
}

impl TaskService {
    /// Container `id` and its process `exec_id` (`""` = init).
    async fn process(
        &self,
        id: &str,
        exec_id: &str,
    ) -> TtrpcResult<(Arc<Container>, Arc<Process>)> {
        let c = self.container(id).await?;
        let p = c.process(exec_id).ok_or_else(|| {
            rpc_err(
                Code::NOT_FOUND,
                format!("exec {exec_id} of container {id} not found"),
            )
        })?;
        Ok((c, p))
    }

    /// Freezes (`pause`) or thaws a running container's processes and publishes
    /// TaskPaused / TaskResumed.
    async fn set_paused(&self, id: &str, pause: bool) -> TtrpcResult<api::Empty> {
        let c = self.container(id).await?;
        let (allowed, needed, action) = if pause {
            (
                c.init.status() == Status::Running,
                "running",
                "pause the container",
            )
        } else {
            (c.is_paused(), "paused", "resume the container")
        };
        if !allowed {
            return Err(rpc_err(
                Code::FAILED_PRECONDITION,
                format!("container {} is not {needed}", c.id),
            ));
        }
        c.sandbox
            .agent
            .pause_resume(&c.id, pause)
            .await
            .map_err(|e| agent_err(action, e))?;
        c.paused.store(pause, std::sync::atomic::Ordering::SeqCst);
        if !pause {
            c.sandbox
                .agent
                .sync_guest_clock(&c.sandbox.id, "after resume")
                .await;
        }
        let container_id = c.id.clone();
        let event: Box<dyn EventMsg> = if pause {
            Box::new(TaskPaused {
                container_id,
                ..Default::default()
            })
        } else {
            Box::new(TaskResumed {
                container_id,
                ..Default::default()
            })
        };
        self.inner.publish(event).await;
        Ok(api::Empty::new())
    }

    async fn container(&self, id: &str) -> TtrpcResult<Arc<Container>> {
        self.inner
            .state
            .lock()
            .await
            .containers
            .get(id)
            .cloned()
            .ok_or_else(|| rpc_err(Code::NOT_FOUND, format!("container {id} not found")))
    }

    async fn do_create(
        &self,
        req: &api::CreateTaskRequest,
    ) -> Result<(Arc<Container>, u32), TtrpcError> {
        let id = req.id.as_str();
        validate_id(id).map_err(|e| rpc_err(Code::INVALID_ARGUMENT, e))?;
        if !req.checkpoint.is_empty() {
            return Err(rpc_err(
                Code::UNIMPLEMENTED,
                "checkpoint/restore is not supported",
            ));
        }
        // The configuration: the file the runtime options name (ConfigPath), else the
        // usual one; then the pod's annotations.
        let config_path = options::config_path(req.options.as_ref())
            .map_err(|e| rpc_err(Code::INVALID_ARGUMENT, e))?;
        let mut config = match &config_path {
            Some(p) => Config::load_file(p, crate::config::FROM_CONFIG_PATH),
            None => Config::load(),
        }
        .map_err(|e| rpc_err(Code::FAILED_PRECONDITION, e.to_string()))?;

        let bundle = PathBuf::from(&req.bundle);
        let spec_path = bundle.join("config.json");
        let spec_bytes = read_spec(&spec_path).map_err(|e| rpc_err(Code::INVALID_ARGUMENT, e))?;
        let spec: oci_spec::runtime::Spec = serde_json::from_slice(&spec_bytes).map_err(|e| {
            rpc_err(
                Code::INVALID_ARGUMENT,
                format!("invalid OCI spec {}: {e}", spec_path.display()),
            )
        })?;
        if let Some(p) = &config_path {
            let f = bundle.join(CONFIG_PATH_FILE);
            std::fs::write(&f, p.to_string_lossy().as_bytes()).map_err(|e| {
                rpc_err(Code::UNKNOWN, format!("cannot write {}: {e}", f.display()))
            })?;
        }
        let pod = pod::pod_info(id, spec.annotations().as_ref())
            .map_err(|e| rpc_err(Code::INVALID_ARGUMENT, e))?;
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
                .map_err(|e| rpc_err(Code::INVALID_ARGUMENT, format!("pod sandbox {id}: {e}")))?;
        }
        if let Some(a) = spec.annotations() {
            options::apply_annotations(&mut config, a)
                .map_err(|e| rpc_err(Code::INVALID_ARGUMENT, e))?;
            // A pod's VM is sized once, at boot, from CRI's sandbox annotations.
            if role == PodRole::Sandbox {
                let sized =
                    options::apply_sandbox_resources(&mut config, a, options::host_limits())
                        .map_err(|e| {
                            rpc_err(Code::INVALID_ARGUMENT, format!("pod sandbox {id}: {e}"))
                        })?;
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
            .map_err(|e| rpc_err(Code::FAILED_PRECONDITION, e.to_string()))?;
        // Host bind mounts: shared with the guest through the sandbox's share, sources
        // rewritten to their guest paths.
        let (spec_bytes, binds) = mounts::prepare(spec_bytes, id)
            .map_err(|e| rpc_err(Code::INVALID_ARGUMENT, format!("container {id}: {e}")))?;

        let mut rb = Rollback::new();
        let result = match &role {
            PodRole::Container { sandbox_id } => {
                // Joins the running VM of its pod; nothing is started.
                let sandbox = self.pod_sandbox(id, sandbox_id).await?;
                self.create_in_pod(
                    req,
                    &spec,
                    spec_bytes,
                    &bundle,
                    sandbox,
                    role.clone(),
                    &binds,
                    &mut rb,
                )
                .await
            }
            PodRole::Single | PodRole::Sandbox => {
                if let Some(other) = self.inner.state.lock().await.sandboxes.keys().next() {
                    return Err(rpc_err(
                        Code::FAILED_PRECONDITION,
                        format!("this shim already runs sandbox {other}; container {id} cannot start another VM here"),
                    ));
                }
                // The container is its own sandbox (sandbox id = container id).
                let paths = SandboxPaths::new(&config, id);
                self.create_steps(
                    req,
                    &config,
                    &spec,
                    spec_bytes,
                    &bundle,
                    id,
                    paths,
                    role.clone(),
                    &binds,
                    &mut rb,
                )
                .await
            }
        };
        match result {
            Ok(c) => {
                rb.disarm();
                let pid = c.sandbox.vmm.pid();
                Ok((c, pid))
            }
            Err(e) => {
                let failed = rb.run().await;
                if failed.is_empty() {
                    Err(e)
                } else {
                    let extra: Vec<String> = failed
                        .into_iter()
                        .map(|(n, e)| format!("{n}: {e}"))
                        .collect();
                    Err(rpc_err(
                        Code::UNKNOWN,
                        format!(
                            "{}; cleaning up also failed: {}",
                            status_text(&e),
                            extra.join("; ")
                        ),
                    ))
                }
            }
        }
    }

    /// Ends the shim when it holds no container any more (after `what`: Shutdown, or a
    /// Create or Delete containerd gave up on, after which no Shutdown comes); otherwise
    /// keeps it running. The caller holds `create_lock`, so no Create can add one meanwhile.
    async fn exit_if_no_containers(&self, what: &str) {
        let left = self.inner.state.lock().await.containers.len();
        if left > 0 {
            debug!("{what}: {left} container(s) left, the shim keeps running");
            return;
        }
        info!("{what}: no containers left, exiting");
        self.inner.exit.signal();
    }

    /// Create, on its own task (see [`detached`]): when containerd gave up on the request
    /// while it ran (`abandoned`), a container that was created after all is torn down
    /// again instead of being published, so nothing is left that containerd does not know.
    async fn create_task(
        &self,
        req: api::CreateTaskRequest,
        abandoned: Arc<AtomicBool>,
    ) -> TtrpcResult<api::CreateTaskResponse> {
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
            return Err(rpc_err(
                Code::ALREADY_EXISTS,
                format!("container {} already exists", req.id),
            ));
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
            return Err(rpc_err(
                Code::DEADLINE_EXCEEDED,
                format!("container {}: containerd gave up on Create; undone", req.id),
            ));
        }
        let (c, pid) = match created {
            Ok(x) => x,
            Err(e) => {
                warn!(id = %req.id, "Create failed: {}", status_text(&e));
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

    /// Delete, on its own task (see [`detached`]): it finishes even when containerd gives up.
    async fn delete_task(&self, req: api::DeleteRequest) -> TtrpcResult<api::DeleteResponse> {
        info!(id = %req.id, exec = %req.exec_id, "Delete");
        let (c, p) = self.process(&req.id, &req.exec_id).await?;
        if !p.exec_id.is_empty() {
            if p.status() == Status::Running && c.sandbox.vmm.exited().is_none() {
                return Err(rpc_err(
                    Code::FAILED_PRECONDITION,
                    format!("exec {} is running; kill it first", p.exec_id),
                ));
            }
            let exit = p.set_exited(128 + 9);
            c.execs_lock().remove(&p.exec_id);
            p.shutdown_io().await;
            return Ok(api::DeleteResponse {
                pid: p.guest_pid.load(std::sync::atomic::Ordering::SeqCst),
                exit_status: exit.status,
                exited_at: MessageField::some(timestamp(exit.at)),
                ..Default::default()
            });
        }
        if c.init.status() == Status::Running && c.sandbox.vmm.exited().is_none() {
            return Err(rpc_err(
                Code::FAILED_PRECONDITION,
                format!("container {} is running; kill it first", c.id),
            ));
        }
        self.teardown(c, TeardownBy::Delete).await
    }

    /// Removes a created or exited container: from the state, from the guest, its share
    /// entry, and with the VM's owner the VM, its files and host cgroup.
    async fn teardown(
        &self,
        c: Arc<Container>,
        by: TeardownBy,
    ) -> TtrpcResult<api::DeleteResponse> {
        // A VM's owner is not deleted while a pod container is being created in it.
        let _creating = if by == TeardownBy::Delete && c.owns_vm() {
            Some(self.inner.create_lock.lock().await)
        } else {
            None
        };
        let exit = c.init.set_exited(128 + 9);
        {
            let mut state = self.inner.state.lock().await;
            state.containers.remove(&c.id);
            if c.owns_vm() {
                state.sandboxes.remove(&c.sandbox.id);
            }
        }
        let execs: Vec<_> = c.execs_lock().drain().map(|(_, e)| e).collect();
        for e in execs {
            e.set_exited(128 + 9);
            e.shutdown_io().await;
        }

        if c.sandbox.vmm.exited().is_none() {
            if let Err(e) = c.sandbox.agent.remove_container(&c.id).await {
                warn!(id = %c.id, "RemoveContainer: {e}");
            }
        }
        c.init.shutdown_io().await;
        let mut errors = Vec::new();
        if !c.owns_vm() {
            // A pod container: out of the pod's share (the sandbox's share goes whole with
            // its state directory).
            if let Err(e) = c.sandbox.paths.share().remove_container(&c.id) {
                errors.push(e);
            }
        }
        if c.owns_vm() {
            // A single container's or a pod's sandbox container: the VM goes with it
            // (a pod's containers still in it are then reported exited).
            let vm_exit = c.sandbox.stop().await;
            info!(id = %c.id, "VMM {vm_exit}");
        }
        if let Some(m) = &c.mounted_rootfs {
            if let Err(e) = unmount(m) {
                errors.push(format!("unmount {}: {e}", m.display()));
            }
        }
        if c.owns_vm() {
            if let Err(e) = c.sandbox.paths.remove(c.sandbox.keep_console()) {
                errors.push(e);
            }
        }
        let pid = c.sandbox.vmm.pid();
        if by == TeardownBy::Delete {
            self.inner
                .publish(Box::new(TaskDelete {
                    container_id: c.id.clone(),
                    pid,
                    exit_status: exit.status,
                    exited_at: MessageField::some(timestamp(exit.at)),
                    ..Default::default()
                }))
                .await;
        }
        if !errors.is_empty() {
            let msg = errors.join("; ");
            error!(id = %c.id, "Delete: {msg}");
            return Err(rpc_err(
                Code::UNKNOWN,
                format!("container deleted, but cleanup failed: {msg}"),
            ));
        }
        Ok(api::DeleteResponse {
            pid,
            exit_status: exit.status,
            exited_at: MessageField::some(timestamp(exit.at)),
            ..Default::default()
        })
    }

    #[allow(clippy::too_many_arguments)]
    async fn create_steps(
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
    ) -> Result<Arc<Container>, TtrpcError> {
        let id = req.id.as_str();
        let fail = |code: Code| move |e: String| rpc_err(code, e);
        let terminal = wants_terminal(req, spec);
        let (rootfs, mounted) = prepare_rootfs(req, spec, bundle, rb).await?;

        // Sandbox files.
        std::fs::create_dir_all(&paths.state_dir).map_err(|e| {
            fail(Code::UNKNOWN)(format!("create {}: {e}", paths.state_dir.display()))
        })?;
        let console_dir = paths.console_log.parent().unwrap_or(Path::new("/"));
        crate::sandbox::create_console_dir(console_dir).map_err(|e| {
            fail(Code::UNKNOWN)(format!("create {} (0700): {e}", console_dir.display()))
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
            .map_err(|e| fail(Code::UNKNOWN)(format!("sandbox {sandbox_id}: the share: {e}")))?;
        add_to_share(&share, id, &rootfs, binds)?;
        info!(
            id,
            binds = binds.len(),
            "root file system and bind mounts shared in {:?}",
            t0.elapsed()
        );

        // Pod networking: a network namespace named by path (CRI: the CNI netns) gets a tap
        // wired to its eth0, and the VM that interface's configuration.
        let net =
            match crate::network::netns_path(spec) {
                Some(ns) => Some(crate::network::PodNetwork::setup(&ns).await.map_err(|e| {
                    rpc_err(Code::FAILED_PRECONDITION, format!("container {id}: {e}"))
                })?),
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
        .map_err(|e| rpc_err(Code::UNKNOWN, e.0))?;
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

    /// The running pod sandbox `sandbox_id` that container `id` joins, or why it cannot.
    async fn pod_sandbox(&self, id: &str, sandbox_id: &str) -> Result<Arc<Sandbox>, TtrpcError> {
        let sandbox = self
            .inner
            .state
            .lock()
            .await
            .sandboxes
            .get(sandbox_id)
            .cloned()
            .ok_or_else(|| {
                rpc_err(
                    Code::FAILED_PRECONDITION,
                    format!(
                        "sandbox {sandbox_id} is not running in this shim: container {id} names it in annotation {} or {}; create and start the pod's sandbox container ({}=sandbox) first",
                        pod::SANDBOX_ID,
                        pod::CRIO_SANDBOX_ID,
                        pod::CONTAINER_TYPE
                    ),
                )
            })?;
        if sandbox.vmm.exited().is_some() {
            return Err(rpc_err(
                Code::FAILED_PRECONDITION,
                format!(
                    "the VM of sandbox {sandbox_id} has stopped; container {id} cannot join it"
                ),
            ));
        }
        if !sandbox.is_pod {
            return Err(rpc_err(
                Code::FAILED_PRECONDITION,
                format!(
                    "container {sandbox_id} was not created as a pod sandbox (annotation {} or {} = sandbox), so container {id} cannot join its VM",
                    pod::CONTAINER_TYPE,
                    pod::CRIO_CONTAINER_TYPE
                ),
            ));
        }
        Ok(sandbox)
    }

    /// Creates a container in the running VM of its pod: its rootfs and bind mounts appear
    /// in the pod's share (live), then CreateContainer joins the sandbox container's
    /// namespaces.
    #[allow(clippy::too_many_arguments)]
    async fn create_in_pod(
        &self,
        req: &api::CreateTaskRequest,
        spec: &oci_spec::runtime::Spec,
        spec_bytes: Vec<u8>,
        bundle: &Path,
        sandbox: Arc<Sandbox>,
        role: PodRole,
        binds: &[SharedBind],
        rb: &mut Rollback,
    ) -> Result<Arc<Container>, TtrpcError> {
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

    /// Starts process `p` of container `c` (init: StartContainer; exec: ExecProcess) and
    /// the task that reports its exit. Returns the pid containerd gets: the VMM's for the
    /// init process (the host process that holds the container), the guest pid for an exec.
    async fn do_start(&self, c: Arc<Container>, p: Arc<Process>) -> TtrpcResult<u32> {
        match p.status() {
            Status::Created => {}
            s => {
                return Err(rpc_err(
                    Code::FAILED_PRECONDITION,
                    format!(
                        "process {} of container {} is {s:?}, not created",
                        p.task_id(),
                        c.id
                    ),
                ))
            }
        }
        let is_init = p.exec_id.is_empty();
        if !is_init && c.init.status() != Status::Running {
            return Err(rpc_err(
                Code::FAILED_PRECONDITION,
                format!("container {} is not running", c.id),
            ));
        }
        let guest_pid = if is_init {
            c.sandbox
                .agent
                .start_container(&c.id)
                .await
                .map_err(|e| agent_err("start the container", e))?
        } else {
            c.sandbox
                .agent
                .exec_process(
                    &c.id,
                    &p.exec_id,
                    p.spec.clone(),
                    !p.stdio.stdin.is_empty(),
                    p.stdio.terminal,
                )
                .await
                .map_err(|e| agent_err("exec the process", e))?
        };
        p.guest_pid
            .store(guest_pid, std::sync::atomic::Ordering::SeqCst);
        p.set_status(Status::Running);
        let pid = if is_init {
            c.sandbox.vmm.pid()
        } else {
            guest_pid
        };
        if is_init {
            self.inner
                .publish(Box::new(TaskStart {
                    container_id: c.id.clone(),
                    pid,
                    ..Default::default()
                }))
                .await;
        } else {
            self.inner
                .publish(Box::new(TaskExecStarted {
                    container_id: c.id.clone(),
                    exec_id: p.exec_id.clone(),
                    pid,
                    ..Default::default()
                }))
                .await;
        }
        let pumps = p.start_io();
        let inner = self.inner.clone();
        let drain = c.sandbox.config().io_drain_timeout();
        tokio::spawn(async move {
            let (status, oom_killed) = p.wait_process(pumps, drain).await;
            if oom_killed {
                // As runc's shim: the OOM event before the exit it caused.
                info!(id = %c.id, "OOM kill in the container (reported with its exit)");
                inner
                    .publish(Box::new(TaskOOM {
                        container_id: c.id.clone(),
                        ..Default::default()
                    }))
                    .await;
            }
            if is_init {
                // containerd expects the exits of exec processes before the init's: they
                // die with the container (PID namespace); give their reports a moment.
                for e in c.running_execs() {
                    if tokio::time::timeout(drain, e.wait()).await.is_err() {
                        warn!(id = %c.id, exec = %e.exec_id, "exec still running after the container's exit");
                    }
                }
            }
            inner
                .publish(Box::new(TaskExit {
                    container_id: c.id.clone(),
                    id: p.task_id().to_string(),
                    pid,
                    exit_status: status,
                    exited_at: MessageField::some(timestamp(SystemTime::now())),
                    ..Default::default()
                }))
                .await;
            let e = p.set_exited(status);
            info!(id = %c.id, exec = %p.exec_id, "process exited with status {}", e.status);
        });
        Ok(pid)
    }

    /// Watches the agent's OOM events and publishes `/tasks/oom` for containers of this
    /// shim, until the VM is gone or the agent does not implement GetOomEvent.
    fn spawn_oom_watcher(&self, c: &Arc<Container>) {
        let inner = self.inner.clone();
        let sandbox = c.sandbox.clone();
        tokio::spawn(async move {
            // A guest may report OOM kills in containers it made up, endlessly.
            let mut unknown = crate::util::LogLimiter::new(5, Duration::from_secs(60));
            loop {
                let r = tokio::select! {
                    r = sandbox.agent.get_oom_event() => r,
                    _ = sandbox.vmm.wait() => return,
                };
                match r {
                    Ok(id) => {
                        let known = inner.state.lock().await.containers.contains_key(&id);
                        if known {
                            info!(id = %id, "OOM kill in the container");
                            inner
                                .publish(Box::new(TaskOOM {
                                    container_id: id,
                                    ..Default::default()
                                }))
                                .await;
                        } else if let Some(left_out) = unknown.admit(std::time::Instant::now()) {
                            warn!(
                                sandbox = %sandbox.id,
                                "agent reported an OOM kill in unknown container {id:?} ({left_out} such reports left out of the log before this one)"
                            );
                        }
                        // Bounded rate, whatever the guest sends.
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    Err(e) if e.is_unimplemented() => {
                        info!("no OOM events: the agent does not implement GetOomEvent");
                        return;
                    }
                    Err(e) => {
                        if sandbox.vmm.exited().is_some() {
                            return;
                        }
                        debug!("GetOomEvent: {e}");
                        tokio::select! {
                            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                            _ = sandbox.vmm.wait() => return,
                        }
                    }
                }
            }
        });
    }

    /// Signals one process; a process never started is reported exited with 128+signal.
    async fn signal(&self, c: &Arc<Container>, p: &Arc<Process>, signal: u32) -> TtrpcResult<()> {
        if p.status() == Status::Stopped || c.sandbox.vmm.exited().is_some() {
            return Err(rpc_err(Code::NOT_FOUND, "process already finished"));
        }
        if p.status() == Status::Created {
            // Never started: there is no WaitProcess to report the end; report it here.
            if p.exec_id.is_empty() {
                if let Err(e) = c.sandbox.agent.signal_process(&c.id, "", signal).await {
                    debug!(id = %c.id, "SignalProcess on a created container: {e}");
                }
            }
            let status = 128 + signal.min(127);
            let pid = if p.exec_id.is_empty() {
                c.sandbox.vmm.pid()
            } else {
                0
            };
            self.inner
                .publish(Box::new(TaskExit {
                    container_id: c.id.clone(),
                    id: p.task_id().to_string(),
                    pid,
                    exit_status: status,
                    exited_at: MessageField::some(timestamp(SystemTime::now())),
                    ..Default::default()
                }))
                .await;
            p.set_exited(status);
            return Ok(());
        }
        match c
            .sandbox
            .agent
            .signal_process(&c.id, &p.exec_id, signal)
            .await
        {
            Ok(()) => Ok(()),
            Err(e) if e.is_not_found() => Err(rpc_err(Code::NOT_FOUND, "process already finished")),
            Err(e) if p.exec_id.is_empty() && signal == libc::SIGKILL as u32 && e.guest_lost() => {
                // SIGKILL must end the container even when its guest no longer answers
                // (`ctr task rm -f`, the kubelet killing a hung pod): the guest is lost, so
                // its VM goes, and every container in it is reported exited (137) as when
                // the VMM dies. Delete then works as after any VMM exit.
                warn!(id = %c.id, "SIGKILL: {e}; the guest does not answer: killing its VM");
                tokio::spawn(end_lost_guest(c.sandbox.clone()));
                Ok(())
            }
            Err(e) => Err(agent_err("signal the process", e)),
        }
    }
}

/// Ends the VM of a guest that stopped answering, first finding out what part stopped: a
/// fresh connection's Check tells an agent that still serves (then the old connection's
/// path was stuck) from one that does not, and SIGTERM lets kata-vmm report its vsock
/// connections (to the shim's log) before SIGKILL follows.
async fn end_lost_guest(sandbox: Arc<Sandbox>) {
    const PROBE: Duration = Duration::from_secs(3);
    let uds = sandbox.paths.state_dir.join(crate::vmm::VSOCK_SOCKET_FILE);
    let probe = async {
        let a =
            crate::agent::Agent::connect(&uds, kata_rs_protocol::AGENT_VSOCK_PORT, PROBE, PROBE)
                .await?;
        a.check().await
    };
    match probe.await {
        Ok(_) => warn!(
            sandbox = %sandbox.id,
            "lost guest: a new connection's Check is answered (the agent serves; the old connection was stuck)"
        ),
        Err(e) => warn!(sandbox = %sandbox.id, "lost guest: a new connection fails too: {e}"),
    }
    let exit = sandbox.vmm.terminate(Duration::from_secs(2)).await;
    let tail = crate::util::file_tail(&sandbox.paths.console_log, 15);
    warn!(sandbox = %sandbox.id, "lost guest: VMM {exit}; last lines of the guest console:\n{tail}");
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

/// Mounts container `id`'s root file system and bind-mount sources into the share. A
/// bind-mount failure (a source that vanished, a mount refused) is the user's error, named.
fn add_to_share(
    share: &Share,
    id: &str,
    rootfs: &Path,
    binds: &[SharedBind],
) -> Result<(), TtrpcError> {
    share
        .add_container(id, rootfs, binds)
        .map_err(|e| rpc_err(Code::FAILED_PRECONDITION, format!("container {id}: {e}")))
}

/// The root file system: containerd's mounts on `<bundle>/rootfs` (unmounted again by
/// `rb`), or the directory the spec names when containerd passed none. Returns the
/// directory and the mount point to unmount at Delete.
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
) -> Result<Arc<Container>, TtrpcError> {
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
        return Err(rpc_err(
            Code::UNKNOWN,
            format!("the agent could not create the container: {e}{why}"),
        ));
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

async fn prepare_rootfs(
    req: &api::CreateTaskRequest,
    spec: &oci_spec::runtime::Spec,
    bundle: &Path,
    rb: &mut Rollback,
) -> Result<(PathBuf, Option<PathBuf>), TtrpcError> {
    let fail = |code: Code| move |e: String| rpc_err(code, e);
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
            .map_err(|e| fail(Code::UNKNOWN)(format!("create {}: {e}", target.display())))?;
        let t = target.clone();
        rb.push(
            format!("unmount {}", t.display()),
            async move { unmount(&t) },
        );
        for m in &req.rootfs {
            containerd_shim::asynchronous::util::mount_rootfs(m, &target)
                .await
                .map_err(|e| {
                    fail(Code::UNKNOWN)(format!(
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

/// An agent failure as containerd sees it: the agent's code, and what the shim was doing.
fn agent_err(what: &str, e: AgentError) -> TtrpcError {
    if e.is_unimplemented() {
        return rpc_err(
            Code::UNIMPLEMENTED,
            format!("cannot {what}: the agent in the guest does not implement it yet ({e})"),
        );
    }
    rpc_err(e.code(), format!("the agent could not {what}: {e}"))
}

/// The JSON value of a protobuf `Any` (containerd packs Go structs such as the OCI
/// `Process` and `LinuxResources` as JSON), bounded and checked to parse as `T`.
fn any_json<T: serde::de::DeserializeOwned>(
    any: Option<&containerd_shim_protos::protobuf::well_known_types::any::Any>,
    what: &str,
) -> Result<(T, Vec<u8>), TtrpcError> {
    let any = any.ok_or_else(|| rpc_err(Code::INVALID_ARGUMENT, format!("{what} is missing")))?;
    if any.value.len() > MAX_ANY_SIZE {
        return Err(rpc_err(
            Code::INVALID_ARGUMENT,
            format!("{what} is larger than {MAX_ANY_SIZE} bytes"),
        ));
    }
    let v = serde_json::from_slice(&any.value).map_err(|e| {
        rpc_err(
            Code::INVALID_ARGUMENT,
            format!(
                "{what} ({}) is not valid JSON of the expected type: {e}",
                any.type_url
            ),
        )
    })?;
    Ok((v, any.value.clone()))
}

fn status_text(e: &TtrpcError) -> String {
    match e {
        TtrpcError::RpcStatus(s) => s.message().to_string(),
        other => other.to_string(),
    }
}

fn read_spec(path: &Path) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let f = std::fs::File::open(path)
        .map_err(|e| format!("cannot read OCI spec {}: {e}", path.display()))?;
    let mut buf = Vec::new();
    f.take(MAX_SPEC_SIZE + 1)
        .read_to_end(&mut buf)
        .map_err(|e| format!("cannot read OCI spec {}: {e}", path.display()))?;
    if buf.len() as u64 > MAX_SPEC_SIZE {
        return Err(format!(
            "OCI spec {} is larger than {MAX_SPEC_SIZE} bytes",
            path.display()
        ));
    }
    Ok(buf)
}

#[async_trait]
impl Task for TaskService {
    async fn create(
        &self,
        _ctx: &TtrpcContext,
        req: api::CreateTaskRequest,
    ) -> TtrpcResult<api::CreateTaskResponse> {
        let this = self.clone();
        let abandoned = Abandoned::default();
        let flag = abandoned.flag();
        detached("Create", abandoned, async move {
            this.create_task(req, flag).await
        })
        .await
    }

    async fn start(
        &self,
        _ctx: &TtrpcContext,
        req: api::StartRequest,
    ) -> TtrpcResult<api::StartResponse> {
        info!(id = %req.id, exec = %req.exec_id, "Start");
        let (c, p) = self.process(&req.id, &req.exec_id).await?;
        let pid = self.do_start(c, p).await?;
        Ok(api::StartResponse {
            pid,
            ..Default::default()
        })
    }

    async fn state(
        &self,
        _ctx: &TtrpcContext,
        req: api::StateRequest,
    ) -> TtrpcResult<api::StateResponse> {
        let (c, p) = self.process(&req.id, &req.exec_id).await?;
        let status = match p.status() {
            Status::Created => api::Status::CREATED,
            Status::Running if c.is_paused() => api::Status::PAUSED,
            Status::Running => api::Status::RUNNING,
            Status::Stopped => api::Status::STOPPED,
        };
        let exit = p.exit();
        let pid = if p.exec_id.is_empty() {
            c.sandbox.vmm.pid()
        } else {
            p.guest_pid.load(std::sync::atomic::Ordering::SeqCst)
        };
        Ok(api::StateResponse {
            id: p.task_id().to_string(),
            bundle: c.bundle.clone(),
            pid,
            status: EnumOrUnknown::new(status),
            stdin: p.stdio.stdin.clone(),
            stdout: p.stdio.stdout.clone(),
            stderr: p.stdio.stderr.clone(),
            terminal: p.stdio.terminal,
            exec_id: p.exec_id.clone(),
            exit_status: exit.map(|e| e.status).unwrap_or(0),
            exited_at: exit.map(|e| timestamp(e.at)).into(),
            ..Default::default()
        })
    }

    async fn wait(
        &self,
        _ctx: &TtrpcContext,
        req: api::WaitRequest,
    ) -> TtrpcResult<api::WaitResponse> {
        debug!(id = %req.id, exec = %req.exec_id, "Wait");
        let (_, p) = self.process(&req.id, &req.exec_id).await?;
        let e = p.wait().await;
        Ok(api::WaitResponse {
            exit_status: e.status,
            exited_at: MessageField::some(timestamp(e.at)),
            ..Default::default()
        })
    }

    async fn kill(&self, _ctx: &TtrpcContext, req: api::KillRequest) -> TtrpcResult<api::Empty> {
        info!(id = %req.id, exec = %req.exec_id, signal = req.signal, all = req.all, "Kill");
        let (c, p) = self.process(&req.id, &req.exec_id).await?;
        if req.all && p.exec_id.is_empty() {
            // Every process of the container: its exec'd processes, then init (whose end
            // takes the rest of the container's PID namespace with it).
            for e in c.running_execs() {
                if let Err(err) = self.signal(&c, &e, req.signal).await {
                    debug!(id = %c.id, exec = %e.exec_id, "kill --all: {}", status_text(&err));
                }
            }
        }
        self.signal(&c, &p, req.signal).await?;
        Ok(api::Empty::new())
    }

    async fn delete(
        &self,
        _ctx: &TtrpcContext,
        req: api::DeleteRequest,
    ) -> TtrpcResult<api::DeleteResponse> {
        let this = self.clone();
        let abandoned = Abandoned::default();
        let flag = abandoned.flag();
        detached("Delete", abandoned, async move {
            let r = this.delete_task(req).await;
            // containerd went away (or gave up) while the Delete ran: it never learns that
            // the last container is gone, so no Shutdown comes; exit as Shutdown would.
            // (containerd, back, finds the shim gone and cleans up its bundle.)
            if flag.load(Ordering::SeqCst) {
                // (A Create in flight may still add a container: wait for it, as Shutdown.)
                let _creating = this.inner.create_lock.lock().await;
                this.exit_if_no_containers("an abandoned Delete").await;
            }
            r
        })
        .await
    }

    async fn close_io(
        &self,
        _ctx: &TtrpcContext,
        req: api::CloseIORequest,
    ) -> TtrpcResult<api::Empty> {
        let (_, p) = self.process(&req.id, &req.exec_id).await?;
        if req.stdin {
            p.close_stdin();
        }
        Ok(api::Empty::new())
    }

    async fn connect(
        &self,
        _ctx: &TtrpcContext,
        req: api::ConnectRequest,
    ) -> TtrpcResult<api::ConnectResponse> {
        let task_pid = match self.inner.state.lock().await.containers.get(&req.id) {
            Some(c) => c.sandbox.vmm.pid(),
            None => 0,
        };
        Ok(api::ConnectResponse {
            shim_pid: std::process::id(),
            task_pid,
            version: env!("CARGO_PKG_VERSION").to_string(),
            ..Default::default()
        })
    }

    async fn shutdown(
        &self,
        _ctx: &TtrpcContext,
        _req: api::ShutdownRequest,
    ) -> TtrpcResult<api::Empty> {
        // A Create still running (one containerd gave up on finishes or undoes itself first):
        // exiting under it would leave its VM's files behind.
        let _creating = self.inner.create_lock.lock().await;
        self.exit_if_no_containers("Shutdown").await;
        Ok(api::Empty::new())
    }

    async fn pids(
        &self,
        _ctx: &TtrpcContext,
        req: api::PidsRequest,
    ) -> TtrpcResult<api::PidsResponse> {
        let c = self.container(&req.id).await?;
        let pids = c
            .sandbox
            .agent
            .list_processes(&c.id)
            .await
            .map_err(|e| agent_err("list the container's processes", e))?;
        Ok(api::PidsResponse {
            processes: pids
                .into_iter()
                .map(|pid| api::ProcessInfo {
                    pid,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        })
    }

    async fn pause(&self, _ctx: &TtrpcContext, req: api::PauseRequest) -> TtrpcResult<api::Empty> {
        info!(id = %req.id, "Pause");
        self.set_paused(&req.id, true).await
    }

    async fn resume(
        &self,
        _ctx: &TtrpcContext,
        req: api::ResumeRequest,
    ) -> TtrpcResult<api::Empty> {
        info!(id = %req.id, "Resume");
        self.set_paused(&req.id, false).await
    }

    async fn checkpoint(
        &self,
        _ctx: &TtrpcContext,
        _req: api::CheckpointTaskRequest,
    ) -> TtrpcResult<api::Empty> {
        Err(rpc_err(
            Code::UNIMPLEMENTED,
            "checkpoint is not supported by the kata-rs runtime (the container runs in a VM; \
             there is no CRIU in the guest)",
        ))
    }

    async fn exec(
        &self,
        _ctx: &TtrpcContext,
        req: api::ExecProcessRequest,
    ) -> TtrpcResult<api::Empty> {
        info!(id = %req.id, exec = %req.exec_id, "Exec");
        validate_id(&req.exec_id)
            .map_err(|e| rpc_err(Code::INVALID_ARGUMENT, format!("exec id: {e}")))?;
        let c = self.container(&req.id).await?;
        if c.init.status() != Status::Running || c.sandbox.vmm.exited().is_some() {
            return Err(rpc_err(
                Code::FAILED_PRECONDITION,
                format!("container {} is not running", c.id),
            ));
        }
        let (process, json): (oci_spec::runtime::Process, Vec<u8>) =
            any_json(req.spec.as_ref(), "the exec process spec")?;
        if process.args().as_ref().is_none_or(|a| a.is_empty()) {
            return Err(rpc_err(
                Code::INVALID_ARGUMENT,
                "the exec process spec has no args",
            ));
        }
        let terminal = req.terminal || process.terminal().unwrap_or(false);
        let p = Arc::new(Process::new(
            c.id.clone(),
            req.exec_id.clone(),
            Stdio::new(&req.stdin, &req.stdout, &req.stderr, terminal),
            json,
            c.sandbox.clone(),
        ));
        {
            let mut execs = c.execs_lock();
            if execs.contains_key(&req.exec_id) {
                return Err(rpc_err(
                    Code::ALREADY_EXISTS,
                    format!("exec {} already exists", req.exec_id),
                ));
            }
            if execs.len() >= MAX_EXECS {
                return Err(rpc_err(
                    Code::RESOURCE_EXHAUSTED,
                    format!("container {} has {MAX_EXECS} exec processes", c.id),
                ));
            }
            execs.insert(req.exec_id.clone(), p);
        }
        self.inner
            .publish(Box::new(TaskExecAdded {
                container_id: c.id.clone(),
                exec_id: req.exec_id.clone(),
                ..Default::default()
            }))
            .await;
        Ok(api::Empty::new())
    }

    async fn resize_pty(
        &self,
        _ctx: &TtrpcContext,
        req: api::ResizePtyRequest,
    ) -> TtrpcResult<api::Empty> {
        debug!(id = %req.id, exec = %req.exec_id, req.width, req.height, "ResizePty");
        let (c, p) = self.process(&req.id, &req.exec_id).await?;
        if !p.stdio.terminal {
            return Err(rpc_err(
                Code::FAILED_PRECONDITION,
                format!("process {} has no terminal", p.task_id()),
            ));
        }
        if p.status() != Status::Running {
            // containerd resizes right after Start; before it, there is no tty yet.
            return Ok(api::Empty::new());
        }
        c.sandbox
            .agent
            .tty_win_resize(&c.id, &p.exec_id, req.height, req.width)
            .await
            .map_err(|e| agent_err("resize the terminal", e))?;
        Ok(api::Empty::new())
    }

    async fn update(
        &self,
        _ctx: &TtrpcContext,
        req: api::UpdateTaskRequest,
    ) -> TtrpcResult<api::Empty> {
        info!(id = %req.id, "Update");
        let c = self.container(&req.id).await?;
        let (_, json): (oci_spec::runtime::LinuxResources, Vec<u8>) =
            any_json(req.resources.as_ref(), "the resources")?;
        c.sandbox
            .agent
            .update_container(&c.id, json)
            .await
            .map_err(|e| agent_err("update the container's resources", e))?;
        Ok(api::Empty::new())
    }

    async fn stats(
        &self,
        _ctx: &TtrpcContext,
        req: api::StatsRequest,
    ) -> TtrpcResult<api::StatsResponse> {
        let c = self.container(&req.id).await?;
        let s = c
            .sandbox
            .agent
            .stats_container(&c.id)
            .await
            .map_err(|e| agent_err("read the container's statistics", e))?;
        let any =
            metrics::pack(&metrics::to_metrics(&s)).map_err(|e| rpc_err(Code::INTERNAL, e))?;
        Ok(api::StatsResponse {
            stats: MessageField::some(any),
            ..Default::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_size_is_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("config.json");
        std::fs::write(&p, vec![b' '; (MAX_SPEC_SIZE + 1) as usize]).unwrap();
        assert!(read_spec(&p).unwrap_err().contains("larger than"));
        std::fs::write(&p, b"{}").unwrap();
        assert_eq!(read_spec(&p).unwrap(), b"{}");
        assert!(read_spec(&dir.path().join("none"))
            .unwrap_err()
            .contains("cannot read OCI spec"));
    }

    /// The ttrpc server drops a handler on the request's deadline: the detached work still
    /// runs to its end (its rollback included) and learns that nobody waits for it.
    #[tokio::test]
    async fn detached_work_survives_a_dropped_request_and_knows_it() {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let abandoned = Abandoned::default();
        let flag = abandoned.flag();
        let handler = detached("Create", abandoned, async move {
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            let _ = tx.send(flag.load(Ordering::SeqCst));
            Ok(())
        });
        // The deadline hits while the work sleeps.
        let r = tokio::time::timeout(std::time::Duration::from_millis(20), handler).await;
        assert!(r.is_err(), "the handler was cut off");
        assert_eq!(
            rx.await,
            Ok(true),
            "the work finished, and saw that it was abandoned"
        );

        // A request that waits to the end: not abandoned.
        let abandoned = Abandoned::default();
        let flag = abandoned.flag();
        let r = detached("Delete", abandoned, async { Ok(7) }).await;
        assert_eq!(r.unwrap(), 7);
        assert!(!flag.load(Ordering::SeqCst));
    }

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
