//! The fuzz driver of kata-rs: runs a fuzz target (a closure that turns bytes into a test
//! case through [`arbitrary::Unstructured`]) under `cargo test`, on stable Rust, for a bounded
//! time. No coverage guidance: inputs are random bytes and mutations of the target's seeds and
//! of earlier inputs (bit flips, interesting values, splices), drawn from a seeded PRNG so a
//! run is repeatable.
//!
//! The property checked for every input: the target returns (no panic: a panic is caught,
//! the input saved and the test fails naming it) within [`HANG_SECS`] (a watchdog thread
//! saves the input and aborts the test process: a hang must not hang CI). The targets
//! assert their own properties (guest memory outside writable buffers unchanged, errors are
//! errors) by panicking.
//!
//! Environment:
//! - `KATA_RS_FUZZ_SECS` (default 1): seconds per target. `make test` runs each target this
//!   long; `make fuzz FUZZ_SECS=300` is the long run.
//! - `KATA_RS_FUZZ_SEED` (default: a constant, so `make test` is repeatable): the run's seed,
//!   mixed with the target's name; `make fuzz` draws a fresh one and every target prints it.
//! - `KATA_RS_FUZZ_INPUT=FILE` (an absolute path: tests run in the crate's directory):
//!   replay one saved input instead of fuzzing (run the one target: `cargo test -p CRATE
//!   fuzz::NAME`).
//! - `KATA_RS_FUZZ_HANG_SECS` (default [`HANG_SECS`]): the per-input watchdog.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use arbitrary::{self, Unstructured};

/// Default watchdog: one input running longer than this is a hang.
pub const HANG_SECS: u64 = 10;
/// Longest input generated.
pub const MAX_LEN: usize = 8192;

/// What a target returns: `Err` only when the input ran out of bytes (not a failure).
pub type Result<T = ()> = arbitrary::Result<T>;

fn env_f64(name: &str, default: f64) -> f64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// splitmix64: small, fast, good enough to draw inputs.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

const INTERESTING: [u64; 12] = [
    0,
    1,
    2,
    0x7f,
    0x80,
    0xff,
    0x7fff,
    0x8000,
    0xffff,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_ffff,
];

/// One mutation of `v` (in place), with `other` as a splice source.
fn mutate(rng: &mut Rng, v: &mut Vec<u8>, other: &[u8]) {
    if v.is_empty() {
        let n = 1 + rng.below(64);
        *v = rng.bytes(n);
        return;
    }
    let at = rng.below(v.len());
    match rng.below(8) {
        0 => v[at] ^= 1 << rng.below(8),
        1 => v[at] = rng.next() as u8,
        2 => {
            let x = INTERESTING[rng.below(INTERESTING.len())];
            let width = [1, 2, 4, 8][rng.below(4)].min(v.len() - at);
            v[at..at + width].copy_from_slice(&x.to_le_bytes()[..width]);
        }
        3 => {
            let n = 1 + rng.below(32);
            let ins = rng.bytes(n);
            v.splice(at..at, ins);
        }
        4 => {
            let n = 1 + rng.below((v.len() - at).min(64));
            v.drain(at..at + n);
        }
        5 => {
            let n = 1 + rng.below((v.len() - at).min(64));
            let dup = v[at..at + n].to_vec();
            let to = rng.below(v.len());
            v.splice(to..to, dup);
        }
        6 if !other.is_empty() => {
            let from = rng.below(other.len());
            let n = 1 + rng.below((other.len() - from).min(256));
            let end = (at + n).min(v.len());
            v.splice(at..end, other[from..from + n].iter().copied());
        }
        _ => {
            let d = (rng.next() as u8 % 35).wrapping_sub(17);
            v[at] = v[at].wrapping_add(d);
        }
    }
    v.truncate(MAX_LEN);
}

fn failure_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("fuzz-failures")
}

/// Saves a failing input; returns where.
fn save(name: &str, input: &[u8]) -> String {
    let dir = failure_dir();
    let _ = std::fs::create_dir_all(&dir);
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in input {
        h = (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3);
    }
    let path = dir.join(format!("{name}-{h:016x}.bin"));
    match std::fs::write(&path, input) {
        Ok(()) => path.display().to_string(),
        Err(e) => format!("(not saved: {e}) {input:02x?}"),
    }
}

/// Watches the input being run; aborts the process when one runs past the limit.
struct Watchdog {
    started: Arc<AtomicU64>,
    input: Arc<Mutex<Vec<u8>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    epoch: Instant,
}

impl Watchdog {
    fn new(name: &str, limit: Duration) -> Self {
        let started = Arc::new(AtomicU64::new(0));
        let input = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let epoch = Instant::now();
        let (s, i, st, n) = (
            started.clone(),
            input.clone(),
            stop.clone(),
            name.to_string(),
        );
        let thread = std::thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(50));
                let t = s.load(Ordering::Relaxed);
                if t != 0 && epoch.elapsed().as_millis() as u64 > t + limit.as_millis() as u64 {
                    let input = i.lock().unwrap_or_else(|e| e.into_inner()).clone();
                    eprintln!(
                        "fuzz {n}: HANG: one input ran longer than {limit:?}; saved as {}; \
                         replay: KATA_RS_FUZZ_INPUT=<file> cargo test fuzz::{n}",
                        save(&n, &input)
                    );
                    std::process::abort();
                }
            }
        });
        Watchdog {
            started,
            input,
            stop,
            thread: Some(thread),
            epoch,
        }
    }

    fn begin(&self, input: &[u8]) {
        {
            let mut i = self.input.lock().unwrap_or_else(|e| e.into_inner());
            i.clear();
            i.extend_from_slice(input);
        }
        let now = self.epoch.elapsed().as_millis() as u64;
        self.started.store(now.max(1), Ordering::Relaxed);
    }

    fn end(&self) {
        self.started.store(0, Ordering::Relaxed);
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Runs `target` on one input; Err(panic message) if it panicked.
fn run_one<F: FnMut(&mut Unstructured) -> Result>(
    target: &mut F,
    input: &[u8],
) -> std::result::Result<(), String> {
    catch_unwind(AssertUnwindSafe(|| {
        let mut u = Unstructured::new(input);
        let _ = target(&mut u);
    }))
    .map_err(|p| {
        p.downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "(non-string panic)".into())
    })
}

