//! The order of a process's end as containerd hears it: `/tasks/oom` first when the guest
//! says the OOM killer ended it (as runc's shim does), then, for a container's init process,
//! the exits of its exec processes (they die with the container's PID namespace; each is
//! waited for a bounded time), then `/tasks/exit`, and only then the process is marked exited
//! (so a Wait never returns before its exit event is on its way). The steps are an
//! [`ExitSink`]'s, so that the order is unit-tested here with a fake.

use std::{future::Future, pin::Pin, time::Duration};

use async_trait::async_trait;
use tracing::warn;

/// A process's exit waited for: resolves when that exit has been reported.
pub(super) type ExitWaiter = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Where a process's end is reported.
#[async_trait]
pub(super) trait ExitSink: Send + Sync {
    /// The id of the container the process belongs to (for the log).
    fn container_id(&self) -> &str;
    /// Publishes `/tasks/oom` for the container.
    async fn publish_oom(&self);
    /// The container's exec processes still running, by exec id.
    fn running_execs(&self) -> Vec<(String, ExitWaiter)>;
    /// Publishes `/tasks/exit` with `status`.
    async fn publish_exit(&self, status: u32);
    /// Marks the process exited with `status` (wakes its Waits).
    fn set_exited(&self, status: u32);
}

/// Reports the end of a process (`is_init`: the container's init) that exited with `status`,
/// `oom_killed` if the guest says so; an exec still running after `drain` is left to its own
/// report (logged).
pub(super) async fn report_exit<S: ExitSink>(
    sink: &S,
    status: u32,
    oom_killed: bool,
    is_init: bool,
    drain: Duration,
) {
    if oom_killed {
        sink.publish_oom().await;
    }
    if is_init {
        for (exec, exited) in sink.running_execs() {
            if tokio::time::timeout(drain, exited).await.is_err() {
                warn!(id = %sink.container_id(), exec = %exec, "exec still running after the container's exit");
            }
        }
    }
    sink.publish_exit(status).await;
    sink.set_exited(status);
}

#[cfg(test)]
mod tests;
