//! The muxer under the main thread's seccomp filter.

use super::*;

/// The muxer's whole life (accept, handshake, timer, data both ways, half-close, credit)
/// under the main thread's seccomp filter: nothing it does is outside the allow-list.
#[test]
fn muxer_runs_under_the_main_seccomp_filter() {
    use crate::seccomp::{filter, ThreadClass};
    let prog = filter(ThreadClass::Main {
        api: false,
        vsock_uds: true,
        snapshot: false,
    })
    .unwrap();
    let mut r = rig();
    let (mut c1, local) = r.established(1024, 4096);
    c1.write_all(b"data").unwrap();
    let mut c2 = r.client();
    c2.write_all(b"CONNECT 5\n").unwrap();
    // SAFETY: the child runs the muxer (glibc's malloc is fork-safe) and ends with _exit;
    // the parent only waits.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0);
    if pid == 0 {
        let code = (|| {
            if prog.apply().is_err() {
                return 3;
            }
            r.poll();
            let p = r.drain(4096);
            let Some(req) = p.iter().find(|(h, _)| h.op == op::REQUEST) else {
                return 10;
            };
            if !p.iter().any(|(h, d)| h.op == op::RW && d == b"data") {
                return 11;
            }
            let local2 = req.0.src_port;
            r.guest(local2, 5, op::RESPONSE, &[], 4096, 0);
            r.guest(local, 1024, op::RW, b"back", 4096, 0);
            let mut s = guest_hdr(local, 1024, op::SHUTDOWN, 0, 4096, 0);
            s.flags = SHUTDOWN_SEND;
            r.m.recv_pkt(&s, &[]);
            r.guest(local, 1024, op::CREDIT_REQUEST, &[], 4096, 0);
            if r.drain(4096).is_empty() {
                return 12;
            }
            r.m.reset();
            0
        })();
        // SAFETY: ends the forked child without running the test harness's exit path.
        unsafe { libc::_exit(code) };
    }
    let mut status = 0;
    // SAFETY: waiting for our own child.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "child status {status:#x} (SIGSYS: {})",
        libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGSYS
    );
    let mut ok = [0u8; 32];
    let n = c2.read(&mut ok).unwrap();
    assert!(ok[..n].starts_with(b"OK "), "{:?}", &ok[..n]);
    let mut all = Vec::new();
    c1.read_to_end(&mut all).unwrap();
    assert_eq!(all, b"back");
}
