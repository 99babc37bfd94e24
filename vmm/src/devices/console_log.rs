//! The console log, bounded: whatever the guest prints (COM1 and virtio-console share one
//! [`ConsoleLog`]), the file never grows past [`ConsoleLog::max_file_size`] and the bytes it
//! accepts never exceed a rate. See "Console log" in `vmm/README.md`.
//!
//! Layout of the file once the guest has printed more than the cap:
//! ```text
//! <the first head_cap bytes, written as they came>
//! ----- kata-vmm: console log cap reached, <N> bytes left out here; the latest bytes follow -----
//! <the latest tail_cap bytes at most, in order>
//! ```
//! The head is written straight through (`pwrite`). The tail is a ring in memory, rewritten
//! in place after the fixed-length marker line at most once per [`FLUSH_INTERVAL`] while the
//! guest keeps printing, and by the main thread ([`ConsoleLog::flush_tail`]) when it goes
//! quiet or the VMM exits: at most one interval of the latest output is lost if the VMM is
//! killed. Memory: the ring, at most `tail_cap` bytes, allocated only once the head is full.
//!
//! The rate limit is a token bucket of `rate` bytes per second (burst: one second's worth,
//! at least [`MIN_BURST`]); bytes over it are dropped, and a note with their count goes into
//! the log when output is accepted again. Nothing here ever blocks or fails the guest.

use std::collections::VecDeque;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How often a growing tail is rewritten into the file.
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(1);
/// Smallest burst of the rate limit (the guest kernel's boot messages come in one burst).
pub const MIN_BURST: u64 = 32 * 1024;
/// Once output is being dropped, it is accepted again only when this many bytes may pass (or
/// the whole burst, if smaller): a guest printing just above the rate then gets a note per
/// resume every few seconds, not one per byte.
pub const RESUME_BYTES: u64 = 4096;
/// Smallest total cap (`--console-log-max-kib` is checked against it).
pub const MIN_MAX_BYTES: u64 = 16 * 1024;

/// The marker line between head and tail; fixed length (the count is padded), so that the
/// tail after it can be rewritten in place.
fn marker(left_out: u64) -> String {
    format!(
        "\n----- kata-vmm: console log cap reached, {left_out:>20} bytes left out here; \
         the latest bytes follow -----\n"
    )
}

/// Length of [`marker`] in bytes.
pub fn marker_len() -> u64 {
    marker(0).len() as u64
}

/// Size and rate bounds of a console log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogLimits {
    /// Head + tail bytes of guest output kept (the file is this plus one marker line).
    pub max_bytes: u64,
    /// Bytes per second accepted; 0 = no rate limit.
    pub rate_bytes_per_sec: u64,
}

impl Default for LogLimits {
    fn default() -> Self {
        LogLimits {
            max_bytes: 1024 * 1024,
            rate_bytes_per_sec: 64 * 1024,
        }
    }
}

impl LogLimits {
    /// Bytes of the head (the first half of the cap).
    pub fn head_cap(&self) -> u64 {
        self.max_bytes / 2
    }

    /// Bytes of the tail (the rest).
    pub fn tail_cap(&self) -> u64 {
        self.max_bytes - self.head_cap()
    }

    /// The largest the file can get: head + marker + tail.
    pub fn max_file_size(&self) -> u64 {
        self.max_bytes + marker_len()
    }
}

/// A token bucket in bytes.
#[derive(Debug)]
struct Bucket {
    rate: u64,
    burst: u64,
    tokens: u64,
    at: Instant,
    /// Dropping until [`RESUME_BYTES`] tokens are back.
    dropping: bool,
}

impl Bucket {
    fn new(rate: u64, now: Instant) -> Self {
        let burst = rate.max(MIN_BURST);
        Bucket {
            rate,
            burst,
            tokens: burst,
            at: now,
            dropping: false,
        }
    }

    /// How many of `want` bytes may pass at `now`.
    fn take(&mut self, want: u64, now: Instant) -> u64 {
        if self.rate == 0 {
            return want;
        }
        let dt = now.saturating_duration_since(self.at);
        let add = (dt.as_nanos().saturating_mul(u128::from(self.rate)) / 1_000_000_000)
            .min(u128::from(self.burst)) as u64;
        if add > 0 {
            self.tokens = (self.tokens + add).min(self.burst);
            self.at = now;
        }
        if self.dropping && self.tokens < RESUME_BYTES.min(self.burst) {
            return 0;
        }
        let n = want.min(self.tokens);
        self.tokens -= n;
        self.dropping = n < want;
        n
    }
}

