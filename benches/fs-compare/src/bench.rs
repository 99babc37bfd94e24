//! The two harnesses: `passthrough` (starts `fs-compare serve`, drives the FUSE mount with an
//! untar and a sequential read, samples the server's memory) and `virtiofsd` (starts it the
//! way the shim does, times its socket, samples both of its processes, reads its isolation).
//!
//! `workload`: the tar and the big file; `passthrough` and `virtiofsd`: the harnesses;
//! `report`: the printed figures.

mod passthrough;
mod report;
mod virtiofsd;
mod workload;

use std::{io, time::Duration};

pub use passthrough::passthrough;
pub use virtiofsd::virtiofsd;

/// How long a process is left alone before its idle memory is sampled.
const SETTLE: Duration = Duration::from_millis(300);

fn other(msg: String) -> io::Error {
    io::Error::other(msg)
}
