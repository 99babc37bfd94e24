//! The hybrid vsock handshake: a stream to a guest port through the VMM's Unix socket.

use std::path::Path;

use kata_rs_protocol::hybrid_vsock;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Longest handshake reply accepted.
const MAX_REPLY: usize = hybrid_vsock::MAX_LINE;

/// Opens a stream to guest port `port` through the VMM's hybrid vsock socket `uds`: connect,
/// `CONNECT <port>\n`, then the reply line `OK <hostport>\n`, read byte by byte so that
/// nothing behind it is consumed. The VMM closes the connection instead of answering when
/// the guest refuses (nothing listens on the port yet) or does not answer.
pub async fn dial(uds: &Path, port: u32) -> Result<tokio::net::UnixStream, String> {
    let mut s = tokio::net::UnixStream::connect(uds)
        .await
        .map_err(|e| format!("{}: {e}", uds.display()))?;
    s.write_all(hybrid_vsock::connect_line(port).as_bytes())
        .await
        .map_err(|e| format!("{}: sending CONNECT: {e}", uds.display()))?;
    let mut line = Vec::new();
    loop {
        let mut b = [0u8; 1];
        let n = s
            .read(&mut b)
            .await
            .map_err(|e| format!("{}: reading the reply: {e}", uds.display()))?;
        if n == 0 {
            return Err(format!(
                "{}: closed without a reply (guest port {port} refused or not answering)",
                uds.display()
            ));
        }
        if b[0] == b'\n' {
            break;
        }
        if line.len() >= MAX_REPLY {
            return Err(format!("{}: reply too long", uds.display()));
        }
        line.push(b[0]);
    }
    check_reply(&line).map_err(|e| format!("{}: {e}", uds.display()))?;
    Ok(s)
}

/// Checks the handshake reply line (without its newline): `OK <decimal port>`.
pub fn check_reply(line: &[u8]) -> Result<u32, String> {
    hybrid_vsock::parse_ok(line).ok_or_else(|| {
        format!(
            "bad handshake reply {:?}",
            String::from_utf8_lossy(&line[..line.len().min(MAX_REPLY)])
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handshake_replies() {
        assert_eq!(check_reply(b"OK 1073741824"), Ok(1 << 30));
        for bad in [
            &b"OK"[..],
            b"OK ",
            b"OK x",
            b"ok 1",
            b"OK 1 ",
            b"OK 99999999999",
            b"ERR",
        ] {
            assert!(check_reply(bad).is_err(), "{bad:?}");
        }
    }

    /// A fake VMM side: answers the handshake as told, then echoes.
    async fn fake_vmm(
        reply: &'static [u8],
    ) -> (std::path::PathBuf, tokio::task::JoinHandle<Vec<u8>>) {
        let dir = std::env::temp_dir().join(format!(
            "kata-agent-dial-{}-{}",
            std::process::id(),
            reply.len()
        ));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("v.sock");
        let _ = std::fs::remove_file(&path);
        let l = tokio::net::UnixListener::bind(&path).unwrap();
        let h = tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut got = vec![0u8; 13];
            s.read_exact(&mut got).await.unwrap();
            s.write_all(reply).await.unwrap();
            got
        });
        (path, h)
    }

    #[tokio::test(flavor = "current_thread")]
    async fn dial_speaks_the_handshake() {
        let (path, h) = fake_vmm(b"OK 1073741824\nttrpc").await;
        let mut s = dial(&path, 1024).await.unwrap();
        assert_eq!(h.await.unwrap(), b"CONNECT 1024\n");
        let mut rest = [0u8; 5];
        s.read_exact(&mut rest).await.unwrap();
        assert_eq!(&rest, b"ttrpc", "nothing behind the reply is consumed");
        let (path, _h) = fake_vmm(b"").await;
        let e = dial(&path, 1024).await.unwrap_err();
        assert!(e.contains("closed without a reply"), "{e}");
        let (path, _h) = fake_vmm(b"NO\n").await;
        assert!(dial(&path, 1024).await.is_err());
        let e = dial(Path::new("/nonexistent/kata.vsock"), 1024)
            .await
            .unwrap_err();
        assert!(e.contains("/nonexistent/kata.vsock"), "{e}");
    }
}
