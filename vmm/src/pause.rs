//! vCPU pause/resume (see "Control socket" in `vmm/README.md`).
//!
//! A vCPU thread spends its time inside `KVM_RUN`. To pause, the main thread sets the paused
//! flag and kicks every vCPU thread with [`kick_signal`] (`tgkill`): the no-op handler makes
//! `KVM_RUN` return `EINTR`, and the thread, seeing the flag at the top of its loop, parks on
//! a condition variable until resume. A kick can land while the thread is outside `KVM_RUN`
//! (between its flag check and the ioctl) and be lost, so the main thread repeats the kicks
//! until every vCPU reports parked or the timeout passes.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

/// The signal that kicks a vCPU thread out of `KVM_RUN`: the first real-time signal libc
/// leaves to applications.
pub fn kick_signal() -> libc::c_int {
    libc::SIGRTMIN()
}

extern "C" fn on_kick(_: libc::c_int) {}

/// Installs the no-op kick handler (no `SA_RESTART`: `KVM_RUN` must return `EINTR`). Call
/// before spawning the vCPU threads; signal dispositions are process-wide.
pub fn install_kick_handler() -> std::io::Result<()> {
    // SAFETY: a zeroed sigaction is valid; the handler is an `extern "C"` function that does
    // nothing (async-signal-safe).
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_kick as *const () as libc::sighandler_t;
        libc::sigemptyset(&mut sa.sa_mask);
        if libc::sigaction(kick_signal(), &sa, std::ptr::null_mut()) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

#[derive(Default)]
struct State {
    paused: bool,
    /// vCPU threads waiting in [`Pauser::park_while_paused`].
    parked: usize,
    /// Kernel thread ids of the vCPU threads that registered.
    tids: Vec<libc::pid_t>,
}

/// Shared by the main thread (pause/resume) and the vCPU threads (park).
pub struct Pauser {
    /// Mirror of `State::paused` for the vCPU threads' lock-free check on every exit.
    flag: AtomicBool,
    pid: libc::pid_t,
    vcpus: usize,
    state: Mutex<State>,
    cv: Condvar,
}

/// How long [`Pauser::pause`] waits between kick rounds.
const KICK_INTERVAL: Duration = Duration::from_millis(10);

impl Pauser {
    /// For `vcpus` vCPU threads of this process.
    pub fn new(vcpus: usize) -> Self {
        Pauser {
            flag: AtomicBool::new(false),
            pid: std::process::id() as libc::pid_t,
            vcpus,
            state: Mutex::new(State::default()),
            cv: Condvar::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Called once by each vCPU thread, before its seccomp filter (`gettid`).
    pub fn register(&self) {
        // SAFETY: gettid has no arguments and no side effects.
        let tid = unsafe { libc::gettid() };
        self.lock().tids.push(tid);
    }

    /// Called by a vCPU thread before each `KVM_RUN`: blocks while the VM is paused.
    pub fn park_while_paused(&self) {
        if !self.flag.load(Ordering::Acquire) {
            return;
        }
        let mut s = self.lock();
        if !s.paused {
            return;
        }
        s.parked += 1;
        self.cv.notify_all();
        while s.paused {
            s = self.cv.wait(s).unwrap_or_else(|p| p.into_inner());
        }
        s.parked -= 1;
    }

    /// Whether the VM is paused (or being paused).
    pub fn is_paused(&self) -> bool {
        self.lock().paused
    }

    /// Stops every vCPU; returns when all are parked, or an error after `timeout` (the flag
    /// stays set: the stragglers park at their next exit, `resume` undoes it).
    pub fn pause(&self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        let mut s = self.lock();
        s.paused = true;
        self.flag.store(true, Ordering::Release);
        loop {
            if s.parked >= self.vcpus {
                return Ok(());
            }
            for &tid in &s.tids {
                // SAFETY: tgkill with this process's id and one of its vCPU thread ids; the
                // threads are never joined before the process exits, so the id is not reused.
                unsafe { libc::syscall(libc::SYS_tgkill, self.pid, tid, kick_signal()) };
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(format!("{} of {} vCPUs stopped", s.parked, self.vcpus));
            }
            let wait = KICK_INTERVAL.min(deadline - now);
            s = self
                .cv
                .wait_timeout(s, wait)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Whether the VM is paused and every vCPU thread is parked (outside `KVM_RUN`, not
    /// touching its vCPU): what a snapshot needs.
    pub fn all_parked(&self) -> bool {
        let s = self.lock();
        s.paused && s.parked >= self.vcpus
    }

    /// Lets the vCPUs run again.
    pub fn resume(&self) {
        let mut s = self.lock();
        s.paused = false;
        self.flag.store(false, Ordering::Release);
        drop(s);
        self.cv.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Arc;

    /// Two fake vCPU threads that block in a syscall (like `KVM_RUN`) and count their loops.
    #[test]
    fn pause_stops_and_resume_restarts_the_threads() {
        install_kick_handler().unwrap();
        let p = Arc::new(Pauser::new(2));
        let count = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let threads: Vec<_> = (0..2)
            .map(|_| {
                let (p, count, stop) = (p.clone(), count.clone(), stop.clone());
                std::thread::spawn(move || {
                    p.register();
                    while !stop.load(Ordering::SeqCst) {
                        p.park_while_paused();
                        count.fetch_add(1, Ordering::SeqCst);
                        // A long blocking call that the kick interrupts (EINTR).
                        // SAFETY: poll with no fds only sleeps.
                        unsafe { libc::poll(std::ptr::null_mut(), 0, 5000) };
                    }
                })
            })
            .collect();
        while p.lock().tids.len() < 2 {
            std::thread::sleep(Duration::from_millis(1));
        }
        p.pause(Duration::from_secs(5)).unwrap();
        assert!(p.is_paused());
        let before = count.load(Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(count.load(Ordering::SeqCst), before, "a paused thread ran");
        p.resume();
        let t0 = Instant::now();
        while count.load(Ordering::SeqCst) < before + 2 {
            assert!(
                t0.elapsed() < Duration::from_secs(5),
                "threads did not resume"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        stop.store(true, Ordering::SeqCst);
        // Kick them out of their poll to finish (they exit instead of parking: times out).
        let _ = p.pause(Duration::from_millis(50));
        p.resume();
        for t in threads {
            t.join().unwrap();
        }
    }

    #[test]
    fn pause_times_out_without_vcpus_parking() {
        let p = Pauser::new(1);
        let e = p.pause(Duration::from_millis(30)).unwrap_err();
        assert_eq!(e, "0 of 1 vCPUs stopped");
        p.resume();
        assert!(!p.is_paused());
    }
}
