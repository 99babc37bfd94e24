//! Waiting for the agent of a new VM: `Check` until it answers, the deadline, or the VMM's end.

use std::path::Path;
use std::time::Duration;

use kata_rs_protocol::agent as pb;
use tokio::time::Instant;
use tracing::debug;

use super::{Agent, AgentError};

/// Why the agent of a new VM is not ready.
#[derive(Debug)]
pub enum NotReady {
    /// No answer to `Check` until the deadline; the last error seen.
    Timeout(Option<AgentError>),
    /// The VMM process ended first.
    VmmExited(crate::vmm::VmmExit),
}

/// Pause between tries once the VMM's socket exists (the default of [`Tries::pause`]).
pub const RETRY_PAUSE: Duration = Duration::from_millis(100);
/// Pause between tries while the VMM has not bound its socket yet.
const NO_SOCKET_PAUSE: Duration = Duration::from_millis(10);

/// How [`wait_ready`] tries.
#[derive(Clone, Copy, Debug)]
pub struct Tries {
    /// How long to try in all.
    pub total: Duration,
    /// The most one try (connect and `Check`) may take.
    pub per_try: Duration,
    /// The pause after a failed try once the VMM's socket exists.
    pub pause: Duration,
}

impl Tries {
    /// `total` and `per_try`, with the default pause ([`RETRY_PAUSE`]).
    pub fn new(total: Duration, per_try: Duration) -> Self {
        Tries {
            total,
            per_try,
            pause: RETRY_PAUSE,
        }
    }
}

/// Dials guest port `port` through `uds` (the VMM's hybrid vsock socket) and calls `Check`
/// until it answers, `tries.total` passes, or `vmm_exit` completes (the VMM is gone; it is
/// raced against every try and pause). Each try gets at most `tries.per_try` (bounded by
/// what is left).
pub async fn wait_ready(
    uds: &Path,
    port: u32,
    tries: Tries,
    request_timeout: Duration,
    vmm_exit: impl std::future::Future<Output = crate::vmm::VmmExit>,
) -> Result<(Agent, pb::CheckResponse), NotReady> {
    let Tries {
        total: timeout,
        per_try,
        pause: retry_pause,
    } = tries;
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
                // The latest error says most (an early "no such file" is stale once the VMM
                // has bound its socket), except a try the deadline cut short, which says less.
                let cut_short = t < per_try && matches!(e, AgentError::Timeout { .. });
                if last.is_none() || !cut_short {
                    last = Some(e);
                }
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        // Until the VMM has bound its socket (its first ~100 ms) a try fails at once: look
        // again soon, so that a restored VM (whose agent answers right away) is not kept
        // waiting; then every 100 ms (each later try reaches the guest).
        let pause = if uds.exists() {
            retry_pause
        } else {
            NO_SOCKET_PAUSE
        };
        tokio::select! {
            _ = tokio::time::sleep(pause.min(left)) => {}
            e = &mut vmm_exit => return Err(NotReady::VmmExited(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Nothing listens on this socket: wait_ready gives up at its deadline, and stops at once
    /// when the VMM is reported gone.
    #[tokio::test(flavor = "current_thread")]
    async fn wait_ready_times_out_or_sees_vmm_exit() {
        let t0 = std::time::Instant::now();
        let none = Path::new("/nonexistent/kata-vmm.vsock");
        let r = wait_ready(
            none,
            1024,
            Tries::new(Duration::from_millis(500), Duration::from_millis(200)),
            Duration::from_secs(1),
            std::future::pending(),
        )
        .await;
        assert!(matches!(r, Err(NotReady::Timeout(_))));
        assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());

        let r = wait_ready(
            none,
            1024,
            Tries::new(Duration::from_secs(30), Duration::from_millis(200)),
            Duration::from_secs(1),
            async { crate::vmm::VmmExit::Code(1) },
        )
        .await;
        assert!(matches!(
            r,
            Err(NotReady::VmmExited(crate::vmm::VmmExit::Code(1)))
        ));
    }

    /// The socket appears late and its guest never answers: the error reported is the latest
    /// (the unanswered handshake), not the stale "no such file" of the first tries.
    #[tokio::test(flavor = "current_thread")]
    async fn wait_ready_reports_the_latest_error_not_a_stale_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kata-vmm.vsock");
        let bind_at = path.clone();
        let server = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let l = tokio::net::UnixListener::bind(&bind_at).unwrap();
            let mut held = Vec::new();
            loop {
                // Accepted, never answered: a guest that does not take the connection.
                let (c, _) = l.accept().await.unwrap();
                held.push(c);
            }
        });
        let r = wait_ready(
            &path,
            1024,
            Tries::new(Duration::from_millis(1500), Duration::from_millis(200)),
            Duration::from_secs(1),
            std::future::pending(),
        )
        .await;
        server.abort();
        let Err(NotReady::Timeout(Some(e))) = r else {
            panic!("expected a timeout with an error, got {:?}", r.err());
        };
        let e = e.to_string();
        assert!(!e.contains("No such file"), "stale error reported: {e}");
        assert!(e.contains("did not answer"), "{e}");
    }
}
