//! Test helper for the vsock data path (not part of the VMM).
//!
//! ```text
//! vsock_echo listen PORT            accept one AF_VSOCK connection, echo one message back, exit
//! vsock_echo connect CID PORT MSG   connect, send MSG, print the reply, exit 0 if it matches
//! ```
//! Build it static (`--target x86_64-unknown-linux-musl`) to put it in a test initramfs.

use std::io::{Read, Write};
use std::os::unix::io::FromRawFd;

fn sockaddr(cid: u32, port: u32) -> libc::sockaddr_vm {
    // SAFETY: sockaddr_vm is plain old data; all-zero is a valid value.
    let mut a: libc::sockaddr_vm = unsafe { std::mem::zeroed() };
    a.svm_family = libc::AF_VSOCK as libc::sa_family_t;
    a.svm_cid = cid;
    a.svm_port = port;
    a
}

fn check(rc: libc::c_int, what: &str) -> libc::c_int {
    if rc < 0 {
        eprintln!("vsock_echo: {what}: {}", std::io::Error::last_os_error());
        std::process::exit(1);
    }
    rc
}

fn socket() -> libc::c_int {
    // SAFETY: plain socket(2) call.
    check(
        unsafe { libc::socket(libc::AF_VSOCK, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) },
        "socket",
    )
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let len = std::mem::size_of::<libc::sockaddr_vm>() as libc::socklen_t;
    match args.get(1).map(String::as_str) {
        Some("listen") => {
            let port: u32 = args[2].parse().expect("port");
            let fd = socket();
            let a = sockaddr(libc::VMADDR_CID_ANY, port);
            // SAFETY: `a` is a valid sockaddr_vm of `len` bytes.
            check(
                unsafe { libc::bind(fd, &a as *const _ as *const libc::sockaddr, len) },
                "bind",
            );
            // SAFETY: plain listen(2) on our socket.
            check(unsafe { libc::listen(fd, 1) }, "listen");
            println!("vsock_echo: listening on port {port}");
            // SAFETY: accept(2) on our listening socket; null address pointers are allowed.
            let c = check(
                unsafe { libc::accept(fd, std::ptr::null_mut(), std::ptr::null_mut()) },
                "accept",
            );
            // SAFETY: `c` is a fresh fd we own.
            let mut s = unsafe { std::fs::File::from_raw_fd(c) };
            let mut buf = [0u8; 256];
            let n = s.read(&mut buf).expect("read");
            println!("vsock_echo: got {:?}", String::from_utf8_lossy(&buf[..n]));
            s.write_all(&buf[..n]).expect("write");
        }
        Some("connect") => {
            let cid: u32 = args[2].parse().expect("cid");
            let port: u32 = args[3].parse().expect("port");
            let msg = args[4].as_bytes();
            let fd = socket();
            let a = sockaddr(cid, port);
            // SAFETY: `a` is a valid sockaddr_vm of `len` bytes.
            check(
                unsafe { libc::connect(fd, &a as *const _ as *const libc::sockaddr, len) },
                "connect",
            );
            // SAFETY: `fd` is a connected socket we own.
            let mut s = unsafe { std::fs::File::from_raw_fd(fd) };
            s.write_all(msg).expect("write");
            let mut buf = vec![0u8; msg.len()];
            s.read_exact(&mut buf).expect("read reply");
            println!("vsock_echo: reply {:?}", String::from_utf8_lossy(&buf));
            std::process::exit(if buf == msg { 0 } else { 1 });
        }
        _ => {
            eprintln!("usage: vsock_echo listen PORT | connect CID PORT MSG");
            std::process::exit(2);
        }
    }
}
