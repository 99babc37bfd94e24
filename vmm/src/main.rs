//! `kata-vmm`: see `vmm/README.md` and `docs/design.md`.

use clap::error::ErrorKind;
use clap::Parser;

use kata_rs_vmm::args::Args;
use kata_rs_vmm::vmm::{self, Exit};

fn fail(msg: impl std::fmt::Display) -> ! {
    tracing::error!("{msg}");
    std::process::exit(1);
}

fn main() {
    kata_rs_vmm::logging::init();
    // First of all: the VMM is given no fd but stdin/stdout/stderr (its command line names
    // paths), so whatever else a parent leaked must not reach the guest-facing process.
    if let Err(e) = kata_rs_vmm::jail::limits::close_inherited_fds() {
        fail(format!("closing inherited file descriptors: {e}"));
    }
    let args = match Args::try_parse() {
        Ok(a) => a,
        Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => {
            let _ = e.print();
            std::process::exit(0);
        }
        Err(e) => {
            // clap's own rendering is several lines and exits 2, which our contract reserves
            // for a guest panic: squeeze it into the one-line error form, exit 1.
            let text = e.to_string();
            let head = text.split("\nUsage:").next().unwrap_or_default();
            let line = head
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with("For more information"))
                .collect::<Vec<_>>()
                .join(" ");
            fail(line.trim_start_matches("error: "));
        }
    };
    let cfg = match args.validate() {
        Ok(c) => c,
        Err(e) => fail(e),
    };
    let exit = match vmm::run(&cfg) {
        Ok(exit) => exit,
        Err(e) => fail(format!("{e:#}")),
    };
    match &exit {
        Exit::Error(msg) => tracing::error!("{msg}"),
        Exit::Panic => tracing::error!("guest kernel panicked"),
        _ => {}
    }
    std::process::exit(exit.code());
}