/// Counters for the exit summary and tests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct LogStats {
    /// Bytes the guest printed (before any limit).
    pub received: u64,
    /// Bytes dropped by the rate limit.
    pub rate_dropped: u64,
    /// Bytes accepted but left out between head and tail (the cap).
    pub cap_left_out: u64,
    /// Writes that failed (e.g. the disk is full); those bytes are lost.
    pub write_errors: u64,
}

/// A bounded console log over an open file (written with `pwrite` from offset 0).
pub struct ConsoleLog {
    file: File,
    limits: LogLimits,
    head_len: u64,
    tail: VecDeque<u8>,
    tail_total: u64,
    dirty: bool,
    last_flush: Instant,
    bucket: Bucket,
    pending_drops: u64,
    stats: LogStats,
}

/// The log as the serial port and the virtio-console share it.
pub type SharedLog = Arc<Mutex<ConsoleLog>>;

impl ConsoleLog {
    /// A log writing into `file` (expected empty) from offset 0.
    pub fn new(file: File, limits: LogLimits) -> Self {
        let now = Instant::now();
        ConsoleLog {
            file,
            limits,
            head_len: 0,
            tail: VecDeque::new(),
            tail_total: 0,
            dirty: false,
            last_flush: now,
            bucket: Bucket::new(limits.rate_bytes_per_sec, now),
            pending_drops: 0,
            stats: LogStats::default(),
        }
    }

    /// Shared between the console devices.
    pub fn shared(self) -> SharedLog {
        Arc::new(Mutex::new(self))
    }

    /// The bounds.
    pub fn limits(&self) -> LogLimits {
        self.limits
    }

    /// Counters so far.
    pub fn stats(&self) -> LogStats {
        let mut s = self.stats;
        s.cap_left_out = self.tail_total - self.tail.len() as u64;
        s
    }

    /// True when the tail has bytes not yet in the file.
    pub fn dirty(&self) -> bool {
        self.dirty
    }

    /// Takes guest output at `now`: rate limit, then head or tail. Never fails.
    pub fn write_at_time(&mut self, buf: &[u8], now: Instant) {
        self.stats.received += buf.len() as u64;
        let n = self.bucket.take(buf.len() as u64, now) as usize;
        if n > 0 && self.pending_drops > 0 {
            let note = format!(
                "\n[kata-vmm: {} console bytes dropped by the rate limit]\n",
                self.pending_drops
            );
            self.pending_drops = 0;
            self.append(note.as_bytes());
        }
        let dropped = (buf.len() - n) as u64;
        self.stats.rate_dropped += dropped;
        self.pending_drops += dropped;
        self.append(&buf[..n]);
        if self.dirty && now.saturating_duration_since(self.last_flush) >= FLUSH_INTERVAL {
            self.flush_tail_at(now);
        }
    }

    /// [`Self::write_at_time`] now.
    pub fn write(&mut self, buf: &[u8]) {
        self.write_at_time(buf, Instant::now());
    }

    fn append(&mut self, mut bytes: &[u8]) {
        let head_cap = self.limits.head_cap();
        if self.head_len < head_cap && !bytes.is_empty() {
            let k = (head_cap - self.head_len).min(bytes.len() as u64) as usize;
            match self.file.write_all_at(&bytes[..k], self.head_len) {
                Ok(()) => self.head_len += k as u64,
                // A full disk or EFBIG loses console output, never the guest's progress;
                // the head offset stays, so the layout stays consistent.
                Err(_) => self.stats.write_errors += 1,
            }
            bytes = &bytes[k..];
        }
        if bytes.is_empty() {
            return;
        }
        let cap = self.limits.tail_cap() as usize;
        if bytes.len() >= cap {
            self.tail.clear();
            self.tail.extend(&bytes[bytes.len() - cap..]);
        } else {
            let over = (self.tail.len() + bytes.len()).saturating_sub(cap);
            self.tail.drain(..over);
            self.tail.extend(bytes);
        }
        self.tail_total += bytes.len() as u64;
        self.dirty = true;
    }

    /// Writes the marker and the tail into the file if it changed since the last time.
    pub fn flush_tail(&mut self) {
        self.flush_tail_at(Instant::now());
    }

