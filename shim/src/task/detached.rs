//! Create and Delete run on their own tokio task, so that a request containerd gives up on
//! (the ttrpc server drops its handler) does not stop them halfway.

use std::sync::{
    atomic::{AtomicBool, Ordering},
    Arc,
};

use crate::error::{ShimError, ShimResult};

/// Set when the RPC handler that started a detached task is dropped before the task ended
/// (the ttrpc server drops a handler on the request's deadline or the client's disconnect).
#[derive(Default)]
pub(super) struct Abandoned {
    flag: Arc<AtomicBool>,
    done: bool,
}

impl Abandoned {
    /// The flag the detached work reads.
    pub(super) fn flag(&self) -> Arc<AtomicBool> {
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
pub(super) async fn detached<T, F>(what: &str, mut abandoned: Abandoned, work: F) -> ShimResult<T>
where
    T: Send + 'static,
    F: std::future::Future<Output = ShimResult<T>> + Send + 'static,
{
    let r = tokio::spawn(work).await;
    abandoned.done = true;
    r.unwrap_or_else(|e| Err(ShimError::Internal(format!("{what} failed: {e}"))))
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
