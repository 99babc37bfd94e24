//! The client side of the agent API (protocol/protos/agent.proto) over the VMM's hybrid vsock
//! socket (`<state_dir>/<sandbox>/kata-vmm.vsock`: a Unix socket only root can open, then
//! `CONNECT <port>\n` / `OK <hostport>\n`, then ttrpc; see vmm/README.md "vsock"), with a
//! timeout on every request except the ones that wait for the container, and error texts
//! from the guest bounded and cleaned before they reach logs or containerd.

mod dial;
mod error;
mod ready;

use std::path::Path;
use std::time::Duration;

use kata_rs_protocol::{agent as pb, agent_ttrpc::AgentServiceClient};

use crate::util::sanitize;
use error::{map_err, MAX_ERROR_TEXT};

pub use dial::{check_reply, dial};
pub use error::AgentError;
pub use ready::{wait_ready, NotReady, Tries, RETRY_PAUSE};

/// How much later than the shim's own timeout a request's ttrpc deadline falls.
const CONTEXT_GRACE: Duration = Duration::from_secs(1);
/// Largest chunk asked for (and accepted) in one ReadStdout/ReadStderr.
pub const READ_CHUNK: u32 = 32 * 1024;
/// Most pids accepted from one ListProcesses.
pub const MAX_PIDS: usize = 65_536;
/// Most memory.stat entries accepted from one StatsContainer.
pub const MAX_MEMORY_STAT_KEYS: usize = 256;
/// Most device names accepted from one AfterRestore.
pub const MAX_PROBED: usize = 64;

/// A connection to one VM's agent.
#[derive(Clone)]
pub struct Agent {
    client: AgentServiceClient,
    timeout: Duration,
}

impl Agent {
    /// Connects to guest port `port` through the VMM's hybrid vsock socket `uds`, giving up
    /// after `connect_timeout`; requests then time out after `request_timeout`.
    pub async fn connect(
        uds: &Path,
        port: u32,
        connect_timeout: Duration,
        request_timeout: Duration,
    ) -> Result<Agent, AgentError> {
        let stream = match tokio::time::timeout(connect_timeout, dial(uds, port)).await {
            Ok(Ok(s)) => s,
            Ok(Err(message)) => {
                return Err(AgentError::Transport {
                    method: "connect",
                    message: sanitize(&message, MAX_ERROR_TEXT),
                })
            }
            Err(_) => {
                return Err(AgentError::Timeout {
                    method: "connect",
                    after: connect_timeout,
                })
            }
        };
        let socket = ttrpc::asynchronous::transport::Socket::new(stream);
        Ok(Agent {
            client: AgentServiceClient::new(ttrpc::asynchronous::Client::new(socket)),
            timeout: request_timeout,
        })
    }

    /// The request's ttrpc context: its deadline (which the agent also sees) is a second
    /// after [`Agent::timed`]'s, so that a guest that does not answer is reported as
    /// [`AgentError::Timeout`] naming the request and the time, not as the ttrpc client's
    /// own "Request deadline elapsed".
    fn ctx(&self) -> ttrpc::context::Context {
        let deadline = self.timeout + CONTEXT_GRACE;
        ttrpc::context::with_timeout(deadline.as_nanos().min(i64::MAX as u128) as i64)
    }

    async fn timed<T>(
        &self,
        method: &'static str,
        fut: impl std::future::Future<Output = ttrpc::Result<T>>,
    ) -> Result<T, AgentError> {
        match tokio::time::timeout(self.timeout, fut).await {
            Ok(r) => r.map_err(|e| map_err(method, e)),
            Err(_) => Err(AgentError::Timeout {
                method,
                after: self.timeout,
            }),
        }
    }

    /// `Check`: agent version and guest kernel release.
    pub async fn check(&self) -> Result<pb::CheckResponse, AgentError> {
        let r = self
            .timed(
                "Check",
                self.client.check(self.ctx(), &pb::CheckRequest::new()),
            )
            .await?;
        Ok(pb::CheckResponse {
            version: sanitize(&r.version, 128),
            kernel_release: sanitize(&r.kernel_release, 128),
            ..Default::default()
        })
    }

    /// `CreateContainer`.
    #[allow(clippy::too_many_arguments)]
    pub async fn create_container(
        &self,
        id: &str,
        spec: Vec<u8>,
        rootfs_path: &str,
        stdin: bool,
        terminal: bool,
        sandbox_id: &str,
    ) -> Result<(), AgentError> {
        let req = pb::CreateContainerRequest {
            container_id: id.to_string(),
            oci_spec: spec,
            rootfs_path: rootfs_path.to_string(),
            stdin,
            terminal,
            sandbox_id: sandbox_id.to_string(),
            ..Default::default()
        };
        self.timed(
            "CreateContainer",
            self.client.create_container(self.ctx(), &req),
        )
        .await?;
        Ok(())
    }

