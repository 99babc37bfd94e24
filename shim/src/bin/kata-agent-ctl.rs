//! `kata-agent-ctl`: calls the agent's Check or Shutdown through kata-vmm's hybrid vsock
//! socket (`--vsock-uds`; the shim's is `<state_dir>/<sandbox-id>/kata-vmm.vsock`) and prints
//! the result. A debug tool, e.g. to see that an agent booted by kata-vmm alone is ready:
//!
//! ```text
//! kata-agent-ctl --uds PATH [--port 1024] [--timeout-secs S] [--retry-ms MS] check|shutdown
//! ```
//!
//! The socket is 0600 (root's): only root can use it. `check` retries until the agent
//! answers or the timeout (default 10 s) passes, every `--retry-ms` (default 100, the shim's
//! pause) once the socket exists and every 10 ms before: started before kata-vmm, it sees
//! the agent's first answer without its own start in the way (what the bench does). Exit status 0 on success, 1 on failure, 2
//! on a usage error.

use std::path::PathBuf;
use std::{process::ExitCode, time::Duration};

use kata_rs_shim::agent::{self, Agent, NotReady};

const USAGE: &str =
    "usage: kata-agent-ctl --uds PATH [--port 1024] [--timeout-secs S] [--retry-ms MS] check|shutdown";

#[derive(Debug)]
struct Args {
    uds: PathBuf,
    port: u32,
    timeout: Duration,
    retry: Duration,
    command: String,
}

fn parse(args: &[String]) -> Result<Args, String> {
    let mut uds = None;
    let mut port = kata_rs_protocol::AGENT_VSOCK_PORT;
    let mut timeout = Duration::from_secs(10);
    let mut retry = agent::RETRY_PAUSE;
    let mut command = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = |name: &str| -> Result<u64, String> {
            it.next()
                .ok_or(format!("{name} needs a value"))?
                .parse::<u64>()
                .map_err(|e| format!("{name}: {e}"))
        };
        match a.as_str() {
            "--uds" => {
                uds = Some(PathBuf::from(
                    it.next().ok_or("--uds needs a value")?.as_str(),
                ))
            }
            "--port" => {
                port = u32::try_from(value("--port")?).map_err(|e| format!("--port: {e}"))?
            }
            "--timeout-secs" => timeout = Duration::from_secs(value("--timeout-secs")?),
            "--retry-ms" => match value("--retry-ms")? {
                ms @ 1..=10_000 => retry = Duration::from_millis(ms),
                ms => return Err(format!("--retry-ms: {ms} is not within 1-10000")),
            },
            "-h" | "--help" => return Err(String::new()),
            "check" | "shutdown" if command.is_none() => command = Some(a.clone()),
            other => return Err(format!("unexpected argument {other:?}")),
        }
    }
    Ok(Args {
        uds: uds.ok_or("--uds is required")?,
        port,
        timeout,
        retry,
        command: command.ok_or("a command (check or shutdown) is required")?,
    })
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let args = match parse(&argv) {
        Ok(a) => a,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("kata-agent-ctl: {e}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    let per_try = Duration::from_secs(2);
    match args.command.as_str() {
        "check" => match agent::wait_ready(
            &args.uds,
            args.port,
            agent::Tries {
                pause: args.retry,
                ..agent::Tries::new(args.timeout, per_try)
            },
            args.timeout,
            std::future::pending(),
        )
        .await
        {
            Ok((_, r)) => {
                println!(
                    "ok: agent {} (guest kernel {})",
                    r.version, r.kernel_release
                );
                ExitCode::SUCCESS
            }
            Err(NotReady::Timeout(last)) => {
                let last = last.map(|e| format!(": {e}")).unwrap_or_default();
                eprintln!(
                    "kata-agent-ctl: agent at {} port {} did not answer within {}s{last}",
                    args.uds.display(),
                    args.port,
                    args.timeout.as_secs()
                );
                ExitCode::FAILURE
            }
            Err(NotReady::VmmExited(_)) => ExitCode::FAILURE,
        },
        _ => {
            let r = async {
                let a = Agent::connect(&args.uds, args.port, args.timeout, args.timeout).await?;
                a.shutdown().await
            }
            .await;
            match r {
                Ok(()) => {
                    println!("ok: agent shutting down");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!(
                        "kata-agent-ctl: {} port {}: {e}",
                        args.uds.display(),
                        args.port
                    );
                    ExitCode::FAILURE
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn parses_arguments() {
        let a = parse(&v("--uds /run/x.vsock check")).unwrap();
        assert_eq!(
            (
                a.uds.to_str().unwrap(),
                a.port,
                a.timeout,
                a.command.as_str()
            ),
            ("/run/x.vsock", 1024, Duration::from_secs(10), "check")
        );
        assert_eq!(a.retry, agent::RETRY_PAUSE);
        let a = parse(&v("--uds /v --retry-ms 20 check")).unwrap();
        assert_eq!(a.retry, Duration::from_millis(20));
        for bad in ["0", "10001", "x"] {
            let e = parse(&v(&format!("--uds /v --retry-ms {bad} check"))).unwrap_err();
            assert!(e.contains("--retry-ms"), "{e}");
        }
        let a = parse(&v("shutdown --uds /v --port 99 --timeout-secs 3")).unwrap();
        assert_eq!(
            (
                a.uds.to_str().unwrap(),
                a.port,
                a.timeout,
                a.command.as_str()
            ),
            ("/v", 99, Duration::from_secs(3), "shutdown")
        );
        assert!(parse(&v("check")).unwrap_err().contains("--uds"));
        assert!(parse(&v("--uds")).unwrap_err().contains("--uds"));
        assert!(parse(&v("--uds /v")).unwrap_err().contains("command"));
        assert!(parse(&v("--cid 3 check")).is_err());
        assert!(parse(&v("--uds /v check extra")).is_err());
        assert!(parse(&v("--uds /v --port 99999999999 check")).is_err());
    }
}
