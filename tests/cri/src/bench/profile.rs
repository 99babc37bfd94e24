//! The kata pods' start profile: phases from the timestamps in containerd's log.

use crate::pod::Pod;

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's days_from_civil).
pub fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

/// The Unix time of a log line's `time="2026-12-04T08:30:00.123456789Z"` (or `+hh:mm`).
pub fn log_time(line: &str) -> Option<f64> {
    let s = line.split("time=\"").nth(1)?.split('"').next()?;
    let (date, rest) = s.split_once('T')?;
    let mut d = date.split('-').map(|x| x.parse::<i64>().ok());
    let (y, mo, da) = (d.next()??, d.next()??, d.next()??);
    let tz_at = rest.find(['Z', '+', '-']).unwrap_or(rest.len());
    let (clock, tz) = rest.split_at(tz_at);
    let mut c = clock.split(':');
    let (h, mi) = (
        c.next()?.parse::<f64>().ok()?,
        c.next()?.parse::<f64>().ok()?,
    );
    let sec = c.next()?.parse::<f64>().ok()?;
    let off = match tz.as_bytes().first() {
        Some(b'+') | Some(b'-') => {
            let sign = if tz.starts_with('-') { -1.0 } else { 1.0 };
            let (oh, om) = tz[1..].split_once(':')?;
            sign * (oh.parse::<f64>().ok()? * 3600.0 + om.parse::<f64>().ok()? * 60.0)
        }
        _ => 0.0,
    };
    Some(days_from_civil(y, mo, da) as f64 * 86400.0 + h * 3600.0 + mi * 60.0 + sec - off)
}

/// The start phases: name, and the log line that ends it (`None`: a client timestamp).
pub const PHASES: [&str; 6] = [
    "containerd + shim start",
    "virtiofsd start",
    "VM boot to agent ready",
    "rest of RunPodSandbox",
    "CreateContainer",
    "StartContainer",
];

/// A kata pod's phases in ms from the log lines (time, text) between its RunPodSandbox and
/// its StartContainer answer; `None` when a marker is missing.
pub fn phases(p: &Pod, log: &[(f64, String)]) -> Option<[f64; 6]> {
    let first = |pat: &[&str], after: f64| {
        log.iter()
            .find(|(t, l)| {
                *t >= after - 0.001
                    && *t <= p.sandbox_done + 0.001
                    && pat.iter().all(|x| l.contains(x))
            })
            .map(|x| x.0)
    };
    let shim = first(&["serving on"], p.sent)?;
    let fs = first(&["virtiofsd serves"], shim)?;
    let ready = first(&["agent ", "ready (guest kernel"], fs)?;
    let ms = |a: f64, b: f64| ((b - a) * 1000.0).max(0.0).round();
    Some([
        ms(p.sent, shim),
        ms(shim, fs),
        ms(fs, ready),
        ms(ready, p.sandbox_done),
        ms(p.sandbox_done, p.created),
        ms(p.created, p.started),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::median;

    #[test]
    fn log_times() {
        let t = log_time(r#"time="2026-12-04T08:30:00.5Z" level=info msg="x""#).unwrap();
        assert_eq!(t, 1796373000.5);
        let u = log_time(r#"time="2026-12-04T09:30:00.5+01:00" level=info"#).unwrap();
        assert_eq!(t, u);
        assert_eq!(log_time("no time"), None);
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11017);
    }

    #[test]
    fn phases_from_log_lines() {
        let p = Pod {
            sent: 100.0,
            sandbox_done: 110.0,
            created: 112.0,
            started: 113.5,
            ..Default::default()
        };
        let log: Vec<(f64, String)> = [
            (99.0, "shim 0.1.0 serving on /old"),
            (100.5, "shim 0.1.0 serving on /run/x"),
            (100.8, "virtiofsd serves /a on /b"),
            (108.0, "agent 0.1.0 ready (guest kernel 6.1)"),
        ]
        .iter()
        .map(|(t, l)| (*t, l.to_string()))
        .collect();
        assert_eq!(
            phases(&p, &log),
            Some([500.0, 300.0, 7200.0, 2000.0, 2000.0, 1500.0])
        );
        assert_eq!(phases(&p, &log[..2]), None);
        assert_eq!(median(vec![3.0, 1.0, 2.0, 4.0]), Some(2.5));
        assert_eq!(median(Vec::new()), None);
    }
}