    /// `StartContainer`: the process's pid in the guest.
    pub async fn start_container(&self, id: &str) -> Result<u32, AgentError> {
        let req = pb::ContainerRequest {
            container_id: id.to_string(),
            ..Default::default()
        };
        Ok(self
            .timed(
                "StartContainer",
                self.client.start_container(self.ctx(), &req),
            )
            .await?
            .pid)
    }

    /// `SignalProcess`.
    pub async fn signal_process(
        &self,
        id: &str,
        exec_id: &str,
        signal: u32,
    ) -> Result<(), AgentError> {
        let req = pb::SignalProcessRequest {
            container_id: id.to_string(),
            exec_id: exec_id.to_string(),
            signal,
            ..Default::default()
        };
        self.timed(
            "SignalProcess",
            self.client.signal_process(self.ctx(), &req),
        )
        .await?;
        Ok(())
    }

    /// `WaitProcess`, without a timeout (it lasts as long as the process): the exit status
    /// (made safe: 0..=255) and, for an init, whether an unreported OOM kill goes with it.
    pub async fn wait_process(&self, id: &str, exec_id: &str) -> Result<(u32, bool), AgentError> {
        let r = self
            .client
            .wait_process(
                ttrpc::context::Context::default(),
                &wait_request(id, exec_id),
            )
            .await
            .map_err(|e| map_err("WaitProcess", e))?;
        Ok(exit_of(&r))
    }

