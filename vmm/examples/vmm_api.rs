//! Test helper for the control socket (not part of the VMM): a command line client of the
//! typed control API ([`kata_rs_protocol::control`]).
//!
//! ```text
//! vmm_api SOCKET COMMAND...   send each command as one request ({"COMMAND":{}}), print each
//!                             response in its human form (ok pong, ok paused, error ...);
//!                             exit 0 if every response is ok, 1 otherwise
//! vmm_api --json SOCKET ...   the same, printing each response line as JSON
//! ```
//!
//! `snapshot DIR` takes the next argument as its directory (`{"snapshot":{"dir":"DIR"}}`).
//! A command the API does not know is sent all the same (as `{"COMMAND":{}}`), so that the
//! VMM's error reply can be seen. Each reply is awaited at most 120 s (a snapshot writes all
//! of guest RAM; an emulated node is slow).

use std::path::Path;
use std::time::Duration;

use kata_rs_protocol::control::{encode, Client, Request};

fn request(cmd: &str) -> Option<Request> {
    Some(match cmd {
        "ping" => Request::Ping {},
        "pause" => Request::Pause {},
        "resume" => Request::Resume {},
        "state" => Request::State {},
        _ => return None,
    })
}

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let json = args.first().is_some_and(|a| a == "--json");
    if json {
        args.remove(0);
    }
    if args.len() < 2 {
        eprintln!("usage: vmm_api [--json] SOCKET COMMAND...");
        std::process::exit(2);
    }
    let mut client =
        Client::connect(Path::new(&args[0]), Duration::from_secs(120)).unwrap_or_else(|e| {
            eprintln!("vmm_api: connect {e}");
            std::process::exit(1);
        });
    let mut ok = true;
    let mut cmds = args[1..].iter();
    while let Some(cmd) = cmds.next() {
        let reply = match request(cmd) {
            None if cmd == "snapshot" => {
                let Some(dir) = cmds.next() else {
                    eprintln!("vmm_api: snapshot needs a directory");
                    std::process::exit(2);
                };
                client.call(&Request::Snapshot { dir: dir.into() })
            }
            Some(req) => client.call(&req),
            // Not a typed request: sent raw, for the VMM's "unknown command" reply.
            None => client.call_raw(&format!("{{{}:{{}}}}", encode(cmd).trim_end())),
        };
        match reply {
            Ok(r) => {
                if json {
                    print!("{}", encode(&r));
                } else {
                    println!("{r}");
                }
                ok &= r.is_ok();
            }
            Err(e) => {
                eprintln!("vmm_api: {cmd}: {e}");
                std::process::exit(1);
            }
        }
    }
    std::process::exit(if ok { 0 } else { 1 });
}
