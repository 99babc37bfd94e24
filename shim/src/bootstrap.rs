//! The shim process as containerd starts it: the `start` subcommand (which shim process
//! serves a container: pods group by sandbox id), the `delete` subcommand (a lost shim's
//! cleanup, `crate::lost`), and the Task service the server registers.

use std::{path::PathBuf, sync::Arc};

use async_trait::async_trait;
use containerd_shim::{
    asynchronous::{spawn, util::write_str_to_file, ExitSignal, Shim},
    publisher::RemotePublisher,
    Config as ShimConfig, DeleteResponse, Error as CrateError, Flags, StartOpts,
};
use tracing::warn;

use crate::{
    config::Config,
    lost::{cleanup_lost_network, cleanup_lost_shim, LostBundle},
    pod,
    task::TaskService,
};

/// containerd's runtime name for this shim.
pub const RUNTIME_ID: &str = "io.containerd.kata.v2";

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

    async fn start_shim(&mut self, opts: StartOpts) -> Result<String, CrateError> {
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
                    CrateError::Other(format!("write the shim address to containerd: {e}"))
                })?;
            std::process::exit(0);
        }
        Ok(address)
    }

    async fn delete_shim(&mut self) -> Result<DeleteResponse, CrateError> {
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
        TaskService::new(self.namespace.clone(), self.exit.clone(), publisher)
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
