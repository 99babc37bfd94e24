//! Small helpers: treating guest text as untrusted, exit statuses, ids, timestamps, random
//! bytes, and the
//! rollback list that makes a failed Create leave nothing behind.

use std::{future::Future, path::Path, pin::Pin, time::SystemTime};

use containerd_shim_protos::protobuf::well_known_types::timestamp::Timestamp;
use tracing::{debug, warn};

/// Makes untrusted text (from the guest or the VMM) safe to log and return: at most `max`
/// characters, control characters other than newline and tab replaced by `?`.
pub fn sanitize(s: &str, max: usize) -> String {
    let mut out: String = s
        .chars()
        .take(max)
        .map(|c| {
            if c.is_control() && c != '\n' && c != '\t' {
                '?'
            } else {
                c
            }
        })
        .collect();
    if s.chars().nth(max).is_some() {
        out.push_str("...");
    }
    out
}

/// The exit status the agent reported, made safe: a status outside 0..=255 (the agent
/// reports 128+signal for a signalled process) is reported as 255.
pub fn agent_exit_status(status: i32) -> u32 {
    if (0..=255).contains(&status) {
        status as u32
    } else {
        255
    }
}

/// Checks a container, sandbox or exec id: the rule shared with the agent
/// ([`kata_rs_protocol::id`], containerd's identifiers rule), so that an id is safe in file
/// and guest path names.
pub use kata_rs_protocol::id::validate_id;

/// `n` bytes from the kernel's random source (`getrandom(2)`).
pub fn random_bytes(n: usize) -> Result<Vec<u8>, String> {
    let mut b = vec![0u8; n];
    let mut got = 0;
    while got < n {
        // SAFETY: the pointer and length describe the unfilled tail of `b`, which we own.
        let r = unsafe { libc::getrandom(b[got..].as_mut_ptr().cast(), n - got, 0) };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(format!("getrandom: {e}"));
        }
        got += r as usize;
    }
    Ok(b)
}

/// A protobuf timestamp of `t`.
pub fn timestamp(t: SystemTime) -> Timestamp {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    Timestamp {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
        ..Default::default()
    }
}

/// Bounds how often a warning the guest can trigger again and again reaches the log: the
/// first `burst` pass, then at most one per `every`, which carries how many were left out.
#[derive(Debug)]
pub struct LogLimiter {
    burst: u32,
    every: std::time::Duration,
    seen: u32,
    suppressed: u64,
    last: Option<std::time::Instant>,
}

impl LogLimiter {
    /// `burst` messages at once, then one per `every`.
    pub fn new(burst: u32, every: std::time::Duration) -> Self {
        LogLimiter {
            burst,
            every,
            seen: 0,
            suppressed: 0,
            last: None,
        }
    }

    /// Whether to log this occurrence (at `now`): `Some(n)` with the number of occurrences
    /// left out since the last one logged, `None` to leave this one out.
    pub fn admit(&mut self, now: std::time::Instant) -> Option<u64> {
        let due = self.seen < self.burst
            || self
                .last
                .is_none_or(|t| now.saturating_duration_since(t) >= self.every);
        if due {
            self.seen = self.seen.saturating_add(1);
            self.last = Some(now);
            Some(std::mem::take(&mut self.suppressed))
        } else {
            self.suppressed += 1;
            None
        }
    }
}

/// Creates `path` anew (0600; refused if anything, a symlink included, is already there:
/// `O_CREAT|O_EXCL|O_NOFOLLOW`) and writes `data` to it: the shim's own small files (pid
/// files, records) cannot be redirected through a planted link.
pub fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)?;
    f.write_all(data)
}

/// The last `max_lines` lines of a text file (reads at most its last 8 KiB), sanitized;
/// empty when the file cannot be read.
pub fn file_tail(path: &Path, max_lines: usize) -> String {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut f) = std::fs::File::open(path) else {
        return String::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let start = len.saturating_sub(8192);
    if f.seek(SeekFrom::Start(start)).is_err() {
        return String::new();
    }
    let mut buf = Vec::new();
    let _ = f.take(8192).read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf).replace('\r', "");
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let from = lines.len().saturating_sub(max_lines);
    sanitize(&lines[from..].join("\n"), 8192)
}

type Step = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;

/// Undo steps collected while something is being set up; if the setup fails, [`Rollback::run`]
/// undoes what was done, newest first, and goes on when a step fails (logging it). A
/// successful setup calls [`Rollback::disarm`]. Dropping an armed rollback without running
/// it is a bug and is logged.
#[derive(Default)]
pub struct Rollback {
    steps: Vec<(String, Step)>,
}

