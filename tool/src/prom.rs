//! The Prometheus text exposition format (version 0.0.4), just what `kata-rs metrics`
//! needs: metric families of counters and gauges, each with its `# HELP` and `# TYPE`
//! line, samples with labels, label values and help text escaped.

use std::fmt::Write;

/// The `Content-Type` of the text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A metric family's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up (resets when the process it counts restarts); name ends in `_total`.
    Counter,
    /// Any value.
    Gauge,
}

/// One metric family: a name, its help text, its type and its samples.
#[derive(Debug, Clone)]
pub struct Family {
    name: &'static str,
    help: &'static str,
    kind: Kind,
    samples: Vec<(Vec<(&'static str, String)>, f64)>,
}

/// Whether `s` is a valid metric name (`[a-zA-Z_:][a-zA-Z0-9_:]*`), or a label name when
/// `label` (no `:`, no leading `__`, which is reserved).
fn valid_name(s: &str, label: bool) -> bool {
    let ok_char = |c: char, first: bool| {
        c.is_ascii_alphabetic()
            || c == '_'
            || (!label && c == ':')
            || (!first && c.is_ascii_digit())
    };
    let mut chars = s.chars();
    chars.next().is_some_and(|c| ok_char(c, true))
        && chars.all(|c| ok_char(c, false))
        && !(label && s.starts_with("__"))
}

impl Family {
    /// A family without samples. The name and help are the program's own constants: an
    /// invalid name, or a counter not ending in `_total`, is a bug and panics.
    pub fn new(name: &'static str, help: &'static str, kind: Kind) -> Self {
        assert!(valid_name(name, false), "invalid metric name {name:?}");
        assert!(
            (kind == Kind::Counter) == name.ends_with("_total"),
            "{name}: counters and only counters end in _total"
        );
        Family {
            name,
            help,
            kind,
            samples: Vec::new(),
        }
    }

    /// Adds a sample with these labels (names are the program's constants, values any text).
    pub fn push(&mut self, labels: &[(&'static str, &str)], value: f64) {
        for (k, _) in labels {
            assert!(valid_name(k, true), "invalid label name {k:?}");
        }
        self.samples.push((
            labels.iter().map(|(k, v)| (*k, v.to_string())).collect(),
            value,
        ));
    }

    /// The family's name.
    pub fn name(&self) -> &str {
        self.name
    }
}

/// A label value escaped for the text format: backslash, double quote and line feed.
pub fn escape_label_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// Help text escaped for the text format: backslash and line feed.
fn escape_help(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\n', "\\n")
}

/// A sample value as the text format writes it (`NaN`, `+Inf`, `-Inf`, else Rust's
/// shortest round-trip decimal).
pub fn format_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        format!("{v}")
    }
}

/// The families in the text format, in the order given; each family's samples follow its
/// HELP and TYPE lines. A family without samples still has its HELP and TYPE lines.
pub fn render(families: &[Family]) -> String {
    let mut out = String::new();
    for f in families {
        let kind = match f.kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        };
        // Writing to a String cannot fail.
        let _ = writeln!(out, "# HELP {} {}", f.name, escape_help(f.help));
        let _ = writeln!(out, "# TYPE {} {kind}", f.name);
        for (labels, value) in &f.samples {
            out.push_str(f.name);
            if !labels.is_empty() {
                out.push('{');
                for (i, (k, v)) in labels.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    let _ = write!(out, "{k}=\"{}\"", escape_label_value(v));
                }
                out.push('}');
            }
            let _ = writeln!(out, " {}", format_value(*value));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_render_with_help_type_and_escaped_labels() {
        let mut c = Family::new(
            "kata_rs_test_seconds_total",
            "CPU time, with a \\ and a\nline feed.",
            Kind::Counter,
        );
        c.push(&[("sandbox_id", "a\"b\\c\nd"), ("process", "vmm")], 1.5);
        c.push(&[], 2.0);
        let mut g = Family::new("kata_rs_test_bytes", "Memory.", Kind::Gauge);
        g.push(&[("sandbox_id", "x")], 4096.0);
        let empty = Family::new("kata_rs_test_empty", "No samples.", Kind::Gauge);
        assert_eq!(
            render(&[c, g, empty]),
            "# HELP kata_rs_test_seconds_total CPU time, with a \\\\ and a\\nline feed.\n\
             # TYPE kata_rs_test_seconds_total counter\n\
             kata_rs_test_seconds_total{sandbox_id=\"a\\\"b\\\\c\\nd\",process=\"vmm\"} 1.5\n\
             kata_rs_test_seconds_total 2\n\
             # HELP kata_rs_test_bytes Memory.\n\
             # TYPE kata_rs_test_bytes gauge\n\
             kata_rs_test_bytes{sandbox_id=\"x\"} 4096\n\
             # HELP kata_rs_test_empty No samples.\n\
             # TYPE kata_rs_test_empty gauge\n"
        );
    }

    #[test]
    fn values_and_names() {
        assert_eq!(format_value(f64::NAN), "NaN");
        assert_eq!(format_value(f64::INFINITY), "+Inf");
        assert_eq!(format_value(f64::NEG_INFINITY), "-Inf");
        assert_eq!(format_value(0.25), "0.25");
        assert_eq!(format_value(123456789.0), "123456789");
        assert!(valid_name("kata_rs_x:y", false));
        assert!(!valid_name("kata_rs_x:y", true));
        assert!(!valid_name("1abc", false));
        assert!(!valid_name("", false));
        assert!(!valid_name("__reserved", true));
        assert!(!valid_name("a-b", false));
        assert!(valid_name("sandbox_id", true));
        assert_eq!(escape_label_value("plain"), "plain");
    }

    #[test]
    #[should_panic(expected = "counters and only counters end in _total")]
    fn a_counter_without_total_is_a_bug() {
        Family::new("kata_rs_cpu_seconds", "x", Kind::Counter);
    }
}
