//! The agent's error type: every failure carries a ttrpc status code and a message that
//! names what is wrong, so the shim can report it verbatim.

use ttrpc::Code;

/// An error returned by an agent operation, mapped 1:1 onto a ttrpc status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct AgentError {
    /// The ttrpc/gRPC status code.
    pub code: Code,
    /// Human-readable description naming what is wrong.
    pub message: String,
}

/// Result alias for agent operations.
pub type Result<T> = std::result::Result<T, AgentError>;

impl AgentError {
    /// Creates an error with an explicit status code.
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
    /// The request is malformed (bad id, bad spec, unsupported option...).
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(Code::INVALID_ARGUMENT, message)
    }
    /// The named container or process does not exist.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(Code::NOT_FOUND, message)
    }
    /// The named container already exists.
    pub fn already_exists(message: impl Into<String>) -> Self {
        Self::new(Code::ALREADY_EXISTS, message)
    }
    /// The object is not in the state the operation needs.
    pub fn precondition(message: impl Into<String>) -> Self {
        Self::new(Code::FAILED_PRECONDITION, message)
    }
    /// The feature is not implemented yet.
    pub fn unimplemented(message: impl Into<String>) -> Self {
        Self::new(Code::UNIMPLEMENTED, message)
    }
    /// Something failed inside the guest.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(Code::INTERNAL, message)
    }
}

impl From<AgentError> for ttrpc::Error {
    fn from(e: AgentError) -> Self {
        ttrpc::Error::RpcStatus(ttrpc::get_status(e.code, e.message))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_to_rpc_status() {
        let e: ttrpc::Error = AgentError::invalid("bad id").into();
        match e {
            ttrpc::Error::RpcStatus(s) => {
                assert_eq!(s.code(), Code::INVALID_ARGUMENT);
                assert_eq!(s.message(), "bad id");
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}
