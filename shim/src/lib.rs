//! kata-rs containerd shim v2 (`io.containerd.kata.v2`): every pod runs in its own
//! kata-vmm microVM; the shim boots the VM with the container's root file system packed as
//! a cpio, and drives the container through the agent's ttrpc API over vsock.
//!
//! Modules: [`config`] (the TOML configuration), [`cpio`] (rootfs packing), [`vmm`] (the
//! VMM process), [`agent`] (the agent client), [`sandbox`] (a VM with its agent),
//! [`container`] (a container's status, exit and stdio), [`pod`] (CRI pod grouping, the
//! spare-disk pool), [`service`] (the containerd Task
//! service and the shim's start/delete subcommands).

pub mod agent;
pub mod config;
pub mod container;
pub mod cpio;
pub mod metrics;
pub mod mounts;
pub mod network;
pub mod options;
pub mod pod;
pub mod sandbox;
pub mod server;
pub mod service;
pub mod spec;
pub mod util;
pub mod vmm;
