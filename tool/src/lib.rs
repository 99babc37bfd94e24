//! kata-rs host tool (`kata-rs`): `check` whether a node can run kata-rs, report its `env`
//! for bug reports, `install` the build outputs at the install layout (docs/design.md) with
//! containerd's and CRI-O's runtime handler merged in, and `uninstall` exactly what install
//! did, and serve per-sandbox `metrics` in Prometheus text format. Every subcommand takes
//! `--root DIR`: a tree that stands for the node's `/`.

#![warn(missing_docs)]

pub mod check;
pub mod containerd;
pub mod crio;
pub mod env;
pub mod fsutil;
pub mod guest;
pub mod install;
pub mod kvm;
pub mod layout;
pub mod metrics;
pub mod overhead;
pub mod probe;
pub mod prom;
pub mod serve;