    /// `WaitProcess` bounded by the request timeout: `None` when the process has not
    /// ended by then (the agent answers a wait only at the exit).
    pub async fn wait_process_bounded(
        &self,
        id: &str,
        exec_id: &str,
    ) -> Result<Option<(u32, bool)>, AgentError> {
        let req = wait_request(id, exec_id);
        match self
            .timed("WaitProcess", self.client.wait_process(self.ctx(), &req))
            .await
        {
            Ok(r) => Ok(Some(exit_of(&r))),
            Err(AgentError::Timeout { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `ReadStdout` (`stderr == false`) or `ReadStderr`, without a timeout (it waits for
    /// output). An empty result means end of stream.
    pub async fn read_stream(
        &self,
        id: &str,
        exec_id: &str,
        stderr: bool,
    ) -> Result<Vec<u8>, AgentError> {
        let method = if stderr { "ReadStderr" } else { "ReadStdout" };
        let req = pb::ReadStreamRequest {
            container_id: id.to_string(),
            exec_id: exec_id.to_string(),
            len: READ_CHUNK,
            ..Default::default()
        };
        let ctx = ttrpc::context::Context::default();
        let r = if stderr {
            self.client.read_stderr(ctx, &req).await
        } else {
            self.client.read_stdout(ctx, &req).await
        }
        .map_err(|e| map_err(method, e))?;
        if r.data.len() > READ_CHUNK as usize {
            return Err(AgentError::BadReply {
                method,
                message: format!("{} bytes for a read of {READ_CHUNK}", r.data.len()),
            });
        }
        Ok(r.data)
    }

    /// `WriteStdin` of all of `data` (repeats for partial writes).
    pub async fn write_stdin(
        &self,
        id: &str,
        exec_id: &str,
        mut data: &[u8],
    ) -> Result<(), AgentError> {
        while !data.is_empty() {
            let req = pb::WriteStreamRequest {
                container_id: id.to_string(),
                exec_id: exec_id.to_string(),
                data: data.to_vec(),
                ..Default::default()
            };
            let n = self
                .timed("WriteStdin", self.client.write_stdin(self.ctx(), &req))
                .await?
                .len as usize;
            if n == 0 || n > data.len() {
                return Err(AgentError::BadReply {
                    method: "WriteStdin",
                    message: format!("wrote {n} of {} bytes", data.len()),
                });
            }
            data = &data[n..];
        }
        Ok(())
    }

    /// `CloseStdin`.
    pub async fn close_stdin(&self, id: &str, exec_id: &str) -> Result<(), AgentError> {
        let req = pb::CloseStdinRequest {
            container_id: id.to_string(),
            exec_id: exec_id.to_string(),
            ..Default::default()
        };
        self.timed("CloseStdin", self.client.close_stdin(self.ctx(), &req))
            .await?;
        Ok(())
    }

    /// `RemoveContainer`.
    pub async fn remove_container(&self, id: &str) -> Result<(), AgentError> {
        let req = pb::RemoveContainerRequest {
            container_id: id.to_string(),
            ..Default::default()
        };
        self.timed(
            "RemoveContainer",
            self.client.remove_container(self.ctx(), &req),
        )
        .await?;
        Ok(())
    }

    /// `ExecProcess`: starts `process_json` (an OCI `process` object) in container `id`;
    /// the exec'd process's pid in the guest.
    pub async fn exec_process(
        &self,
        id: &str,
        exec_id: &str,
        process_json: Vec<u8>,
        stdin: bool,
        terminal: bool,
    ) -> Result<u32, AgentError> {
        let req = pb::ExecProcessRequest {
            container_id: id.to_string(),
            exec_id: exec_id.to_string(),
            oci_process: process_json,
            stdin,
            terminal,
            ..Default::default()
        };
        Ok(self
            .timed("ExecProcess", self.client.exec_process(self.ctx(), &req))
            .await?
            .pid)
    }

    /// `TtyWinResize`.
    pub async fn tty_win_resize(
        &self,
        id: &str,
        exec_id: &str,
        rows: u32,
        columns: u32,
    ) -> Result<(), AgentError> {
        let req = pb::TtyWinResizeRequest {
            container_id: id.to_string(),
            exec_id: exec_id.to_string(),
            rows,
            columns,
            ..Default::default()
        };
        self.timed("TtyWinResize", self.client.tty_win_resize(self.ctx(), &req))
            .await?;
        Ok(())
    }

    fn container_req(id: &str) -> pb::ContainerRequest {
        pb::ContainerRequest {
            container_id: id.to_string(),
            ..Default::default()
        }
    }

    /// `PauseContainer` (`pause == true`) or `ResumeContainer`.
    pub async fn pause_resume(&self, id: &str, pause: bool) -> Result<(), AgentError> {
        let req = Self::container_req(id);
        if pause {
            self.timed(
                "PauseContainer",
                self.client.pause_container(self.ctx(), &req),
            )
            .await?;
        } else {
            self.timed(
                "ResumeContainer",
                self.client.resume_container(self.ctx(), &req),
            )
            .await?;
        }
        Ok(())
    }

    /// `UpdateContainer` with the OCI `linux.resources` JSON.
    pub async fn update_container(&self, id: &str, resources: Vec<u8>) -> Result<(), AgentError> {
        let req = pb::UpdateContainerRequest {
            container_id: id.to_string(),
            linux_resources: resources,
            ..Default::default()
        };
        self.timed(
            "UpdateContainer",
            self.client.update_container(self.ctx(), &req),
        )
        .await?;
        Ok(())
    }

    /// `StatsContainer`; at most [`MAX_MEMORY_STAT_KEYS`] memory.stat entries with sane keys
    /// are kept.
    pub async fn stats_container(
        &self,
        id: &str,
    ) -> Result<pb::StatsContainerResponse, AgentError> {
        let mut r = self
            .timed(
                "StatsContainer",
                self.client
                    .stats_container(self.ctx(), &Self::container_req(id)),
            )
            .await?;
        if r.memory_stat.len() > MAX_MEMORY_STAT_KEYS {
            return Err(AgentError::BadReply {
                method: "StatsContainer",
                message: format!("{} memory.stat entries", r.memory_stat.len()),
            });
        }
        r.memory_stat.retain(|k, _| {
            k.len() <= 64 && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        });
        Ok(r)
    }

    /// `ListProcesses`: the container's pids (at most [`MAX_PIDS`]).
    pub async fn list_processes(&self, id: &str) -> Result<Vec<u32>, AgentError> {
        let r = self
            .timed(
                "ListProcesses",
                self.client
                    .list_processes(self.ctx(), &Self::container_req(id)),
            )
            .await?;
        if r.pids.len() > MAX_PIDS {
            return Err(AgentError::BadReply {
                method: "ListProcesses",
                message: format!("{} pids", r.pids.len()),
            });
        }
        Ok(r.pids)
    }

    /// `GetOomEvent`, without a timeout (it waits for an OOM kill): the container named.
    pub async fn get_oom_event(&self) -> Result<String, AgentError> {
        let r = self
            .client
            .get_oom_event(ttrpc::context::Context::default(), &pb::Empty::new())
            .await
            .map_err(|e| map_err("GetOomEvent", e))?;
        // Guest text: bounded and cleaned before anyone logs or compares it.
        Ok(sanitize(&r.container_id, 128))
    }

    /// `SetGuestDateTime` with the host's current wall-clock time.
    pub async fn set_guest_date_time(&self) -> Result<(), AgentError> {
        let req = host_time();
        self.timed(
            "SetGuestDateTime",
            self.client.set_guest_date_time(self.ctx(), &req),
        )
        .await?;
        Ok(())
    }

    /// `UpdateInterface`: the guest interface with `iface.hw_addr` gets the pod's name,
    /// addresses and MTU; returns the interface as the agent reports it.
    pub async fn update_interface(
        &self,
        iface: pb::Interface,
    ) -> Result<pb::Interface, AgentError> {
        let req = pb::UpdateInterfaceRequest {
            interface: Some(iface).into(),
            ..Default::default()
        };
        self.timed(
            "UpdateInterface",
            self.client.update_interface(self.ctx(), &req),
        )
        .await
    }

    /// `UpdateRoutes`: the guest's routes on the named devices become `routes`.
    pub async fn update_routes(&self, routes: Vec<pb::Route>) -> Result<(), AgentError> {
        let req = pb::UpdateRoutesRequest {
            routes: Some(pb::Routes {
                routes,
                ..Default::default()
            })
            .into(),
            ..Default::default()
        };
        self.timed("UpdateRoutes", self.client.update_routes(self.ctx(), &req))
            .await?;
        Ok(())
    }

    /// `AddARPNeighbors`: static neighbour entries in the guest.
    pub async fn add_arp_neighbors(
        &self,
        neighbors: Vec<pb::ARPNeighbor>,
    ) -> Result<(), AgentError> {
        let req = pb::AddARPNeighborsRequest {
            neighbors: Some(pb::ARPNeighbors {
                neighbors,
                ..Default::default()
            })
            .into(),
            ..Default::default()
        };
        self.timed(
            "AddARPNeighbors",
            self.client.add_arp_neighbors(self.ctx(), &req),
        )
        .await?;
        Ok(())
    }

    /// Sets the guest's clock to the host's (after boot and after Resume, as Kata does);
    /// a failure is logged, never fatal (an older agent answers UNIMPLEMENTED).
    pub async fn sync_guest_clock(&self, sandbox: &str, when: &str) {
        match self.set_guest_date_time().await {
            Ok(()) => tracing::info!(sandbox, "guest clock set to the host's ({when})"),
            Err(e) => tracing::warn!(sandbox, "cannot set the guest clock ({when}): {e}"),
        }
    }

    /// `AfterRestore` (a VM restored from a template becomes this sandbox's): `entropy` for
    /// the guest's pool, its new `hostname` (empty: left as it is), the virtio-fs `share_tag`
    /// to mount (empty: none), and whether to probe the filled placeholder slots; the guest's
    /// clock is set to the host's first (no SetGuestDateTime round trip). Returns the
    /// platform devices the agent bound (at most [`MAX_PROBED`], each name cleaned).
    pub async fn after_restore(
        &self,
        entropy: Vec<u8>,
        hostname: &str,
        share_tag: &str,
        probe_devices: bool,
    ) -> Result<Vec<String>, AgentError> {
        let req = pb::AfterRestoreRequest {
            entropy,
            hostname: hostname.to_string(),
            share_tag: share_tag.to_string(),
            probe_devices,
            clock: Some(host_time()).into(),
            ..Default::default()
        };
        let r = self
            .timed("AfterRestore", self.client.after_restore(self.ctx(), &req))
            .await?;
        if r.probed.len() > MAX_PROBED {
            return Err(AgentError::BadReply {
                method: "AfterRestore",
                message: format!("{} probed devices (at most {MAX_PROBED})", r.probed.len()),
            });
        }
        Ok(r.probed.iter().map(|d| sanitize(d, 64)).collect())
    }

    /// `Shutdown`: the guest reboots, which ends the VMM.
    pub async fn shutdown(&self) -> Result<(), AgentError> {
        self.timed(
            "Shutdown",
            self.client.shutdown(self.ctx(), &pb::Empty::new()),
        )
        .await?;
        Ok(())
    }
}

/// The `WaitProcess` request for process `exec_id` of container `id`.
fn wait_request(id: &str, exec_id: &str) -> pb::WaitProcessRequest {
    pb::WaitProcessRequest {
        container_id: id.to_string(),
        exec_id: exec_id.to_string(),
        ..Default::default()
    }
}

/// A `WaitProcess` reply as (exit status made safe: 0..=255, unreported OOM kill).
fn exit_of(r: &pb::WaitProcessResponse) -> (u32, bool) {
    (crate::util::agent_exit_status(r.status), r.oom_killed)
}

/// The host's wall-clock time as SetGuestDateTime (and AfterRestore's clock) carries it.
fn host_time() -> pb::SetGuestDateTimeRequest {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    pb::SetGuestDateTimeRequest {
        sec: i64::try_from(now.as_secs()).unwrap_or(i64::MAX),
        usec: i64::from(now.subsec_micros()),
        ..Default::default()
    }
}
