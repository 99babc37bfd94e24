//! The VMM's log: `tracing` events on stderr, one line each, in the form the shim reads from
//! a VMM's stderr (docs/design.md): `kata-vmm: MESSAGE` for information (device reports, why
//! the guest stopped), `kata-vmm: warning: MESSAGE`, `kata-vmm: error: MESSAGE`, and
//! `kata-vmm: debug: MESSAGE` when `KATA_VMM_DEBUG` is set in the environment. No time, no
//! colours, no thread names: the shim logs each line with its own time and the VMM's pid.

use std::fmt;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter};
use tracing_subscriber::registry::LookupSpan;

/// The environment variable that turns debug lines on.
pub const DEBUG_ENV: &str = "KATA_VMM_DEBUG";

/// Formats an event as one `kata-vmm: [LEVEL: ]MESSAGE` line.
struct VmmLine;

impl<S, N> FormatEvent<S, N> for VmmLine
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut w: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let level = match *event.metadata().level() {
            Level::ERROR => "error: ",
            Level::WARN => "warning: ",
            Level::INFO => "",
            Level::DEBUG => "debug: ",
            Level::TRACE => "trace: ",
        };
        write!(w, "kata-vmm: {level}")?;
        ctx.field_format().format_fields(w.by_ref(), event)?;
        writeln!(w)
    }
}

/// The most verbose level logged: debug with [`DEBUG_ENV`] set, else info.
fn max_level(debug: bool) -> Level {
    if debug {
        Level::DEBUG
    } else {
        Level::INFO
    }
}

/// A subscriber writing VMM lines up to `max` to `writer`.
fn subscriber<W>(max: Level, writer: W) -> impl Subscriber + Send + Sync
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    tracing_subscriber::fmt()
        .with_max_level(max)
        .with_ansi(false)
        .with_writer(writer)
        .event_format(VmmLine)
        .finish()
}

/// Installs the VMM's log on stderr, once, before any thread starts (a second call does
/// nothing).
pub fn init() {
    let debug = std::env::var_os(DEBUG_ENV).is_some();
    let _ = tracing::subscriber::set_global_default(subscriber(max_level(debug), std::io::stderr));
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// A writer into a shared buffer.
    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'w> MakeWriter<'w> for Buf {
        type Writer = Buf;
        fn make_writer(&'w self) -> Buf {
            self.clone()
        }
    }

    fn lines(debug: bool) -> String {
        let buf = Buf::default();
        tracing::subscriber::with_default(subscriber(max_level(debug), buf.clone()), || {
            tracing::info!("virtio-vsock: conns=1");
            tracing::info!(
                "vCPU {}: guest stopped: triple fault (KVM_EXIT_SHUTDOWN)",
                0
            );
            tracing::warn!("control socket: cannot watch the listener: {}", "EBADF");
            tracing::error!("cannot open /dev/kvm: {}", "No such file or directory");
            tracing::debug!("seccomp filters installed");
        });
        let out = buf.0.lock().unwrap().clone();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn lines_keep_the_form_the_shim_reads() {
        assert_eq!(
            lines(false),
            "kata-vmm: virtio-vsock: conns=1\n\
             kata-vmm: vCPU 0: guest stopped: triple fault (KVM_EXIT_SHUTDOWN)\n\
             kata-vmm: warning: control socket: cannot watch the listener: EBADF\n\
             kata-vmm: error: cannot open /dev/kvm: No such file or directory\n"
        );
    }

    #[test]
    fn debug_lines_only_when_asked_for() {
        assert!(lines(true).ends_with("kata-vmm: debug: seccomp filters installed\n"));
        assert!(!lines(false).contains("debug"));
    }
}
