//! `kata-rs-vmm`: the kata-rs microVM monitor (binary `kata-vmm`).
//!
//! One `kata-vmm` process runs one pod's KVM microVM: it boots an uncompressed ELF `vmlinux`
//! through the PVH entry point (or a bzImage through the Linux 32-bit boot protocol), gives it an initramfs, a 16550 serial console on port 0x3f8
//! (logged to a file), one virtio-mmio vsock device served by the VMM itself whose host side
//! is a Unix socket (hybrid vsock), a virtio-rng device, virtio-blk disks and virtio-net cards on host taps served
//! by its main thread; every
//! thread runs under a seccomp allow-list; started as root, the process jails itself after
//! setup (namespaces, empty root, unprivileged uid/gid, no capabilities). See `vmm/README.md` for the memory map, device model and threads, and
//! `docs/design.md` for the command line contract with the shim.

#![deny(missing_docs)]

pub mod api;
pub mod args;
pub mod boot;
pub mod boot_watch;
pub mod builder;
pub mod cmdline;
pub mod cpu;
pub mod device_manager;
pub mod devices;
pub mod event_loop;
#[cfg(test)]
mod fuzz;
pub mod jail;
pub mod layout;
pub mod logging;
pub mod mptable;
pub mod pause;
pub mod seccomp;
pub mod slots;
pub mod snapshot;
#[cfg(test)]
mod test_util;
pub mod unix_socket;
pub mod vmm;
pub mod vstate;
