//! Test helper for the control socket (not part of the VMM; the shim would speak the same
//! line protocol itself).
//!
//! ```text
//! vmm_api SOCKET COMMAND...   send each command as one line, print each reply line;
//!                             exit 0 if every reply starts with "ok", 1 otherwise
//! ```

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 2 {
        eprintln!("usage: vmm_api SOCKET COMMAND...");
        std::process::exit(2);
    }
    let stream = UnixStream::connect(&args[0]).unwrap_or_else(|e| {
        eprintln!("vmm_api: connect {}: {e}", args[0]);
        std::process::exit(1);
    });
    let mut reader = BufReader::new(stream.try_clone().expect("dup the socket"));
    let mut writer = stream;
    let mut ok = true;
    for cmd in &args[1..] {
        if let Err(e) = writeln!(writer, "{cmd}") {
            eprintln!("vmm_api: write: {e}");
            std::process::exit(1);
        }
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => {
                eprintln!("vmm_api: no reply to {cmd}");
                std::process::exit(1);
            }
            Ok(_) => {}
        }
        print!("{line}");
        ok &= line.starts_with("ok");
    }
    std::process::exit(if ok { 0 } else { 1 });
}
