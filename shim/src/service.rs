//! The containerd side: the `Shim` (start/delete subcommands) and the `Task` ttrpc service.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::Arc,
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
    events::task::{TaskCreate, TaskDelete, TaskExit, TaskIO, TaskStart},
    protobuf::{EnumOrUnknown, MessageDyn, MessageField},
    shim_async::Task,
};
use tokio::sync::Mutex;
use tracing::{debug, error, info, warn};
use ttrpc::{Code, Error as TtrpcError};

use crate::{
    config::{Config, ConfigFile, ConfigSource},
    container::{Container, Status},
    cpio,
    sandbox::{Sandbox, SandboxPaths},
    util::{timestamp, validate_id, Rollback},
};

/// containerd's runtime name for this shim.
pub const RUNTIME_ID: &str = "io.containerd.kata.v2";

/// Largest config.json accepted.
const MAX_SPEC_SIZE: u64 = 4 * 1024 * 1024;

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
        // One shim per container for now; grouping by the CRI sandbox annotation comes
        // later (the grouping key picks the socket, hence the shim process).
        let grouping = opts.id.clone();
        let legacy = opts.containerd_version.is_empty();
        let address = spawn(opts, &grouping, Vec::new()).await?;
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
        Ok(cleanup_lost_shim(&self.id, &self.bundle))
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
            }),
        }
    }
}

