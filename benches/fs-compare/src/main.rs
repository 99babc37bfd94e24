//! fs-compare: measures the two ways a kata-rs sandbox's files can be served to its VM
//! (docs/storage-choice.md): virtiofsd, a separate sandboxed process per pod, against
//! fuse-backend-rs's PassthroughFs, the in-process file server Dragonball runs inside its VMM.
//! `run.sh` in this directory builds it and runs everything; see there.
//!
//!     fs-compare serve SHARED MOUNTPOINT THREADS [jail]   (the in-process server, over /dev/fuse)
//!     fs-compare passthrough WORKDIR RUNS THREADS     (spawns `serve`, measures, drives it)
//!     fs-compare virtiofsd BINARY WORKDIR RUNS CONCURRENT
//!
//! Needs root (FUSE mount without fusermount, virtiofsd's namespace sandbox).

mod bench;
mod proc;
#[cfg(feature = "server")]
mod serve;

use std::process::ExitCode;

fn usage() -> ExitCode {
    eprintln!(
        "usage: fs-compare serve SHARED MOUNTPOINT THREADS [jail]\n\
         \x20      fs-compare passthrough WORKDIR RUNS THREADS\n\
         \x20      fs-compare virtiofsd BINARY WORKDIR RUNS CONCURRENT"
    );
    ExitCode::from(2)
}

fn num(s: &str) -> Option<usize> {
    s.parse().ok().filter(|n| *n > 0)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let result = match a.as_slice() {
        #[cfg(feature = "server")]
        ["serve", shared, mnt, threads, rest @ ..] => match (num(threads), rest) {
            (Some(t), []) => serve::serve(shared, mnt, t, false),
            (Some(t), ["jail"]) => serve::serve(shared, mnt, t, true),
            _ => return usage(),
        },
        ["passthrough", work, runs, threads] => match (num(runs), num(threads)) {
            (Some(r), Some(t)) => bench::passthrough(work.as_ref(), r, t),
            _ => return usage(),
        },
        ["virtiofsd", bin, work, runs, concurrent] => match (num(runs), num(concurrent)) {
            (Some(r), Some(c)) => bench::virtiofsd(bin.as_ref(), work.as_ref(), r, c),
            _ => return usage(),
        },
        _ => return usage(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fs-compare: error: {e}");
            ExitCode::FAILURE
        }
    }
}
