//! What the CRI clients of this crate share (kata-rs-cri, kata-rs-cri-bench): the connection
//! to containerd's CRI socket and one time-limited CRI call.

use std::future::Future;
use std::time::Duration;

use tonic::transport::{Channel, Endpoint, Uri};

/// A result whose error is the text to print.
pub type Res<T> = Result<T, String>;

/// Connects to the CRI gRPC server on the Unix socket `socket`.
pub async fn connect(socket: &str) -> Res<Channel> {
    let path = socket.to_string();
    // tonic wants a URI; the connector ignores it and dials the socket.
    Endpoint::try_from("http://[::]:50051")
        .map_err(|e| e.to_string())?
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move {
                let s = tokio::net::UnixStream::connect(path).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(s))
            }
        }))
        .await
        .map_err(|e| format!("cannot connect to {socket}: {e}"))
}

/// One CRI call with a time limit: the answer, or what went wrong as text.
pub async fn call_quiet<T>(
    secs: u64,
    f: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Res<T> {
    match tokio::time::timeout(Duration::from_secs(secs), f).await {
        Err(_) => Err(format!("no answer within {secs} s")),
        Ok(Err(s)) => Err(format!("{:?}: {}", s.code(), s.message())),
        Ok(Ok(r)) => Ok(r.into_inner()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_missing_socket_is_named() {
        let e = connect("/nonexistent/cri.sock").await.unwrap_err();
        assert!(e.contains("/nonexistent/cri.sock"), "{e}");
    }

    #[tokio::test]
    async fn a_call_that_does_not_answer_times_out() {
        let never = std::future::pending::<Result<tonic::Response<()>, tonic::Status>>();
        let e = call_quiet(0, never).await.unwrap_err();
        assert_eq!(e, "no answer within 0 s");
        let status = async { Err::<tonic::Response<()>, _>(tonic::Status::not_found("x")) };
        assert_eq!(call_quiet(1, status).await.unwrap_err(), "NotFound: x");
    }
}
