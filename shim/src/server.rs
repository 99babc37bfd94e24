//! The shim server (the process containerd talks to after `start`).
//!
//! `containerd_shim::asynchronous::run` serves only `containerd.task.v3.Task`, the name
//! containerd 2.x uses; containerd 1.6/1.7 call `containerd.task.v2.Task`, whose messages
//! are the same on the wire. So the server is set up here, with the Task service
//! registered under both names; `start`, `delete` and `-info` still go through the crate.

use std::{
    ffi::OsString,
    os::unix::{fs::FileTypeExt, net::UnixListener},
    path::Path,
    sync::Arc,
};

use anyhow::{anyhow, Context as _};
use containerd_shim::{asynchronous::Shim, publisher::RemotePublisher, Flags};
use containerd_shim_protos::shim_async::{create_task, Task};
use tracing::{info, warn};
use ttrpc::asynchronous::{transport::Listener, Server};

use crate::bootstrap::{shim_config, KataShim, RUNTIME_ID};

/// Task API service name of containerd 2.x (what `create_task` registers).
pub const TASK_V3: &str = "containerd.task.v3.Task";
/// Task API service name of containerd 1.x.
pub const TASK_V2: &str = "containerd.task.v2.Task";

/// What `main` should do with the command line.
#[derive(Debug, PartialEq, Eq)]
pub enum Mode {
    /// `-v`/`-version`: print the version.
    Version,
    /// Serve the Task API ([`serve`]).
    Serve,
    /// `start`, `delete` or `-info`: `containerd_shim::asynchronous::run`.
    Crate,
}

/// Decides the [`Mode`] for `args` (without the program name); parse errors go to the
/// crate, which reports them.
pub fn mode(args: &[OsString]) -> (Mode, Option<Flags>) {
    match containerd_shim::parse(args) {
        Ok(f) if f.version => (Mode::Version, Some(f)),
        Ok(f) if !f.info && f.action != "start" && f.action != "delete" => (Mode::Serve, Some(f)),
        Ok(f) => (Mode::Crate, Some(f)),
        Err(_) => (Mode::Crate, None),
    }
}

/// Runs the shim server until Shutdown, as the crate's own server does (logger on
/// containerd's log FIFO, events to containerd's ttrpc address, the socket from `-socket`),
/// with the Task service under both the v2 and the v3 name.
pub async fn serve(flags: Flags) -> anyhow::Result<()> {
    if flags.socket.is_empty() {
        return Err(anyhow!("-socket is required"));
    }
    let config = shim_config();
    if !config.no_setup_logger {
        containerd_shim::logger::init(
            flags.debug,
            &config.default_log_level,
            &flags.namespace,
            &flags.id,
        )
        .context("set up the log FIFO")?;
    }
    let ttrpc_address = std::env::var("TTRPC_ADDRESS").context("TTRPC_ADDRESS is not set")?;
    let publisher = RemotePublisher::new(&ttrpc_address)
        .await
        .with_context(|| format!("connect to containerd at {ttrpc_address}"))?;
    let mut config = config;
    let mut shim = KataShim::new(RUNTIME_ID, &flags, &mut config).await;
    let task: Arc<dyn Task + Send + Sync> = Arc::new(shim.create_task_service(publisher).await);
    let mut services = create_task(task.clone());
    let v2 = create_task(task)
        .remove(TASK_V3)
        .ok_or_else(|| anyhow!("containerd-shim-protos has no {TASK_V3}"))?;
    services.insert(TASK_V2.to_string(), v2);

    let path = flags
        .socket
        .strip_prefix("unix://")
        .unwrap_or(&flags.socket)
        .to_string();
    let listener = match bind(&path).await? {
        Some(l) => l,
        None => {
            // Another server of this group already serves the socket.
            info!("{path} is already served");
            signal_server_started();
            return Ok(());
        }
    };
    let listener = Listener::try_from(listener).context("ttrpc listener")?;
    let mut server = Server::new()
        .add_listener(listener)
        .register_service(services);
    server.start().await.context("start the ttrpc server")?;
    signal_server_started();
    info!("shim {} serving on {path}", env!("CARGO_PKG_VERSION"));

    // containerd may send SIGTERM/SIGINT; the shim ends only by Shutdown (the VMM's
    // PR_SET_PDEATHSIG kills it with the shim if something kills the shim).
    tokio::spawn(async {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            return;
        };
        loop {
            tokio::select! {
                _ = term.recv() => info!("received SIGTERM"),
                _ = int.recv() => info!("received SIGINT"),
            }
        }
    });
    shim.wait().await;
    info!("shutting down");
    let _ = server.shutdown().await;
    if let Err(e) = std::fs::remove_file(&path) {
        warn!("remove {path}: {e}");
    }
    // A template this shim is still making ([factory]) is finished (bounded) rather than
    // killed with the shim.
    crate::factory::wait_pending(std::time::Duration::from_secs(180)).await;
    Ok(())
}

/// Binds the socket; `None` when a live server already listens there (a stale socket
/// file is replaced).
async fn bind(path: &str) -> anyhow::Result<Option<UnixListener>> {
    if let Some(dir) = Path::new(path).parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    }
    match UnixListener::bind(path) {
        Ok(l) => Ok(Some(l)),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            if tokio::net::UnixStream::connect(path).await.is_ok() {
                return Ok(None);
            }
            if std::fs::metadata(path)
                .map(|m| m.file_type().is_socket())
                .unwrap_or(false)
            {
                std::fs::remove_file(path).with_context(|| format!("remove stale {path}"))?;
            }
            Ok(Some(
                UnixListener::bind(path).with_context(|| format!("bind {path}"))?,
            ))
        }
        Err(e) => Err(e).with_context(|| format!("bind {path}")),
    }
}

/// Tells `start` (which reads our stdout until EOF) that the server is up, by pointing
/// stdout at stderr.
fn signal_server_started() {
    // SAFETY: dup2 on the process's own standard descriptors; no Rust object owns fd 1
    // exclusively (std's Stdout only writes to it).
    let r = unsafe { libc::dup2(libc::STDERR_FILENO, libc::STDOUT_FILENO) };
    if r < 0 {
        warn!("dup2: {}", std::io::Error::last_os_error());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> Vec<OsString> {
        s.split_whitespace().map(OsString::from).collect()
    }

    #[test]
    fn modes() {
        assert_eq!(
            mode(&a("-namespace default -id x -address /a -socket unix:///s")).0,
            Mode::Serve
        );
        assert_eq!(
            mode(&a("-namespace default -id x -address /a start")).0,
            Mode::Crate
        );
        assert_eq!(
            mode(&a("-namespace default -id x -bundle /b delete")).0,
            Mode::Crate
        );
        assert_eq!(mode(&a("-info")).0, Mode::Crate);
        assert_eq!(mode(&a("-v")).0, Mode::Version);
    }

    #[test]
    fn task_service_is_registered_under_the_v3_name() {
        // The alias in `serve` relies on this name.
        struct Nop;
        #[async_trait::async_trait]
        impl Task for Nop {}
        let s = create_task(Arc::new(Nop));
        assert!(
            s.contains_key(TASK_V3),
            "{:?}",
            s.keys().collect::<Vec<_>>()
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn bind_replaces_stale_socket_and_sees_live_one() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s/sock");
        let p = p.to_str().unwrap();
        let l = bind(p).await.unwrap().unwrap();
        l.set_nonblocking(true).unwrap();
        let _l = tokio::net::UnixListener::from_std(l).unwrap();
        assert!(bind(p).await.unwrap().is_none());
        drop(_l);
        assert!(bind(p).await.unwrap().is_some());
    }
}
