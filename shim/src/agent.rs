//! The client side of the agent API (protocol/protos/agent.proto) over the VMM's hybrid vsock
//! socket (`<state_dir>/<sandbox>/kata-vmm.vsock`: a Unix socket only root can open, then
//! `CONNECT <port>\n` / `OK <hostport>\n`, then ttrpc; see vmm/README.md "vsock"), with a
//! timeout on every request except the ones that wait for the container, and error texts
//! from the guest bounded and cleaned before they reach logs or containerd.

use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use kata_rs_protocol::{agent as pb, agent_ttrpc::AgentServiceClient, hybrid_vsock};
use tokio::time::Instant;
use tracing::debug;

use crate::util::sanitize;

/// Longest error text from the agent that is passed on.
const MAX_ERROR_TEXT: usize = 2048;
/// How much later than the shim's own timeout a request's ttrpc deadline falls.
const CONTEXT_GRACE: Duration = Duration::from_secs(1);
/// Largest chunk asked for (and accepted) in one ReadStdout/ReadStderr.
pub const READ_CHUNK: u32 = 32 * 1024;
/// Most pids accepted from one ListProcesses.
pub const MAX_PIDS: usize = 65_536;
/// Most memory.stat entries accepted from one StatsContainer.
pub const MAX_MEMORY_STAT_KEYS: usize = 256;

/// An agent request that failed.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The agent answered with an error status; `message` is its (cleaned) text.
    #[error("{message}")]
    Status {
        /// The request, e.g. `CreateContainer`.
        method: &'static str,
        /// The agent's status code.
        code: ttrpc::Code,
        /// The agent's text.
        message: String,
    },
    /// No answer in time.
    #[error("agent {method} did not answer within {:.1}s", .after.as_secs_f64())]
    Timeout {
        /// The request.
        method: &'static str,
        /// The timeout.
        after: Duration,
    },
    /// The connection failed or broke.
    #[error("agent {method} failed: {message}")]
    Transport {
        /// The request.
        method: &'static str,
        /// What happened.
        message: String,
    },
    /// The agent's answer makes no sense (e.g. more data than asked for).
    #[error("agent {method} sent a bad reply: {message}")]
    BadReply {
        /// The request.
        method: &'static str,
        /// What is wrong.
        message: String,
    },
}

impl AgentError {
    /// Whether the agent answered UNIMPLEMENTED (its version lacks the request).
    pub fn is_unimplemented(&self) -> bool {
        matches!(self, AgentError::Status { code, .. } if *code == ttrpc::Code::UNIMPLEMENTED)
    }

    /// Whether the guest did not answer at all (no reply in time, or the connection broke),
    /// as opposed to an answer that says no.
    pub fn guest_lost(&self) -> bool {
        matches!(
            self,
            AgentError::Timeout { .. } | AgentError::Transport { .. }
        )
    }

    /// Whether the agent answered NOT_FOUND.
    pub fn is_not_found(&self) -> bool {
        matches!(self, AgentError::Status { code, .. } if *code == ttrpc::Code::NOT_FOUND)
    }

    /// The ttrpc code to pass on to containerd for this failure.
    pub fn code(&self) -> ttrpc::Code {
        match self {
            AgentError::Status { code, .. } => *code,
            AgentError::Timeout { .. } => ttrpc::Code::DEADLINE_EXCEEDED,
            _ => ttrpc::Code::UNKNOWN,
        }
    }
}

/// Longest handshake reply accepted.
const MAX_REPLY: usize = hybrid_vsock::MAX_LINE;

/// Opens a stream to guest port `port` through the VMM's hybrid vsock socket `uds`: connect,
/// `CONNECT <port>\n`, then the reply line `OK <hostport>\n`, read byte by byte so that
/// nothing behind it is consumed. The VMM closes the connection instead of answering when
/// the guest refuses (nothing listens on the port yet) or does not answer.
pub async fn dial(uds: &Path, port: u32) -> Result<tokio::net::UnixStream, String> {
    let mut s = tokio::net::UnixStream::connect(uds)
        .await
        .map_err(|e| format!("{}: {e}", uds.display()))?;
    s.write_all(hybrid_vsock::connect_line(port).as_bytes())
        .await
        .map_err(|e| format!("{}: sending CONNECT: {e}", uds.display()))?;
    let mut line = Vec::new();
    loop {
        let mut b = [0u8; 1];
        let n = s
            .read(&mut b)
            .await
            .map_err(|e| format!("{}: reading the reply: {e}", uds.display()))?;
        if n == 0 {
            return Err(format!(
                "{}: closed without a reply (guest port {port} refused or not answering)",
                uds.display()
            ));
        }
        if b[0] == b'\n' {
            break;
        }
        if line.len() >= MAX_REPLY {
            return Err(format!("{}: reply too long", uds.display()));
        }
        line.push(b[0]);
    }
    check_reply(&line).map_err(|e| format!("{}: {e}", uds.display()))?;
    Ok(s)
}