/// What the `delete` subcommand does after containerd lost a shim: kill the sandbox's VMM
/// if it is still there (pid file in the state directory), unmount `<bundle>/rootfs`,
/// remove the sandbox's files; report exit status 128+9.
pub fn cleanup_lost_shim(id: &str, bundle: &Path) -> DeleteResponse {
    let config = Config::load().unwrap_or_else(|e| {
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
        if let Err(e) = paths.remove(config.file.runtime.debug) {
            eprintln!("kata-rs: {e}");
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
}

struct Inner {
    namespace: String,
    exit: Arc<ExitSignal>,
    publisher: RemotePublisher,
    state: Mutex<State>,
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
    async fn container(&self, id: &str, exec_id: &str) -> TtrpcResult<Arc<Container>> {
        if !exec_id.is_empty() {
            return Err(rpc_err(
                Code::NOT_FOUND,
                format!("exec {exec_id} not found (exec is not implemented yet)"),
            ));
        }
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
        if req.terminal {
            return Err(rpc_err(
                Code::UNIMPLEMENTED,
                "terminal (tty) containers are not supported yet",
            ));
        }
        if !req.checkpoint.is_empty() {
            return Err(rpc_err(
                Code::UNIMPLEMENTED,
                "checkpoint/restore is not supported",
            ));
        }
        let config =
            Config::load().map_err(|e| rpc_err(Code::FAILED_PRECONDITION, e.to_string()))?;
        config
            .validate()
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
        if spec
            .process()
            .as_ref()
            .is_some_and(|p| p.terminal().unwrap_or(false))
        {
            return Err(rpc_err(
                Code::UNIMPLEMENTED,
                "terminal (tty) containers are not supported yet",
            ));
        }

        // Sandbox id: the container id for now (one sandbox per container).
        let sandbox_id = id.to_string();
        let paths = SandboxPaths::new(&config, &sandbox_id);
        let mut rb = Rollback::new();
        let result = self
            .create_steps(
                req,
                &config,
                &spec,
                spec_bytes,
                &bundle,
                &sandbox_id,
                paths,
                &mut rb,
            )
            .await;
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
        rb: &mut Rollback,
    ) -> Result<Arc<Container>, TtrpcError> {
        let id = req.id.as_str();
        let fail = |code: Code| move |e: String| rpc_err(code, e);

        // The root file system: containerd's mounts on <bundle>/rootfs, or the directory
        // the spec names when containerd passed none.
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

        // Sandbox files.
        for dir in [
            &paths.state_dir,
            paths.console_log.parent().unwrap_or(Path::new("/")),
        ] {
            std::fs::create_dir_all(dir)
                .map_err(|e| fail(Code::UNKNOWN)(format!("create {}: {e}", dir.display())))?;
        }
        let p = paths.clone();
        let keep = config.file.runtime.debug;
        rb.push(
            format!("remove {}", paths.state_dir.display()),
            async move { p.remove(keep) },
        );

        // Pack the rootfs for the guest.
        let cpio_path = paths.state_dir.join(format!("{id}-rootfs.cpio"));
        let (src, dst, cid) = (rootfs.clone(), cpio_path.clone(), id.to_string());
        let t0 = std::time::Instant::now();
        let entries = tokio::task::spawn_blocking(move || cpio::pack_rootfs(&src, &cid, &dst))
            .await
            .map_err(|e| fail(Code::UNKNOWN)(format!("packing the rootfs: {e}")))?
            .map_err(|e| {
                fail(Code::UNKNOWN)(format!(
                    "packing the container rootfs {}: {e}",
                    rootfs.display()
                ))
            })?;
        info!(
            id,
            entries,
            "packed rootfs into {} in {:?}",
            cpio_path.display(),
            t0.elapsed()
        );

        // Boot the VM.
        let sandbox = Sandbox::start(config, sandbox_id, paths.clone(), vec![cpio_path])
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
        sandbox
            .agent
            .create_container(
                id,
                spec_bytes,
                &cpio::guest_rootfs_path(id),
                !req.stdin.is_empty(),
            )
            .await
            .map_err(|e| {
                rpc_err(
                    Code::UNKNOWN,
                    format!("the agent could not create the container: {e}"),
                )
            })?;

        let stdio = Stdio::new(&req.stdin, &req.stdout, &req.stderr, req.terminal);
        Ok(Arc::new(Container::new(
            id.to_string(),
            req.bundle.clone(),
            stdio,
            mounted,
            sandbox,
        )))
    }

    /// Starts the process and the task that reports its exit.
    async fn do_start(&self, c: Arc<Container>) -> TtrpcResult<u32> {
        match c.status() {
            Status::Created => {}
            s => {
                return Err(rpc_err(
                    Code::FAILED_PRECONDITION,
                    format!("container {} is {s:?}, not created", c.id),
                ))
            }
        }
        c.sandbox.agent.start_container(&c.id).await.map_err(|e| {
            rpc_err(
                Code::UNKNOWN,
                format!("the agent could not start the container: {e}"),
            )
        })?;
        c.set_status(Status::Running);
        let pid = c.sandbox.vmm.pid();
        self.inner
            .publish(Box::new(TaskStart {
                container_id: c.id.clone(),
                pid,
                ..Default::default()
            }))
            .await;
        let pumps = c.start_io();
        let inner = self.inner.clone();
        let drain = c.sandbox.config().io_drain_timeout();
        tokio::spawn(async move {
            let status = c.wait_process(pumps, drain).await;
            inner
                .publish(Box::new(TaskExit {
                    container_id: c.id.clone(),
                    id: c.id.clone(),
                    pid,
                    exit_status: status,
                    exited_at: MessageField::some(timestamp(SystemTime::now())),
                    ..Default::default()
                }))
                .await;
            let e = c.set_exited(status);
            info!(id = %c.id, "container exited with status {}", e.status);
        });
        Ok(pid)
    }
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

fn unimplemented(what: &str) -> TtrpcError {
    rpc_err(
        Code::UNIMPLEMENTED,
        format!("{what} is not implemented by the kata-rs shim"),
    )
}

#[async_trait]
impl Task for TaskService {
    async fn create(
        &self,
        _ctx: &TtrpcContext,
        req: api::CreateTaskRequest,
    ) -> TtrpcResult<api::CreateTaskResponse> {
        info!(id = %req.id, bundle = %req.bundle, "Create");
        // Held for the whole create: one create at a time, and no other request sees a
        // half-created container.
        let mut state = self.inner.state.lock().await;
        if state.containers.contains_key(&req.id) {
            return Err(rpc_err(
                Code::ALREADY_EXISTS,
                format!("container {} already exists", req.id),
            ));
        }
        if !state.containers.is_empty() {
            return Err(rpc_err(
                Code::FAILED_PRECONDITION,
                "this shim already runs a container (one container per shim for now)",
            ));
        }
        let (c, pid) = match self.do_create(&req).await {
            Ok(x) => x,
            Err(e) => {
                warn!(id = %req.id, "Create failed: {}", status_text(&e));
                return Err(e);
            }
        };
        state.containers.insert(req.id.clone(), c);
        drop(state);
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
        info!(id = %req.id, pid, "created");
        Ok(api::CreateTaskResponse {
            pid,
            ..Default::default()
        })
    }

    async fn start(
        &self,
        _ctx: &TtrpcContext,
        req: api::StartRequest,
    ) -> TtrpcResult<api::StartResponse> {
        info!(id = %req.id, "Start");
        let c = self.container(&req.id, &req.exec_id).await?;
        let pid = self.do_start(c).await?;
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
        let c = self.container(&req.id, &req.exec_id).await?;
        let status = match c.status() {
            Status::Created => api::Status::CREATED,
            Status::Running => api::Status::RUNNING,
            Status::Stopped => api::Status::STOPPED,
        };
        let exit = c.exit();
        Ok(api::StateResponse {
            id: c.id.clone(),
            bundle: c.bundle.clone(),
            pid: c.sandbox.vmm.pid(),
            status: EnumOrUnknown::new(status),
            stdin: c.stdio.stdin.clone(),
            stdout: c.stdio.stdout.clone(),
            stderr: c.stdio.stderr.clone(),
            terminal: false,
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
        debug!(id = %req.id, "Wait");
        let c = self.container(&req.id, &req.exec_id).await?;
        let e = c.wait().await;
        Ok(api::WaitResponse {
            exit_status: e.status,
            exited_at: MessageField::some(timestamp(e.at)),
            ..Default::default()
        })
    }

    async fn kill(&self, _ctx: &TtrpcContext, req: api::KillRequest) -> TtrpcResult<api::Empty> {
        info!(id = %req.id, signal = req.signal, "Kill");
        let c = self.container(&req.id, &req.exec_id).await?;
        if c.status() == Status::Stopped || c.sandbox.vmm.exited().is_some() {
            return Err(rpc_err(Code::NOT_FOUND, "process already finished"));
        }
        let r = c.sandbox.agent.signal_process(&c.id, "", req.signal).await;
        if c.status() == Status::Created {
            // Never started: there is no WaitProcess to report the end; report it here.
            if let Err(e) = r {
                debug!(id = %c.id, "SignalProcess on a created container: {e}");
            }
            let status = 128 + req.signal.min(127);
            self.inner
                .publish(Box::new(TaskExit {
                    container_id: c.id.clone(),
                    id: c.id.clone(),
                    pid: c.sandbox.vmm.pid(),
                    exit_status: status,
                    exited_at: MessageField::some(timestamp(SystemTime::now())),
                    ..Default::default()
                }))
                .await;
            c.set_exited(status);
            return Ok(api::Empty::new());
        }
        r.map_err(|e| {
            rpc_err(
                Code::UNKNOWN,
                format!("the agent could not signal the container: {e}"),
            )
        })?;
        Ok(api::Empty::new())
    }

    async fn delete(
        &self,
        _ctx: &TtrpcContext,
        req: api::DeleteRequest,
    ) -> TtrpcResult<api::DeleteResponse> {
        info!(id = %req.id, "Delete");
        let c = self.container(&req.id, &req.exec_id).await?;
        if c.status() == Status::Running && c.sandbox.vmm.exited().is_none() {
            return Err(rpc_err(
                Code::FAILED_PRECONDITION,
                format!("container {} is running; kill it first", c.id),
            ));
        }
        let exit = c.set_exited(128 + 9);
        self.inner.state.lock().await.containers.remove(&c.id);

        if c.sandbox.vmm.exited().is_none() {
            if let Err(e) = c.sandbox.agent.remove_container(&c.id).await {
                warn!(id = %c.id, "RemoveContainer: {e}");
            }
        }
        c.shutdown_io().await;
        // The sandbox holds only this container today: stop the VM with it.
        let vm_exit = c.sandbox.stop().await;
        info!(id = %c.id, "VMM {vm_exit}");
        let mut errors = Vec::new();
        if let Some(m) = &c.mounted_rootfs {
            if let Err(e) = unmount(m) {
                errors.push(format!("unmount {}: {e}", m.display()));
            }
        }
        if let Err(e) = c.sandbox.paths.remove(c.sandbox.keep_console()) {
            errors.push(e);
        }
        let pid = c.sandbox.vmm.pid();
        self.inner
            .publish(Box::new(TaskDelete {
                container_id: c.id.clone(),
                pid,
                exit_status: exit.status,
                exited_at: MessageField::some(timestamp(exit.at)),
                ..Default::default()
            }))
            .await;
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

    async fn close_io(
        &self,
        _ctx: &TtrpcContext,
        req: api::CloseIORequest,
    ) -> TtrpcResult<api::Empty> {
        let c = self.container(&req.id, &req.exec_id).await?;
        if req.stdin {
            c.close_stdin();
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
        let state = self.inner.state.lock().await;
        if !state.containers.is_empty() {
            debug!(
                "Shutdown ignored: {} container(s) left",
                state.containers.len()
            );
            return Ok(api::Empty::new());
        }
        info!("Shutdown: no containers left, exiting");
        self.inner.exit.signal();
        Ok(api::Empty::new())
    }

    async fn pids(
        &self,
        _ctx: &TtrpcContext,
        _req: api::PidsRequest,
    ) -> TtrpcResult<api::PidsResponse> {
        Err(unimplemented("Pids"))
    }

    async fn pause(&self, _ctx: &TtrpcContext, _req: api::PauseRequest) -> TtrpcResult<api::Empty> {
        Err(unimplemented("Pause"))
    }

    async fn resume(
        &self,
        _ctx: &TtrpcContext,
        _req: api::ResumeRequest,
    ) -> TtrpcResult<api::Empty> {
        Err(unimplemented("Resume"))
    }

    async fn checkpoint(
        &self,
        _ctx: &TtrpcContext,
        _req: api::CheckpointTaskRequest,
    ) -> TtrpcResult<api::Empty> {
        Err(unimplemented("Checkpoint"))
    }

    async fn exec(
        &self,
        _ctx: &TtrpcContext,
        _req: api::ExecProcessRequest,
    ) -> TtrpcResult<api::Empty> {
        Err(unimplemented("Exec"))
    }

    async fn resize_pty(
        &self,
        _ctx: &TtrpcContext,
        _req: api::ResizePtyRequest,
    ) -> TtrpcResult<api::Empty> {
        Err(unimplemented("ResizePty"))
    }

    async fn update(
        &self,
        _ctx: &TtrpcContext,
        _req: api::UpdateTaskRequest,
    ) -> TtrpcResult<api::Empty> {
        Err(unimplemented("Update"))
    }

    async fn stats(
        &self,
        _ctx: &TtrpcContext,
        _req: api::StatsRequest,
    ) -> TtrpcResult<api::StatsResponse> {
        Err(unimplemented("Stats"))
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

    #[test]
    fn lost_shim_cleanup_without_anything_left_reports_137() {
        let dir = tempfile::tempdir().unwrap();
        let r = cleanup_lost_shim("c1", dir.path());
        assert_eq!(r.exit_status, 137);
        assert_eq!(r.pid, 0);
        assert!(r.exited_at.is_some());
    }
}
