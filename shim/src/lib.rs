//! kata-rs containerd shim v2 (`io.containerd.kata.v2`): every pod runs in its own
//! kata-vmm microVM; the shim shares the containers' root file systems and volumes with the
//! VM live through virtio-fs, and drives the containers through the agent's ttrpc API over
//! vsock.
//!
//! Modules: [`config`] (the TOML configuration), [`share`] (the sandbox's shared directory),
//! [`virtiofsd`] (its file server), [`vmm`] (the VMM process), [`agent`] (the agent
//! client), [`sandbox`] (a VM with its agent), [`container`] (a container's status, exit
//! and stdio), [`pod`] (CRI pod grouping), [`bootstrap`] (the shim's start/delete
//! subcommands), [`lost`] (a lost shim's cleanup), [`bundle`] (the container's bundle),
//! [`task`] (the containerd Task service), [`error`] (its errors and their ttrpc codes).

pub mod agent;
pub mod bootstrap;
pub mod bundle;
pub mod config;
pub mod container;
pub mod error;
pub mod exit_watch;
pub mod factory;
pub mod forward;
pub mod host_cgroup;
pub mod lost;
pub mod metrics;
pub mod mounts;
pub mod network;
pub mod options;
pub mod pod;
pub mod sandbox;
pub mod server;
pub mod share;
pub mod spec;
pub mod task;
#[cfg(test)]
mod test_util;
pub mod util;
pub mod virtiofsd;
pub mod vmm;
