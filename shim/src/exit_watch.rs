//! Waiting for a process's exit with a second look after each signal.
//!
//! The shim learns of an exit from one long `WaitProcess` request on the sandbox's agent
//! connection. Should that reply never arrive (a stream that stopped delivering, a guest
//! that lost an interrupt), containerd would wait for the killed task forever: `ctr task
//! kill` returns, the task stays RUNNING, and the kubelet's StopPodSandbox gives up. So
//! after each signal the shim asks again at growing intervals, each time on a fresh
//! connection with a bounded `WaitProcess`: an agent that has the exit answers at once.
//! An exit found that way, with the first reply still missing a moment later, is logged
//! as a lost reply (something to fix, not to hide).

use std::{future::Future, time::Duration};

use tokio::sync::Notify;

/// After a signal, the second looks come this long after it (cumulative waits between
/// them); a process still running after the last is left to its first wait.
pub const RECHECK_DELAYS: [Duration; 4] = [
    Duration::from_secs(3),
    Duration::from_secs(7),
    Duration::from_secs(20),
    Duration::from_secs(30),
];

/// How long the first wait's reply may lag an exit a second look found before the reply
/// is called lost.
pub const LOST_REPLY_GRACE: Duration = Duration::from_secs(1);

/// How the exit became known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found<T> {
    /// The first wait answered (the normal case).
    Reply(T),
    /// A second look found the exit, and the first wait had not answered
    /// [`LOST_REPLY_GRACE`] later: its reply was lost.
    Recheck(T),
}

/// Waits for `first` (the long wait), and after each [`Notify`] of `signalled` runs
/// `recheck` (a bounded wait: `None` = not ended yet) after each of `delays`.
pub async fn wait_with_recheck<T, F, R, RF>(
    first: F,
    signalled: &Notify,
    delays: &[Duration],
    mut recheck: R,
) -> Found<T>
where
    F: Future<Output = T>,
    R: FnMut() -> RF,
    RF: Future<Output = Option<T>>,
{
    tokio::pin!(first);
    let second_looks = async {
        loop {
            signalled.notified().await;
            for d in delays {
                tokio::time::sleep(*d).await;
                if let Some(v) = recheck().await {
                    return v;
                }
            }
        }
    };
    tokio::select! {
        v = &mut first => Found::Reply(v),
        v = second_looks => match tokio::time::timeout(LOST_REPLY_GRACE, &mut first).await {
            Ok(v) => Found::Reply(v),
            Err(_) => Found::Recheck(v),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{
        atomic::{AtomicU32, Ordering},
        Arc,
    };

    const D: [Duration; 3] = [
        Duration::from_secs(3),
        Duration::from_secs(7),
        Duration::from_secs(20),
    ];

    #[tokio::test(start_paused = true)]
    async fn the_reply_wins_without_a_signal() {
        let n = Notify::new();
        let looks = AtomicU32::new(0);
        let first = async {
            tokio::time::sleep(Duration::from_secs(100)).await;
            7
        };
        let r = wait_with_recheck(first, &n, &D, || {
            looks.fetch_add(1, Ordering::SeqCst);
            async { Some(9) }
        })
        .await;
        assert_eq!(r, Found::Reply(7));
        assert_eq!(
            looks.load(Ordering::SeqCst),
            0,
            "no second look without a signal"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_lost_reply_is_found_by_a_second_look_after_the_signal() {
        let n = Arc::new(Notify::new());
        let looks = AtomicU32::new(0);
        let start = tokio::time::Instant::now();
        let n2 = n.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(5)).await;
            n2.notify_one();
        });
        // The process ends between the first and second look; the first wait never answers.
        let r = wait_with_recheck(std::future::pending::<u32>(), &n, &D, || {
            let k = looks.fetch_add(1, Ordering::SeqCst);
            async move { (k >= 1).then_some(137) }
        })
        .await;
        assert_eq!(r, Found::Recheck(137));
        assert_eq!(looks.load(Ordering::SeqCst), 2);
        // signal at 5 s, looks at +3 and +10, then the grace of 1 s.
        assert_eq!(start.elapsed(), Duration::from_secs(5 + 3 + 7 + 1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_late_reply_within_the_grace_is_still_the_reply() {
        let n = Notify::new();
        n.notify_one();
        let first = async {
            tokio::time::sleep(Duration::from_millis(3500)).await;
            143
        };
        let r = wait_with_recheck(first, &n, &D, || async { Some(143) }).await;
        assert_eq!(r, Found::Reply(143), "the exit a second look saw at 3 s");
    }

    #[tokio::test(start_paused = true)]
    async fn a_process_that_outlives_its_signal_waits_for_the_next_one() {
        let n = Arc::new(Notify::new());
        n.notify_one();
        let looks = Arc::new(AtomicU32::new(0));
        let l2 = looks.clone();
        let n2 = n.clone();
        tokio::spawn(async move {
            // Long after the first signal's looks (3+7+20 s): a second signal.
            tokio::time::sleep(Duration::from_secs(100)).await;
            n2.notify_one();
        });
        let r = wait_with_recheck(std::future::pending::<u32>(), &n, &D, move || {
            let k = l2.fetch_add(1, Ordering::SeqCst);
            // Still running at the first signal's three looks; gone at the next one.
            async move { (k >= 3).then_some(9) }
        })
        .await;
        assert_eq!(r, Found::Recheck(9));
        assert_eq!(looks.load(Ordering::SeqCst), 4);
    }
}
