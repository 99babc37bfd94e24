//! [`ShimError`]: every failure the Task service returns, and its one mapping to the ttrpc
//! code containerd sees. The message is what `ctr` (or the kubelet) shows, so each names what
//! is wrong; the variant says only which kind of failure it is.

use crate::agent::AgentError;
use ttrpc::Code;

/// A failed Task request.
#[derive(Debug, thiserror::Error)]
pub enum ShimError {
    /// The request, the bundle or its spec is wrong (INVALID_ARGUMENT).
    #[error("{0}")]
    Invalid(String),
    /// Not possible in the current state, or the host is not set up for it
    /// (FAILED_PRECONDITION): a running container, a missing kernel, no pod sandbox.
    #[error("{0}")]
    Precondition(String),
    /// No such container or process, or the process has already finished (NOT_FOUND).
    #[error("{0}")]
    NotFound(String),
    /// The container or exec exists already (ALREADY_EXISTS).
    #[error("{0}")]
    Exists(String),
    /// A limit is reached (RESOURCE_EXHAUSTED).
    #[error("{0}")]
    Limit(String),
    /// The runtime does not do this (UNIMPLEMENTED).
    #[error("{0}")]
    Unsupported(String),
    /// containerd gave up on the request, and what it did was undone (DEADLINE_EXCEEDED).
    #[error("{0}")]
    GaveUp(String),
    /// The shim itself failed (INTERNAL): a task that panicked, a reply it cannot encode.
    #[error("{0}")]
    Internal(String),
    /// The host or the guest failed doing it (UNKNOWN): a mount, a file, the VM's start.
    #[error("{0}")]
    Failed(String),
    /// The agent refused or failed `what` (e.g. "start the container"); containerd gets the
    /// agent's own code (UNIMPLEMENTED from an older agent says so).
    #[error("{}", agent_text(what, source))]
    Agent {
        /// What the shim asked the agent to do, as a verb phrase.
        what: &'static str,
        /// The agent's error.
        source: AgentError,
    },
}

fn agent_text(what: &str, e: &AgentError) -> String {
    if e.is_unimplemented() {
        format!("cannot {what}: the agent in the guest does not implement it yet ({e})")
    } else {
        format!("the agent could not {what}: {e}")
    }
}

impl ShimError {
    /// An agent failure while the shim was doing `what`.
    pub fn agent(what: &'static str) -> impl FnOnce(AgentError) -> ShimError {
        move |source| ShimError::Agent { what, source }
    }

    /// The ttrpc code containerd gets.
    pub fn code(&self) -> Code {
        match self {
            ShimError::Invalid(_) => Code::INVALID_ARGUMENT,
            ShimError::Precondition(_) => Code::FAILED_PRECONDITION,
            ShimError::NotFound(_) => Code::NOT_FOUND,
            ShimError::Exists(_) => Code::ALREADY_EXISTS,
            ShimError::Limit(_) => Code::RESOURCE_EXHAUSTED,
            ShimError::Unsupported(_) => Code::UNIMPLEMENTED,
            ShimError::GaveUp(_) => Code::DEADLINE_EXCEEDED,
            ShimError::Internal(_) => Code::INTERNAL,
            ShimError::Failed(_) => Code::UNKNOWN,
            ShimError::Agent { source, .. } if source.is_unimplemented() => Code::UNIMPLEMENTED,
            ShimError::Agent { source, .. } => source.code(),
        }
    }

    /// This failure, and the undo steps that failed after it (name, error): the message
    /// says both, the kind becomes [`ShimError::Failed`] (the host is left in a state
    /// nobody asked for). No failed steps: the error as it is.
    pub fn with_cleanup_failures(self, failed: Vec<(String, String)>) -> ShimError {
        if failed.is_empty() {
            return self;
        }
        let extra: Vec<String> = failed
            .into_iter()
            .map(|(n, e)| format!("{n}: {e}"))
            .collect();
        ShimError::Failed(format!(
            "{self}; cleaning up also failed: {}",
            extra.join("; ")
        ))
    }
}

impl From<ShimError> for ttrpc::Error {
    fn from(e: ShimError) -> Self {
        ttrpc::Error::RpcStatus(ttrpc::get_status(e.code(), e.to_string()))
    }
}

/// A Task request's result.
pub type ShimResult<T> = Result<T, ShimError>;

#[cfg(test)]
mod tests {
    use super::*;

    fn status(e: ShimError) -> (Code, String) {
        match ttrpc::Error::from(e) {
            ttrpc::Error::RpcStatus(s) => (s.code(), s.message().to_string()),
            other => panic!("not a status: {other:?}"),
        }
    }

    #[test]
    fn each_kind_maps_to_its_code_and_keeps_its_message() {
        let cases = [
            (ShimError::Invalid("bad".into()), Code::INVALID_ARGUMENT),
            (
                ShimError::Precondition("bad".into()),
                Code::FAILED_PRECONDITION,
            ),
            (ShimError::NotFound("bad".into()), Code::NOT_FOUND),
            (ShimError::Exists("bad".into()), Code::ALREADY_EXISTS),
            (ShimError::Limit("bad".into()), Code::RESOURCE_EXHAUSTED),
            (ShimError::Unsupported("bad".into()), Code::UNIMPLEMENTED),
            (ShimError::GaveUp("bad".into()), Code::DEADLINE_EXCEEDED),
            (ShimError::Internal("bad".into()), Code::INTERNAL),
            (ShimError::Failed("bad".into()), Code::UNKNOWN),
        ];
        for (e, code) in cases {
            assert_eq!(status(e), (code, "bad".to_string()));
        }
    }

    #[test]
    fn agent_errors_keep_the_agents_code_and_say_what_the_shim_did() {
        let refused = AgentError::Status {
            method: "StartContainer",
            code: Code::FAILED_PRECONDITION,
            message: "no such file".into(),
        };
        let (code, msg) = status(ShimError::agent("start the container")(refused));
        assert_eq!(code, Code::FAILED_PRECONDITION);
        assert!(
            msg.starts_with("the agent could not start the container: ")
                && msg.contains("no such file"),
            "{msg}"
        );

        let old = AgentError::Status {
            method: "StatsContainer",
            code: Code::UNIMPLEMENTED,
            message: "/grpc.AgentService/StatsContainer is not supported".into(),
        };
        let (code, msg) = status(ShimError::agent("read the container's statistics")(old));
        assert_eq!(code, Code::UNIMPLEMENTED);
        assert!(
            msg.starts_with(
                "cannot read the container's statistics: the agent in the guest does not implement it yet ("
            ),
            "{msg}"
        );
    }

    #[test]
    fn failed_cleanup_is_appended_and_makes_the_error_unknown() {
        let e = ShimError::Precondition("kernel /x not found".into());
        let (code, msg) = status(e.with_cleanup_failures(vec![
            ("unmount /b/rootfs".into(), "EBUSY".into()),
            ("remove /s".into(), "EPERM".into()),
        ]));
        assert_eq!(code, Code::UNKNOWN);
        assert_eq!(
            msg,
            "kernel /x not found; cleaning up also failed: unmount /b/rootfs: EBUSY; remove /s: EPERM"
        );
        let e = ShimError::Invalid("bad spec".into()).with_cleanup_failures(Vec::new());
        assert_eq!(status(e), (Code::INVALID_ARGUMENT, "bad spec".into()));
    }
}