    fn flush_tail_at(&mut self, now: Instant) {
        if !self.dirty {
            return;
        }
        self.dirty = false;
        self.last_flush = now;
        let at = self.limits.head_cap();
        let left_out = self.tail_total - self.tail.len() as u64;
        let m = marker(left_out);
        let (a, b) = self.tail.as_slices();
        let mut off = at;
        for part in [m.as_bytes(), a, b] {
            if self.file.write_all_at(part, off).is_err() {
                self.stats.write_errors += 1;
                return;
            }
            off += part.len() as u64;
        }
    }

    /// One line for the exit summary.
    pub fn report(&self) -> String {
        let s = self.stats();
        format!(
            "console log: received={} rate_dropped={} cap_left_out={} write_errors={} \
             max_bytes={} rate={}/s",
            s.received,
            s.rate_dropped,
            s.cap_left_out,
            s.write_errors,
            self.limits.max_bytes,
            self.limits.rate_bytes_per_sec
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmpfile(name: &str) -> (std::path::PathBuf, File) {
        let p = std::env::temp_dir().join(format!("kata-vmm-log-{name}-{}", std::process::id()));
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&p)
            .unwrap();
        (p, f)
    }

    fn unlimited(max: u64) -> LogLimits {
        LogLimits {
            max_bytes: max,
            rate_bytes_per_sec: 0,
        }
    }

    #[test]
    fn small_output_is_written_as_is() {
        let (p, f) = tmpfile("small");
        let mut log = ConsoleLog::new(f, unlimited(64 * 1024));
        log.write(b"hello ");
        log.write(b"world\n");
        log.flush_tail();
        assert_eq!(std::fs::read(&p).unwrap(), b"hello world\n");
        assert!(!log.dirty());
        std::fs::remove_file(&p).unwrap();
    }

    #[test]
    fn a_flood_keeps_head_and_latest_tail_within_the_cap() {
        let (p, f) = tmpfile("flood");
        let limits = unlimited(16 * 1024);
        let mut log = ConsoleLog::new(f, limits);
        let t0 = Instant::now();
        // 4 MiB in lines "line N\n", byte by byte for the first ones (as COM1 writes).
        let mut total = 0u64;
        for i in 0..200_000u64 {
            let line = format!("line {i}\n");
            if i < 100 {
                for b in line.as_bytes() {
                    log.write_at_time(std::slice::from_ref(b), t0);
                }
            } else {
                log.write_at_time(line.as_bytes(), t0 + Duration::from_millis(i));
            }
            total += line.len() as u64;
            assert!(
                std::fs::metadata(&p).unwrap().len() <= limits.max_file_size(),
                "file over the cap at line {i}"
            );
        }
        log.flush_tail();
        let data = std::fs::read(&p).unwrap();
        assert_eq!(data.len() as u64, limits.max_file_size());
        let text = String::from_utf8(data).unwrap();
        assert!(text.starts_with("line 0\nline 1\n"));
        let (head, rest) = text.split_at(limits.head_cap() as usize);
        assert!(head.contains("line 100\n"));
        let left_out = total - limits.head_cap() - limits.tail_cap();
        assert!(
            rest.starts_with(&format!(
                "\n----- kata-vmm: console log cap reached, {left_out:>20} bytes left out here"
            )),
            "{}",
            &rest[..120]
        );
        assert!(text.ends_with("line 199998\nline 199999\n"));
        let s = log.stats();
        assert_eq!(s.received, total);
        assert_eq!(s.cap_left_out, left_out);
        assert_eq!(s.rate_dropped, 0);
        std::fs::remove_file(&p).unwrap();
    }

    #[test]
    fn the_tail_reaches_the_file_while_the_flood_goes_on() {
        let (p, f) = tmpfile("interval");
        let mut log = ConsoleLog::new(f, unlimited(16 * 1024));
        let t0 = Instant::now();
        let chunk = vec![b'x'; 4096];
        for _ in 0..8 {
            log.write_at_time(&chunk, t0);
        }
        // Nothing of the tail is written within the interval ...
        assert_eq!(std::fs::metadata(&p).unwrap().len(), 8 * 1024);
        assert!(log.dirty());
        // ... and all of it one interval later, by the writer itself.
        log.write_at_time(b"END", t0 + FLUSH_INTERVAL);
        assert!(!log.dirty());
        let text = std::fs::read(&p).unwrap();
        assert!(text.ends_with(b"xxEND"));
        std::fs::remove_file(&p).unwrap();
    }

    #[test]
    fn the_rate_limit_drops_and_says_so() {
        let (p, f) = tmpfile("rate");
        let limits = LogLimits {
            max_bytes: 1024 * 1024,
            rate_bytes_per_sec: 64 * 1024,
        };
        let mut log = ConsoleLog::new(f, limits);
        let t0 = Instant::now();
        // 1 MiB at once: the burst (64 KiB) passes, the rest is dropped.
        let mb = vec![b'a'; 1024 * 1024];
        log.write_at_time(&mb, t0);
        assert_eq!(log.stats().rate_dropped, 1024 * 1024 - 64 * 1024);
        assert_eq!(std::fs::metadata(&p).unwrap().len(), 64 * 1024);
        // Half a second later 32 KiB more may pass, preceded by the note.
        log.write_at_time(&mb[..40 * 1024], t0 + Duration::from_millis(500));
        let text = String::from_utf8(std::fs::read(&p).unwrap()).unwrap();
        let note = format!(
            "\n[kata-vmm: {} console bytes dropped by the rate limit]\n",
            1024 * 1024 - 64 * 1024
        );
        assert!(text.contains(&note), "no note");
        assert_eq!(text.len(), 64 * 1024 + note.len() + 32 * 1024);
        assert_eq!(log.stats().rate_dropped, 1024 * 1024 - 64 * 1024 + 8 * 1024);
        // Over a long flood, accepted bytes stay within burst + rate x time.
        let accepted_before = std::fs::metadata(&p).unwrap().len();
        for ms in (1000..11_000).step_by(10) {
            log.write_at_time(&mb[..4096], t0 + Duration::from_millis(ms));
        }
        log.flush_tail();
        let s = log.stats();
        let accepted = s.received - s.rate_dropped;
        assert!(
            accepted <= 64 * 1024 + 11 * 64 * 1024,
            "accepted {accepted} bytes in 11 s"
        );
        assert!(accepted > accepted_before);
        std::fs::remove_file(&p).unwrap();
    }

    #[test]
    fn a_trickle_over_the_rate_gets_few_notes() {
        let (p, f) = tmpfile("trickle");
        let mut log = ConsoleLog::new(
            f,
            LogLimits {
                max_bytes: 1024 * 1024,
                rate_bytes_per_sec: 1024,
            },
        );
        let t0 = Instant::now();
        // 2 KiB/s byte by byte (as COM1 writes) for 60 s, after the burst is used up.
        log.write_at_time(&vec![b'b'; 64 * 1024], t0);
        for i in 0..120_000u64 {
            log.write_at_time(b"x", t0 + Duration::from_micros(500 * i));
        }
        log.flush_tail();
        let text = String::from_utf8(std::fs::read(&p).unwrap()).unwrap();
        let notes = text.matches("dropped by the rate limit").count();
        // A resume needs 4 KiB of tokens (4 s at 1 KiB/s), which the trickle then uses up in
        // another 4 s: one note per ~8 s (not one per byte).
        assert!((5..=10).contains(&notes), "{notes} notes");
        let s = log.stats();
        let accepted = s.received - s.rate_dropped;
        assert!(accepted <= 32 * 1024 + 61 * 1024, "{accepted}");
        std::fs::remove_file(&p).unwrap();
    }

    #[test]
    fn bucket_refills_at_the_rate_and_caps_at_the_burst() {
        let t0 = Instant::now();
        let mut b = Bucket::new(100_000, t0);
        assert_eq!(b.take(1_000_000, t0), 100_000);
        assert_eq!(b.take(1, t0), 0);
        // Dropping: nothing until 4 KiB of tokens are back (40 ms at 100 kB/s).
        assert_eq!(b.take(1_000_000, t0 + Duration::from_millis(10)), 0);
        assert_eq!(b.take(1_000_000, t0 + Duration::from_millis(50)), 5000);
        assert_eq!(b.take(1_000_000, t0 + Duration::from_secs(100)), 100_000);
        let mut u = Bucket::new(0, t0);
        assert_eq!(u.take(u64::MAX, t0), u64::MAX);
    }

    #[test]
    fn limits_split_and_file_size() {
        let l = LogLimits {
            max_bytes: 1024 * 1024,
            rate_bytes_per_sec: 0,
        };
        assert_eq!(l.head_cap() + l.tail_cap(), 1024 * 1024);
        assert_eq!(l.max_file_size(), 1024 * 1024 + marker_len());
        assert_eq!(marker(0).len(), marker(u64::MAX).len());
    }
}
