//! Pseudo terminals for `terminal` processes: the container init / exec helper opens the
//! pty in the container's devpts and sends the master to the agent (SCM_RIGHTS on the
//! sync socket), which keeps it for ReadStdout / WriteStdin / TtyWinResize.

use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::error::{AgentError, Result};

/// Sets the window size of the terminal behind `master`.
pub fn resize(master: &OwnedFd, rows: u16, cols: u16) -> Result<()> {
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads a valid winsize struct; the fd is a pty master we own.
    if unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ as _, &ws) } != 0 {
        return Err(AgentError::internal(format!(
            "TIOCSWINSZ: {}",
            std::io::Error::last_os_error()
        )));
    }
    Ok(())
}

/// One async handle on a pty master (the agent uses a dup for reading and another for
/// writing). Reading returns EOF once every slave fd is closed (the kernel says EIO).
pub struct PtyMaster(AsyncFd<std::fs::File>);

impl PtyMaster {
    /// Wraps a dup of `master`, switched to non-blocking mode.
    pub fn new(master: &OwnedFd) -> Result<Self> {
        let fd = master
            .as_fd()
            .try_clone_to_owned()
            .map_err(|e| AgentError::internal(format!("dup pty master: {e}")))?;
        let flags = nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_GETFL)
            .map_err(|e| AgentError::internal(format!("pty F_GETFL: {}", e.desc())))?;
        let flags = nix::fcntl::OFlag::from_bits_truncate(flags) | nix::fcntl::OFlag::O_NONBLOCK;
        nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_SETFL(flags))
            .map_err(|e| AgentError::internal(format!("pty O_NONBLOCK: {}", e.desc())))?;
        // SAFETY: the File owns its fd, which stays open and unchanged until the AsyncFd
        // (which owns the File) is dropped.
        unsafe { AsyncFd::register(std::fs::File::from(fd)) }
            .map(PtyMaster)
            .map_err(|e| AgentError::internal(format!("register pty master: {e}")))
    }
}

impl AsyncRead for PtyMaster {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        loop {
            let mut guard = ready!(self.0.poll_read_ready(cx))?;
            let unfilled = buf.initialize_unfilled();
            match guard.try_io(|f| f.get_ref().read(unfilled)) {
                Ok(Ok(n)) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                // All slave ends closed: end of stream.
                Ok(Err(e)) if e.raw_os_error() == Some(libc::EIO) => return Poll::Ready(Ok(())),
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                Err(_would_block) => continue,
            }
        }
    }
}

impl AsyncWrite for PtyMaster {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        loop {
            let mut guard = ready!(self.0.poll_write_ready(cx))?;
            match guard.try_io(|f| f.get_ref().write(data)) {
                Ok(r) => return Poll::Ready(r),
                Err(_would_block) => continue,
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
