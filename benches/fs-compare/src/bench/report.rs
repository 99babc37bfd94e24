//! The figures as printed: mean, min and max of times, rates and memory samples.

use crate::proc::Mem;

/// Mean, min, max.
pub fn stats(v: &[f64]) -> (f64, f64, f64) {
    let mean = v.iter().sum::<f64>() / v.len() as f64;
    let min = v.iter().copied().fold(f64::INFINITY, f64::min);
    let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (mean, min, max)
}

pub fn fmt_ms(v: &[f64]) -> String {
    let (mean, min, max) = stats(v);
    format!("{mean:.1} ms (min {min:.1}, max {max:.1}, n={})", v.len())
}

pub fn fmt_rate(mib: f64, secs: &[f64]) -> String {
    let rates: Vec<f64> = secs.iter().map(|s| mib / s).collect();
    let (mean, min, max) = stats(&rates);
    format!("{mean:.0} MiB/s (min {min:.0}, max {max:.0})")
}

pub fn fmt_mem(label: &str, v: &[Mem]) -> String {
    let n = v.len() as f64;
    let avg = |f: fn(&Mem) -> u64| v.iter().map(f).sum::<u64>() as f64 / n / 1024.0;
    format!(
        "{label:<34} RSS {:6.2} MiB  PSS {:6.2} MiB  Private_Dirty {:6.2} MiB",
        avg(|m| m.rss),
        avg(|m| m.pss),
        avg(|m| m.private_dirty)
    )
}
