//! The guest's OOM events: one watcher per VM publishes `/tasks/oom` for the containers of
//! this shim.

use std::{sync::Arc, time::Duration};

use tracing::{debug, info, warn};

use super::TaskService;
use crate::container::Container;

impl TaskService {
    /// Watches the agent's OOM events and publishes `/tasks/oom` for containers of this
    /// shim, until the VM is gone or the agent does not implement GetOomEvent.
    pub(super) fn spawn_oom_watcher(&self, c: &Arc<Container>) {
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
                            inner.publish_oom(&id).await;
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
}
