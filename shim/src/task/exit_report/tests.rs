//! The order of a process's end with a fake sink: OOM before exit, exec exits before the
//! init's, a stuck exec bounded, the exit event before Wait returns.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::sync::watch;

use super::*;

type Log = Arc<Mutex<Vec<String>>>;

/// A fake sink; its execs report their exits themselves after a delay (as their own exit
/// reporters would), or never.
struct Fake {
    log: Log,
    /// Each exec: its id and when (None = never) it exits.
    execs: Vec<(&'static str, Option<Duration>)>,
}

impl Fake {
    fn new(execs: Vec<(&'static str, Option<Duration>)>) -> Self {
        Fake {
            log: Arc::default(),
            execs,
        }
    }
    fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }
}

#[async_trait]
impl ExitSink for Fake {
    fn container_id(&self) -> &str {
        "c1"
    }

    async fn publish_oom(&self) {
        self.log.lock().unwrap().push("oom".into());
    }

    fn running_execs(&self) -> Vec<(String, ExitWaiter)> {
        self.execs
            .iter()
            .map(|&(id, after)| {
                let (tx, mut rx) = watch::channel(false);
                let log = self.log.clone();
                if let Some(after) = after {
                    tokio::spawn(async move {
                        tokio::time::sleep(after).await;
                        log.lock().unwrap().push(format!("exit {id}"));
                        let _ = tx.send(true);
                    });
                } else {
                    std::mem::forget(tx);
                }
                let waiter: ExitWaiter = Box::pin(async move {
                    let _ = rx.wait_for(|done| *done).await;
                });
                (id.to_string(), waiter)
            })
            .collect()
    }

    async fn publish_exit(&self, status: u32) {
        self.log
            .lock()
            .unwrap()
            .push(format!("exit event {status}"));
    }

    fn set_exited(&self, status: u32) {
        self.log.lock().unwrap().push(format!("exited {status}"));
    }
}

#[tokio::test(start_paused = true)]
async fn an_oom_kill_is_announced_before_the_exit_it_caused() {
    let f = Fake::new(vec![]);
    report_exit(&f, 137, true, true, Duration::from_secs(5)).await;
    assert_eq!(f.log(), ["oom", "exit event 137", "exited 137"]);
}

#[tokio::test(start_paused = true)]
async fn the_exits_of_execs_come_before_the_init_exit() {
    let f = Fake::new(vec![
        ("e1", Some(Duration::from_millis(300))),
        ("e2", Some(Duration::from_millis(100))),
    ]);
    report_exit(&f, 0, false, true, Duration::from_secs(5)).await;
    assert_eq!(f.log(), ["exit e2", "exit e1", "exit event 0", "exited 0"]);
}

#[tokio::test(start_paused = true)]
async fn an_exec_that_outlives_its_container_holds_the_init_exit_only_for_the_drain_time() {
    let f = Fake::new(vec![("stuck", None)]);
    let t0 = tokio::time::Instant::now();
    report_exit(&f, 9, false, true, Duration::from_secs(2)).await;
    assert_eq!(f.log(), ["exit event 9", "exited 9"]);
    assert_eq!(t0.elapsed(), Duration::from_secs(2));
}

#[tokio::test(start_paused = true)]
async fn an_exec_does_not_wait_for_other_execs() {
    let f = Fake::new(vec![("other", None)]);
    let t0 = tokio::time::Instant::now();
    report_exit(&f, 1, false, false, Duration::from_secs(2)).await;
    assert_eq!(f.log(), ["exit event 1", "exited 1"]);
    assert_eq!(t0.elapsed(), Duration::ZERO);
}
