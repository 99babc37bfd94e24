//! Network helpers both ends of a kata-rs pod network share, each once: MAC addresses
//! ([`mac`]), the tap device ([`tap`], shim and VMM), and, with the default `rtnetlink`
//! feature, the rtnetlink queries of the shim (host side, in the pod's network namespace)
//! and the agent (guest side): links, routes and the attributes both read from them.
//! The VMM takes this crate without default features (no rtnetlink, no async).

pub mod mac;
pub mod tap;

pub use mac::{format_mac, is_unicast, parse_mac};

#[cfg(feature = "rtnetlink")]
mod rtnl;
#[cfg(feature = "rtnetlink")]
pub use rtnl::*;
