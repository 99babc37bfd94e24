//! The agent's side of the sync protocol on the helper's socket (see [`crate::init`]):
//! send the config, read `ready` (with the pty master for a terminal process) or the
//! error, and later `start` and wait for the execve.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use crate::error::{AgentError, Result};
use crate::init::InitReply;

/// How long the init may take to set a container up, or to exec it.
pub(super) const SYNC_TIMEOUT: Duration = Duration::from_secs(60);

/// Sends `config` and waits for the helper's reply (blocking; `what` names the process in
/// errors). Returns the socket, ready for [`release`], and the pty master for a terminal
/// process. A helper that exits without a word, says ready without the master it owes, or
/// replies an error fails it.
pub(super) fn setup(
    mut sync: UnixStream,
    config: &[u8],
    terminal: bool,
    what: &str,
) -> Result<(UnixStream, Option<OwnedFd>)> {
    let io = |e: std::io::Error| AgentError::internal(format!("{what}: talk to init: {e}"));
    sync.set_read_timeout(Some(SYNC_TIMEOUT)).map_err(io)?;
    sync.write_all(config).map_err(io)?;
    sync.write_all(b"\n").map_err(io)?;
    let (line, master) = if terminal {
        recv_line_with_fd(&sync).map_err(io)?
    } else {
        let mut line = Vec::new();
        BufReader::new(&sync)
            .read_until(b'\n', &mut line)
            .map_err(io)?;
        (line, None)
    };
    if line.is_empty() {
        return Err(AgentError::internal(format!(
            "{what}: init exited during setup without a word"
        )));
    }
    match serde_json::from_slice::<InitReply>(line.trim_ascii_end()) {
        Ok(InitReply::Ready(true)) if terminal && master.is_none() => Err(AgentError::internal(
            format!("{what}: init said ready without sending the pty master"),
        )),
        Ok(InitReply::Ready(true)) => {
            sync.set_read_timeout(Some(SYNC_TIMEOUT)).map_err(io)?;
            Ok((sync, master))
        }
        _ => Err(reply_error(what, &line)),
    }
}

/// Reads one reply line and the fd passed with it (SCM_RIGHTS). The line is sent with a
/// single sendmsg and is short, so one recvmsg carries all of it.
fn recv_line_with_fd(sync: &UnixStream) -> std::io::Result<(Vec<u8>, Option<OwnedFd>)> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    use std::os::fd::FromRawFd;
    let mut buf = vec![0u8; 4096];
    let mut cmsg = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let msg = recvmsg::<()>(
        sync.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .map_err(std::io::Error::from)?;
    let mut fd = None;
    for c in msg.cmsgs().map_err(std::io::Error::from)? {
        if let ControlMessageOwned::ScmRights(fds) = c {
            for raw in fds {
                // SAFETY: the kernel just installed this descriptor in our table for us.
                let owned = unsafe { OwnedFd::from_raw_fd(raw) };
                if fd.is_none() {
                    fd = Some(owned);
                }
            }
        }
    }
    let n = msg.bytes;
    buf.truncate(n);
    Ok((buf, fd))
}

/// Writes `start` on the sync socket and waits for the exec: EOF = success.
pub async fn release(id: &str, sync: UnixStream) -> Result<()> {
    let id = id.to_string();
    tokio::task::spawn_blocking(move || -> Result<()> {
        let mut sync = sync;
        sync.write_all(b"start\n")
            .map_err(|e| AgentError::internal(format!("container {id}: release init: {e}")))?;
        let mut buf = Vec::new();
        sync.read_to_end(&mut buf)
            .map_err(|e| AgentError::internal(format!("container {id}: start: {e}")))?;
        if buf.is_empty() {
            return Ok(()); // close-on-exec fired: execve succeeded
        }
        Err(reply_error(&format!("container {id}"), &buf))
    })
    .await
    .map_err(|e| AgentError::internal(format!("start task: {e}")))?
}

