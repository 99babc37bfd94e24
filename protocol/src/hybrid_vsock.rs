//! The hybrid vsock handshake (Firecracker's protocol) between a host client (the shim,
//! `kata-agent-ctl`) and the VMM's vsock Unix socket: the client writes
//! `CONNECT <port>\n`; once the guest accepted on `port`, the VMM answers
//! `OK <hostport>\n` and the stream carries the connection's bytes. The VMM closes the
//! socket instead when the guest refuses or does not answer.

/// Longest handshake line either side reads (`CONNECT 4294967295` is 18 bytes).
pub const MAX_LINE: usize = 32;

/// The client's request for guest port `port`, newline included.
pub fn connect_line(port: u32) -> String {
    format!("CONNECT {port}\n")
}

/// The VMM's answer naming the connection's host-side port `host_port`, newline included.
pub fn ok_line(host_port: u32) -> String {
    format!("OK {host_port}\n")
}

/// Parses the client's line (without its newline): `CONNECT <port>`, decimal, port below
/// `u32::MAX` (`VMADDR_PORT_ANY`). Anything else is None.
pub fn parse_connect(line: &[u8]) -> Option<u32> {
    decimal(line.strip_prefix(b"CONNECT ")?).filter(|p| *p != u32::MAX)
}

/// Parses the VMM's answer (without its newline): `OK <decimal port>`. Anything else is None.
pub fn parse_ok(line: &[u8]) -> Option<u32> {
    decimal(line.strip_prefix(b"OK ")?)
}

/// 1 to 10 ASCII digits that fit a u32 (no sign, no spaces).
fn decimal(digits: &[u8]) -> Option<u32> {
    if digits.is_empty() || digits.len() > 10 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_round_trip() {
        let c = connect_line(1024);
        assert_eq!(c, "CONNECT 1024\n");
        assert_eq!(parse_connect(c.trim_end().as_bytes()), Some(1024));
        let o = ok_line(1 << 30);
        assert_eq!(o, "OK 1073741824\n");
        assert_eq!(parse_ok(o.trim_end().as_bytes()), Some(1 << 30));
        assert!(connect_line(u32::MAX - 1).len() <= MAX_LINE);
    }

    #[test]
    fn only_plain_decimal_ports_parse() {
        assert_eq!(parse_connect(b"CONNECT 0"), Some(0));
        assert_eq!(parse_connect(b"CONNECT 4294967294"), Some(u32::MAX - 1));
        assert_eq!(parse_ok(b"OK 4294967295"), Some(u32::MAX));
        for bad in [
            &b"CONNECT 4294967295"[..],
            b"CONNECT 4294967296",
            b"CONNECT ",
            b"CONNECT +1",
            b"CONNECT -1",
            b"CONNECT 1 ",
            b"CONNECT  1",
            b"CONNECT 1\r",
            b"CONNECT 0x10",
            b"connect 1",
            b"OK 1",
        ] {
            assert_eq!(parse_connect(bad), None, "{bad:?}");
        }
        for bad in [
            &b"OK "[..],
            b"OK x",
            b"OK 1 ",
            b"OK 99999999999",
            b"ok 1",
            b"",
        ] {
            assert_eq!(parse_ok(bad), None, "{bad:?}");
        }
    }
}
