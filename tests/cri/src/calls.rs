//! CRI calls of the walk-through that print their duration (`time-KEY=SECONDS`): any call,
//! ExecSync and a container's state.

use std::future::Future;
use std::time::Instant;

use k8s_cri::v1::{ContainerState, ContainerStatusRequest, ExecSyncRequest};

use crate::markers::{marker, text};
use crate::Runtime;
use kata_rs_cri::{call_quiet, Res};

/// One CRI call with a time limit; its duration goes to a `time-KEY=SECONDS` marker.
pub async fn call<T>(
    key: &str,
    secs: u64,
    f: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Res<T> {
    let t0 = Instant::now();
    let r = call_quiet(secs, f).await;
    marker(
        &format!("time-{key}"),
        format!("{:.1}", t0.elapsed().as_secs_f64()),
    );
    r
}

pub async fn exec(
    rt: &mut Runtime,
    key: &str,
    id: &str,
    cmd: &[&str],
    secs: u64,
) -> Res<(String, String, i32)> {
    let r = call(
        key,
        secs + 30,
        rt.exec_sync(ExecSyncRequest {
            container_id: id.into(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            timeout: secs as i64,
        }),
    )
    .await?;
    Ok((text(&r.stdout), text(&r.stderr), r.exit_code))
}

pub async fn container_state(rt: &mut Runtime, key: &str, id: &str, secs: u64) -> Res<String> {
    let r = call(
        key,
        secs,
        rt.container_status(ContainerStatusRequest {
            container_id: id.into(),
            verbose: false,
        }),
    )
    .await?;
    let s = r.status.ok_or("no status in the answer")?;
    let state = ContainerState::try_from(s.state)
        .map(|s| s.as_str_name().to_string())
        .unwrap_or_else(|_| format!("unknown-{}", s.state));
    Ok(state)
}