/// Checks the handshake reply line (without its newline): `OK <decimal port>`.
pub fn check_reply(line: &[u8]) -> Result<u32, String> {
    hybrid_vsock::parse_ok(line).ok_or_else(|| {
        format!(
            "bad handshake reply {:?}",
            String::from_utf8_lossy(&line[..line.len().min(MAX_REPLY)])
        )
    })
}

fn map_err(method: &'static str, e: ttrpc::Error) -> AgentError {
    match e {
        ttrpc::Error::RpcStatus(s) => AgentError::Status {
            method,
            code: s.code(),
            message: sanitize(s.message(), MAX_ERROR_TEXT),
        },
        other => AgentError::Transport {
            method,
            message: sanitize(&other.to_string(), MAX_ERROR_TEXT),
        },
    }
}

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
        let req = pb::WaitProcessRequest {
            container_id: id.to_string(),
            exec_id: exec_id.to_string(),
            ..Default::default()
        };
        let r = self
            .client
            .wait_process(ttrpc::context::Context::default(), &req)
            .await
            .map_err(|e| map_err("WaitProcess", e))?;
        Ok((crate::util::agent_exit_status(r.status), r.oom_killed))
    }

    /// `WaitProcess` bounded by the request timeout: `None` when the process has not
    /// ended by then (the agent answers a wait only at the exit).
    pub async fn wait_process_bounded(
        &self,
        id: &str,
        exec_id: &str,
    ) -> Result<Option<(u32, bool)>, AgentError> {
        let req = pb::WaitProcessRequest {
            container_id: id.to_string(),
            exec_id: exec_id.to_string(),
            ..Default::default()
        };
        match self
            .timed("WaitProcess", self.client.wait_process(self.ctx(), &req))
            .await
        {
            Ok(r) => Ok(Some((
                crate::util::agent_exit_status(r.status),
                r.oom_killed,
            ))),
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
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let req = pb::SetGuestDateTimeRequest {
            sec: i64::try_from(now.as_secs()).unwrap_or(i64::MAX),
            usec: i64::from(now.subsec_micros()),
            ..Default::default()
        };
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

/// Why the agent of a new VM is not ready.
#[derive(Debug)]
pub enum NotReady {
    /// No answer to `Check` until the deadline; the last error seen.
    Timeout(Option<AgentError>),
    /// The VMM process ended first.
    VmmExited(crate::vmm::VmmExit),
}

/// Dials guest port `port` through `uds` (the VMM's hybrid vsock socket) and calls `Check`
/// until it answers, `timeout` passes, or `vmm_exit`
/// completes (the VMM is gone; it is raced against every try and pause). Each try gets at
/// most `per_try` (bounded by what is left).
pub async fn wait_ready(
    uds: &Path,
    port: u32,
    timeout: Duration,
    per_try: Duration,
    request_timeout: Duration,
    vmm_exit: impl std::future::Future<Output = crate::vmm::VmmExit>,
) -> Result<(Agent, pb::CheckResponse), NotReady> {
    let deadline = Instant::now() + timeout;
    let mut last: Option<AgentError> = None;
    let mut tries = 0u32;
    tokio::pin!(vmm_exit);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(NotReady::Timeout(last));
        }
        let t = per_try.min(left);
        tries += 1;
        let attempt = async {
            let a = Agent::connect(uds, port, t, t).await?;
            let r = a.check().await?;
            Ok::<_, AgentError>((
                Agent {
                    timeout: request_timeout,
                    ..a
                },
                r,
            ))
        };
        let r = tokio::select! {
            r = attempt => r,
            e = &mut vmm_exit => return Err(NotReady::VmmExited(e)),
        };
        match r {
            Ok(ok) => {
                debug!(uds = %uds.display(), tries, "agent answered Check");
                return Ok(ok);
            }
            Err(e) => {
                if tries % 20 == 1 {
                    debug!(uds = %uds.display(), tries, "agent not ready yet: {e}");
                }
                // A try cut short by the deadline says less than an earlier real error.
                if last.is_none() || !matches!(e, AgentError::Timeout { .. }) {
                    last = Some(e);
                }
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(100).min(left)) => {}
            e = &mut vmm_exit => return Err(NotReady::VmmExited(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Only silence or a broken connection counts as a lost guest (SIGKILL then kills the
    /// VM); an answer, even an error, does not.
    #[test]
    fn a_lost_guest_is_silence_not_an_error_answer() {
        let timeout = AgentError::Timeout {
            method: "SignalProcess",
            after: Duration::from_secs(15),
        };
        assert!(timeout.guest_lost());
        assert_eq!(
            timeout.to_string(),
            "agent SignalProcess did not answer within 15.0s"
        );
        let broken = map_err("SignalProcess", ttrpc::Error::LocalClosed);
        assert!(broken.guest_lost(), "{broken:?}");
        let refused = map_err(
            "SignalProcess",
            ttrpc::Error::RpcStatus(ttrpc::get_status(ttrpc::Code::NOT_FOUND, "no process")),
        );
        assert!(!refused.guest_lost());
    }

    #[test]
    fn agent_status_text_is_passed_through_cleaned() {
        let e = map_err(
            "CreateContainer",
            ttrpc::Error::RpcStatus(ttrpc::get_status(
                ttrpc::Code::NOT_FOUND,
                "executable file `nope` not found\x1b",
            )),
        );
        assert_eq!(e.to_string(), "executable file `nope` not found?");
        let long = "x".repeat(10_000);
        let e = map_err(
            "Check",
            ttrpc::Error::RpcStatus(ttrpc::get_status(ttrpc::Code::UNKNOWN, long)),
        );
        assert!(e.to_string().len() < MAX_ERROR_TEXT + 10);
        let e = map_err("Check", ttrpc::Error::RemoteClosed);
        assert!(e.to_string().starts_with("agent Check failed"), "{e}");
    }

    #[test]
    fn handshake_replies() {
        assert_eq!(check_reply(b"OK 1073741824"), Ok(1 << 30));
        for bad in [
            &b"OK"[..],
            b"OK ",
            b"OK x",
            b"ok 1",
            b"OK 1 ",
            b"OK 99999999999",
            b"ERR",
        ] {
            assert!(check_reply(bad).is_err(), "{bad:?}");
        }
    }

    /// A fake VMM side: answers the handshake as told, then echoes.
    async fn fake_vmm(
        reply: &'static [u8],
    ) -> (std::path::PathBuf, tokio::task::JoinHandle<Vec<u8>>) {
        let dir = std::env::temp_dir().join(format!(
            "kata-agent-dial-{}-{}",
            std::process::id(),
            reply.len()
        ));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("v.sock");
        let _ = std::fs::remove_file(&path);
        let l = tokio::net::UnixListener::bind(&path).unwrap();
        let h = tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut got = vec![0u8; 13];
            s.read_exact(&mut got).await.unwrap();
            s.write_all(reply).await.unwrap();
            got
        });
        (path, h)
    }

    #[tokio::test(flavor = "current_thread")]
    async fn dial_speaks_the_handshake() {
        let (path, h) = fake_vmm(b"OK 1073741824\nttrpc").await;
        let mut s = dial(&path, 1024).await.unwrap();
        assert_eq!(h.await.unwrap(), b"CONNECT 1024\n");
        let mut rest = [0u8; 5];
        s.read_exact(&mut rest).await.unwrap();
        assert_eq!(&rest, b"ttrpc", "nothing behind the reply is consumed");
        let (path, _h) = fake_vmm(b"").await;
        let e = dial(&path, 1024).await.unwrap_err();
        assert!(e.contains("closed without a reply"), "{e}");
        let (path, _h) = fake_vmm(b"NO\n").await;
        assert!(dial(&path, 1024).await.is_err());
        let e = dial(Path::new("/nonexistent/kata.vsock"), 1024)
            .await
            .unwrap_err();
        assert!(e.contains("/nonexistent/kata.vsock"), "{e}");
    }

    /// Nothing listens on this socket: wait_ready gives up at its deadline, and stops at once
    /// when the VMM is reported gone.
    #[tokio::test(flavor = "current_thread")]
    async fn wait_ready_times_out_or_sees_vmm_exit() {
        let t0 = std::time::Instant::now();
        let none = Path::new("/nonexistent/kata-vmm.vsock");
        let r = wait_ready(
            none,
            1024,
            Duration::from_millis(500),
            Duration::from_millis(200),
            Duration::from_secs(1),
            std::future::pending(),
        )
        .await;
        assert!(matches!(r, Err(NotReady::Timeout(_))));
        assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());

        let r = wait_ready(
            none,
            1024,
            Duration::from_secs(30),
            Duration::from_millis(200),
            Duration::from_secs(1),
            async { crate::vmm::VmmExit::Code(1) },
        )
        .await;
        assert!(matches!(
            r,
            Err(NotReady::VmmExited(crate::vmm::VmmExit::Code(1)))
        ));
    }
}
