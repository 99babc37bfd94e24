//! MAC addresses as text: `aa:bb:cc:dd:ee:ff`, written by the shim (`kata-vmm --net`, the
//! agent's UpdateInterface/neighbours) and read by the VMM and the agent.

/// Formats a MAC address as `aa:bb:cc:dd:ee:ff` (lowercase hex).
pub fn format_mac(m: &[u8]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Parses `aa:bb:cc:dd:ee:ff`: exactly six colon-separated octets of two hex digits each
/// (either case). `None` for anything else; callers word their own error.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for m in mac.iter_mut() {
        let p = parts.next()?;
        if p.len() != 2 || !p.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        *m = u8::from_str_radix(p, 16).ok()?;
    }
    match parts.next() {
        None => Some(mac),
        Some(_) => None,
    }
}

/// Whether `mac` can be a NIC's own address: unicast (group bit clear) and not all zeros.
pub fn is_unicast(mac: &[u8; 6]) -> bool {
    mac[0] & 1 == 0 && *mac != [0; 6]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_formats_lowercase_with_colons() {
        assert_eq!(
            format_mac(&[2, 0xab, 0, 0xff, 0x10, 1]),
            "02:ab:00:ff:10:01"
        );
        assert_eq!(format_mac(&[]), "");
    }

    #[test]
    fn mac_parses_six_hex_octets_only() {
        assert_eq!(
            parse_mac("02:aB:00:ff:10:01"),
            Some([2, 0xab, 0, 0xff, 0x10, 1])
        );
        let m = [0x0a, 0x58, 0x0a, 0x58, 0, 5];
        assert_eq!(parse_mac(&format_mac(&m)), Some(m));
        for bad in [
            "",
            "02:00:00:00:00",
            "02:00:00:00:00:00:00",
            "02:00:00:00:00:",
            "02:00:00:00:00:zz",
            "2:00:00:00:00:00:0",
            "02-00-00-00-00-01",
            "+2:00:00:00:00:01",
            "02:00:00:00:00:+1",
            "002:00:00:00:00:01",
        ] {
            assert_eq!(parse_mac(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn unicast_is_group_bit_clear_and_not_zero() {
        assert!(is_unicast(&[2, 0, 0, 0, 0, 1]));
        assert!(!is_unicast(&[0; 6]));
        assert!(!is_unicast(&[1, 0, 0x5e, 0, 0, 1]));
        assert!(!is_unicast(&[0xff; 6]));
    }
}