/// Statistics of one run.
#[derive(Debug, Clone, Copy)]
pub struct Stats {
    /// Inputs run.
    pub inputs: u64,
    /// Time spent.
    pub elapsed: Duration,
}

/// Fuzzes `target` named `name` (the test's name, for messages and saved inputs) for
/// `KATA_RS_FUZZ_SECS` seconds, starting from `seeds`; panics (failing the test) on the
/// first input that makes `target` panic, after saving it.
pub fn fuzz<F>(name: &str, seeds: &[&[u8]], mut target: F) -> Stats
where
    F: FnMut(&mut Unstructured) -> Result,
{
    let hang = Duration::from_secs_f64(env_f64("KATA_RS_FUZZ_HANG_SECS", HANG_SECS as f64));
    let dog = Watchdog::new(name, hang);
    let t0 = Instant::now();
    let fail = |input: &[u8], msg: String| -> ! {
        panic!(
            "fuzz {name}: the target panicked: {msg}\n  input saved as {}\n  replay: \
             KATA_RS_FUZZ_INPUT=<that file> cargo test fuzz::{name}",
            save(name, input)
        )
    };
    if let Some(file) = std::env::var_os("KATA_RS_FUZZ_INPUT") {
        let input = std::fs::read(&file).expect("KATA_RS_FUZZ_INPUT names a readable file");
        dog.begin(&input);
        if let Err(msg) = run_one(&mut target, &input) {
            fail(&input, msg);
        }
        dog.end();
        return Stats {
            inputs: 1,
            elapsed: t0.elapsed(),
        };
    }
    let secs = env_f64("KATA_RS_FUZZ_SECS", 1.0).max(0.0);
    // The run's seed (printed, repeatable), mixed with the target's name so that targets
    // sharing a seed still draw different inputs.
    let seed = std::env::var("KATA_RS_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x6b61_7461_7273_u64);
    let name_hash = name
        .bytes()
        .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
    let mut rng = Rng(seed ^ name_hash);
    let mut pool: Vec<Vec<u8>> = seeds.iter().map(|s| s.to_vec()).collect();
    let deadline = t0 + Duration::from_secs_f64(secs);
    let mut inputs: u64 = 0;
    let mut slowest = Duration::ZERO;
    // Seeds first, as they are; then at least a few inputs however short the budget.
    loop {
        let input = if (inputs as usize) < seeds.len() {
            seeds[inputs as usize].to_vec()
        } else if pool.is_empty() || rng.below(8) == 0 {
            let cap = MAX_LEN.min(64 << rng.below(8));
            let n = rng.below(cap);
            rng.bytes(n)
        } else {
            let mut v = pool[rng.below(pool.len())].clone();
            let other = pool[rng.below(pool.len())].clone();
            for _ in 0..1 + rng.below(8) {
                mutate(&mut rng, &mut v, &other);
            }
            v
        };
        dog.begin(&input);
        let t = Instant::now();
        if let Err(msg) = run_one(&mut target, &input) {
            fail(&input, msg);
        }
        slowest = slowest.max(t.elapsed());
        dog.end();
        inputs += 1;
        // A small pool of recent inputs to mutate further (no coverage feedback).
        if pool.len() < seeds.len() + 64 {
            pool.push(input);
        } else {
            let i = seeds.len() + rng.below(64);
            pool[i] = input;
        }
        if inputs >= 16 && Instant::now() >= deadline {
            break;
        }
    }
    let elapsed = t0.elapsed();
    eprintln!(
        "fuzz {name}: {inputs} inputs in {:.1} s ({:.0}/s, slowest {:.1} ms), \
         KATA_RS_FUZZ_SEED={seed}",
        elapsed.as_secs_f64(),
        inputs as f64 / elapsed.as_secs_f64().max(1e-9),
        slowest.as_secs_f64() * 1e3
    );
    Stats { inputs, elapsed }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_seeds_and_more_within_the_budget() {
        let mut seen = Vec::new();
        let s = fuzz("driver_selftest", &[b"seed-1", b"seed-2"], |u| {
            let b: Vec<u8> = u.arbitrary()?;
            seen.push(b);
            Ok(())
        });
        assert!(s.inputs >= 16);
        assert!(s.elapsed < Duration::from_secs(30));
    }

    #[test]
    fn a_panic_fails_with_the_saved_input() {
        let r = catch_unwind(|| {
            fuzz("driver_selftest_panic", &[b"\x42"], |u| {
                let x: u8 = u.arbitrary()?;
                assert!(x != 0x42, "found it");
                Ok(())
            })
        });
        let msg = r.unwrap_err().downcast::<String>().unwrap();
        assert!(
            msg.contains("found it") && msg.contains("fuzz-failures"),
            "{msg}"
        );
    }

    #[test]
    fn mutations_stay_bounded() {
        let mut rng = Rng(1);
        let mut v = vec![0u8; 16];
        for _ in 0..10_000 {
            mutate(&mut rng, &mut v, b"other");
            assert!(v.len() <= MAX_LEN);
        }
    }
}