/// The helper's error line as INVALID_ARGUMENT (what it reports is about the spec: a
/// missing command, a bad mount...); anything else it says is INTERNAL.
fn reply_error(id: &str, buf: &[u8]) -> AgentError {
    let line = buf.split(|b| *b == b'\n').next().unwrap_or_default();
    match serde_json::from_slice::<InitReply>(line) {
        Ok(InitReply::Error(msg)) => AgentError::invalid(format!("{id}: {msg}")),
        _ => AgentError::internal(format!(
            "{id}: unexpected reply from init: {:?}",
            String::from_utf8_lossy(buf)
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Seek};
    use std::thread;

    /// Plays the helper on the other end: reads the config line, then writes `reply`
    /// (with `fd` attached when given) and returns the config it read.
    fn helper(
        theirs: UnixStream,
        reply: &'static [u8],
        fd: Option<OwnedFd>,
    ) -> thread::JoinHandle<Vec<u8>> {
        thread::spawn(move || {
            let mut config = Vec::new();
            BufReader::new(&theirs)
                .read_until(b'\n', &mut config)
                .unwrap();
            match fd {
                Some(fd) => {
                    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
                    let fds = [fd.as_raw_fd()];
                    let iov = [std::io::IoSlice::new(reply)];
                    let cmsg = [ControlMessage::ScmRights(&fds)];
                    sendmsg::<()>(theirs.as_raw_fd(), &iov, &cmsg, MsgFlags::empty(), None)
                        .unwrap();
                }
                None => (&theirs).write_all(reply).unwrap(),
            }
            config
        })
    }

    #[test]
    fn ready_after_the_config() {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let h = helper(theirs, b"{\"ready\":true}\n", None);
        let (_sync, master) = setup(ours, br#"{"args":["sh"]}"#, false, "container c1").unwrap();
        assert!(master.is_none());
        assert_eq!(h.join().unwrap(), b"{\"args\":[\"sh\"]}\n");
    }

    #[test]
    fn a_terminal_helper_sends_its_master_with_ready() {
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(b"the master").unwrap();
        let (ours, theirs) = UnixStream::pair().unwrap();
        let h = helper(theirs, b"{\"ready\":true}\n", Some(OwnedFd::from(file)));
        let (_sync, master) = setup(ours, b"{}", true, "container c1").unwrap();
        h.join().unwrap();
        // The fd received is the same open file the helper sent.
        let mut got = std::fs::File::from(master.expect("the master"));
        got.rewind().unwrap();
        let mut s = String::new();
        got.read_to_string(&mut s).unwrap();
        assert_eq!(s, "the master");
        // Ready without the master is an error, not a terminal without output.
        let (ours, theirs) = UnixStream::pair().unwrap();
        let h = helper(theirs, b"{\"ready\":true}\n", None);
        let e = setup(ours, b"{}", true, "container c1 exec e1").unwrap_err();
        h.join().unwrap();
        assert_eq!(e.code, ttrpc::Code::INTERNAL);
        assert_eq!(
            e.message,
            "container c1 exec e1: init said ready without sending the pty master"
        );
    }

    #[test]
    fn setup_errors_name_the_process() {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let h = helper(
            theirs,
            b"{\"error\":\"exec: \\\"nosuchcmd\\\": executable file not found in $PATH\"}\n",
            None,
        );
        let e = setup(ours, b"{}", false, "container c1").unwrap_err();
        h.join().unwrap();
        assert_eq!(e.code, ttrpc::Code::INVALID_ARGUMENT);
        assert_eq!(
            e.message,
            r#"container c1: exec: "nosuchcmd": executable file not found in $PATH"#
        );
        let (ours, theirs) = UnixStream::pair().unwrap();
        let h = helper(theirs, b"", None); // reads the config, goes away without a word
        let e = setup(ours, b"{}", false, "container c1").unwrap_err();
        h.join().unwrap();
        assert_eq!(e.code, ttrpc::Code::INTERNAL);
        assert!(
            e.message
                .ends_with("init exited during setup without a word"),
            "{e}"
        );
        let (ours, theirs) = UnixStream::pair().unwrap();
        let h = helper(theirs, b"garbage\n", None);
        let e = setup(ours, b"{}", false, "container c1").unwrap_err();
        h.join().unwrap();
        assert_eq!(e.code, ttrpc::Code::INTERNAL);
        assert_eq!(
            e.message,
            r#"container c1: unexpected reply from init: "garbage\n""#
        );
    }

    #[tokio::test]
    async fn release_says_start_and_eof_means_exec() {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let h = thread::spawn(move || {
            let mut line = String::new();
            BufReader::new(&theirs).read_line(&mut line).unwrap();
            line // dropping `theirs` = the close-on-exec of a successful execve
        });
        release("c1", ours).await.unwrap();
        assert_eq!(h.join().unwrap(), "start\n");
        let (ours, theirs) = UnixStream::pair().unwrap();
        let h = thread::spawn(move || {
            let mut line = String::new();
            BufReader::new(&theirs).read_line(&mut line).unwrap();
            (&theirs)
                .write_all(b"{\"error\":\"exec \\\"sh\\\": permission denied\"}\n")
                .unwrap();
        });
        let e = release("c1", ours).await.unwrap_err();
        h.join().unwrap();
        assert_eq!(e.code, ttrpc::Code::INVALID_ARGUMENT);
        assert_eq!(e.message, r#"container c1: exec "sh": permission denied"#);
    }
}
