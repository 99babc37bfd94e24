//! The kata-rs guest contract: the agent API (protos/agent.proto; protobuf messages and the
//! async ttrpc client and server traits, feature `api`), shared by the shim (client) and
//! the agent (server), and everything else shim, agent and VMM must agree on: the agent's
//! vsock port, the hybrid vsock handshake ([`hybrid_vsock`]), ids ([`id`]) and the guest
//! side of the sandbox ([`guest`]); and the VMM's control API ([`control`]), shared by the
//! VMM (server) and its callers.

/// Agent vsock port the agent listens on and the shim connects to.
pub const AGENT_VSOCK_PORT: u32 = 1024;

pub mod control;
pub mod guest;
pub mod hybrid_vsock;
pub mod id;

/// Protobuf messages of the agent API.
#[cfg(feature = "api")]
#[allow(
    clippy::all,
    missing_docs,
    unused_mut,
    unused_imports,
    non_upper_case_globals,
    unused_qualifications,
    non_camel_case_types
)]
pub mod agent {
    include!(concat!(env!("OUT_DIR"), "/agent.rs"));
}

/// Async ttrpc client (`AgentServiceClient`) and server trait (`AgentService`).
#[cfg(feature = "api")]
#[allow(
    clippy::all,
    missing_docs,
    unused_mut,
    unused_imports,
    non_upper_case_globals,
    unused_qualifications,
    non_camel_case_types
)]
pub mod agent_ttrpc {
    include!(concat!(env!("OUT_DIR"), "/agent_ttrpc.rs"));
}