impl Rollback {
    /// An empty rollback.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an undo step, named for the log.
    pub fn push<F>(&mut self, name: impl Into<String>, step: F)
    where
        F: Future<Output = Result<(), String>> + Send + 'static,
    {
        self.steps.push((name.into(), Box::pin(step)));
    }

    /// Number of undo steps.
    pub fn len(&self) -> usize {
        self.steps.len()
    }

    /// Whether there is nothing to undo.
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// Runs every step, newest first. Returns the failures (name and error).
    pub async fn run(mut self) -> Vec<(String, String)> {
        let mut failed = Vec::new();
        while let Some((name, step)) = self.steps.pop() {
            debug!("rollback: {name}");
            if let Err(e) = step.await {
                warn!("rollback step {name:?} failed: {e}");
                failed.push((name, e));
            }
        }
        failed
    }

    /// The setup succeeded: forget the steps.
    pub fn disarm(mut self) {
        self.steps.clear();
    }
}

impl Drop for Rollback {
    fn drop(&mut self) {
        if !self.steps.is_empty() {
            warn!("rollback dropped with {} steps not run", self.steps.len());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_guest_warnings_are_rate_limited() {
        use std::time::{Duration, Instant};
        let mut l = LogLimiter::new(3, Duration::from_secs(60));
        let t = Instant::now();
        let logged: Vec<_> = (0..1000).filter_map(|_| l.admit(t)).collect();
        assert_eq!(
            logged,
            vec![0, 0, 0],
            "a burst of 3, then nothing for a minute"
        );
        assert_eq!(l.admit(t + Duration::from_secs(59)), None);
        assert_eq!(
            l.admit(t + Duration::from_secs(61)),
            Some(998),
            "the next one says how many were left out"
        );
        assert_eq!(l.admit(t + Duration::from_secs(62)), None);
    }

    #[test]
    fn private_files_are_0600_and_never_follow_or_replace() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("pid");
        write_private(&f, b"42\n").unwrap();
        assert_eq!(std::fs::read(&f).unwrap(), b"42\n");
        let mode = std::fs::metadata(&f).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(
            write_private(&f, b"1").is_err(),
            "an existing file is not replaced"
        );
        let target = d.path().join("target");
        std::os::unix::fs::symlink(&target, d.path().join("link")).unwrap();
        assert!(write_private(&d.path().join("link"), b"x").is_err());
        assert!(!target.exists(), "nothing written through the link");
    }
    use std::sync::{Arc, Mutex};

    #[test]
    fn sanitize_bounds_and_cleans() {
        assert_eq!(sanitize("ab\x1b[31mc\n", 100), "ab?[31mc\n");
        assert_eq!(sanitize("abcdef", 3), "abc...");
        assert_eq!(sanitize("abc", 3), "abc");
    }

    #[test]
    fn exit_status_from_agent() {
        assert_eq!(agent_exit_status(0), 0);
        assert_eq!(agent_exit_status(137), 137);
        assert_eq!(agent_exit_status(255), 255);
        assert_eq!(agent_exit_status(-1), 255);
        assert_eq!(agent_exit_status(256), 255);
        assert_eq!(agent_exit_status(i32::MIN), 255);
    }

    #[test]
    fn ids() {
        for ok in ["a", "abc-123", "A.b_c", "x".repeat(76).as_str()] {
            validate_id(ok).unwrap();
        }
        for bad in [
            "",
            "../x",
            "a/b",
            ".a",
            "a-",
            "x".repeat(77).as_str(),
            "a b",
            "ä",
        ] {
            assert!(validate_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn tail_of_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("log");
        let text: String = (0..100).map(|i| format!("line {i}\r\n")).collect();
        std::fs::write(&p, text).unwrap();
        assert_eq!(file_tail(&p, 2), "line 98\nline 99");
        assert_eq!(file_tail(&dir.path().join("none"), 2), "");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn rollback_runs_newest_first_and_continues_past_failures() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut rb = Rollback::new();
        for i in 0..3 {
            let log = log.clone();
            rb.push(format!("step{i}"), async move {
                log.lock().unwrap().push(i);
                if i == 1 {
                    Err("boom".to_string())
                } else {
                    Ok(())
                }
            });
        }
        assert_eq!(rb.len(), 3);
        let failed = rb.run().await;
        assert_eq!(*log.lock().unwrap(), vec![2, 1, 0]);
        assert_eq!(failed, vec![("step1".to_string(), "boom".to_string())]);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn disarmed_rollback_runs_nothing() {
        let log = Arc::new(Mutex::new(0));
        let mut rb = Rollback::new();
        let l = log.clone();
        rb.push("x", async move {
            *l.lock().unwrap() += 1;
            Ok(())
        });
        rb.disarm();
        tokio::task::yield_now().await;
        assert_eq!(*log.lock().unwrap(), 0);
    }
}
