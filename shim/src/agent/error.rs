//! How an agent request failed ([`AgentError`]), with the guest's texts bounded and cleaned.

use std::time::Duration;

use crate::util::sanitize;

/// Longest error text from the agent that is passed on.
pub(super) const MAX_ERROR_TEXT: usize = 2048;

/// An agent request that failed.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The agent answered with an error status; `message` is its (cleaned) text.
    #[error("{message}")]
    Status {
        /// The request, e.g. `CreateContainer`.
        method: &'static str,
        /// The agent's status code.
        code: ttrpc::Code,
        /// The agent's text.
        message: String,
    },
    /// No answer in time.
    #[error("agent {method} did not answer within {:.1}s", .after.as_secs_f64())]
    Timeout {
        /// The request.
        method: &'static str,
        /// The timeout.
        after: Duration,
    },
    /// The connection failed or broke.
    #[error("agent {method} failed: {message}")]
    Transport {
        /// The request.
        method: &'static str,
        /// What happened.
        message: String,
    },
    /// The agent's answer makes no sense (e.g. more data than asked for).
    #[error("agent {method} sent a bad reply: {message}")]
    BadReply {
        /// The request.
        method: &'static str,
        /// What is wrong.
        message: String,
    },
}

impl AgentError {
    /// Whether the agent answered UNIMPLEMENTED (its version lacks the request).
    pub fn is_unimplemented(&self) -> bool {
        matches!(self, AgentError::Status { code, .. } if *code == ttrpc::Code::UNIMPLEMENTED)
    }

    /// Whether the guest did not answer at all (no reply in time, or the connection broke),
    /// as opposed to an answer that says no.
    pub fn guest_lost(&self) -> bool {
        matches!(
            self,
            AgentError::Timeout { .. } | AgentError::Transport { .. }
        )
    }

    /// Whether the agent answered NOT_FOUND.
    pub fn is_not_found(&self) -> bool {
        matches!(self, AgentError::Status { code, .. } if *code == ttrpc::Code::NOT_FOUND)
    }

    /// The ttrpc code to pass on to containerd for this failure.
    pub fn code(&self) -> ttrpc::Code {
        match self {
            AgentError::Status { code, .. } => *code,
            AgentError::Timeout { .. } => ttrpc::Code::DEADLINE_EXCEEDED,
            _ => ttrpc::Code::UNKNOWN,
        }
    }
}

/// The error of `method` from a ttrpc failure (the agent's status text cleaned).
pub(super) fn map_err(method: &'static str, e: ttrpc::Error) -> AgentError {
    match e {
        ttrpc::Error::RpcStatus(s) => AgentError::Status {
            method,
            code: s.code(),
            message: sanitize(s.message(), MAX_ERROR_TEXT),
        },
        other => AgentError::Transport {
            method,
            message: sanitize(&other.to_string(), MAX_ERROR_TEXT),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Only silence or a broken connection counts as a lost guest (SIGKILL then kills the
    /// VM); an answer, even an error, does not.
    #[test]
    fn a_lost_guest_is_silence_not_an_error_answer() {
        let timeout = AgentError::Timeout {
            method: "SignalProcess",
            after: Duration::from_secs(15),
        };
        assert!(timeout.guest_lost());
        assert_eq!(
            timeout.to_string(),
            "agent SignalProcess did not answer within 15.0s"
        );
        let broken = map_err("SignalProcess", ttrpc::Error::LocalClosed);
        assert!(broken.guest_lost(), "{broken:?}");
        let refused = map_err(
            "SignalProcess",
            ttrpc::Error::RpcStatus(ttrpc::get_status(ttrpc::Code::NOT_FOUND, "no process")),
        );
        assert!(!refused.guest_lost());
    }

    #[test]
    fn agent_status_text_is_passed_through_cleaned() {
        let e = map_err(
            "CreateContainer",
            ttrpc::Error::RpcStatus(ttrpc::get_status(
                ttrpc::Code::NOT_FOUND,
                "executable file `nope` not found\x1b",
            )),
        );
        assert_eq!(e.to_string(), "executable file `nope` not found?");
        let long = "x".repeat(10_000);
        let e = map_err(
            "Check",
            ttrpc::Error::RpcStatus(ttrpc::get_status(ttrpc::Code::UNKNOWN, long)),
        );
        assert!(e.to_string().len() < MAX_ERROR_TEXT + 10);
        let e = map_err("Check", ttrpc::Error::RemoteClosed);
        assert!(e.to_string().starts_with("agent Check failed"), "{e}");
    }
}
