//! Network counters for StatsContainer: the interfaces of a container's network
//! namespace, read from `/proc/<pid>/net/dev` so no namespace has to be entered.

use kata_rs_protocol::agent::InterfaceStats;

/// Parses the text of `/proc/<pid>/net/dev`: one line per interface after two header
/// lines, `name: rx bytes packets errs drop fifo frame compressed multicast tx bytes
/// packets errs drop fifo colls carrier compressed`. Loopback and lines that do not
/// parse are left out.
pub fn parse_net_dev(text: &str) -> Vec<InterfaceStats> {
    text.lines()
        .skip(2)
        .filter_map(|line| {
            let (name, counters) = line.split_once(':')?;
            let name = name.trim();
            if name.is_empty() || name == "lo" {
                return None;
            }
            let n: Vec<u64> = counters
                .split_whitespace()
                .map(str::parse)
                .collect::<Result<_, _>>()
                .ok()?;
            if n.len() < 16 {
                return None;
            }
            Some(InterfaceStats {
                name: name.to_string(),
                rx_bytes: n[0],
                rx_packets: n[1],
                rx_errors: n[2],
                rx_dropped: n[3],
                tx_bytes: n[8],
                tx_packets: n[9],
                tx_errors: n[10],
                tx_dropped: n[11],
                ..Default::default()
            })
        })
        .collect()
}

/// The network counters of the namespace process `pid` lives in; empty when the
/// process is gone (a stopped container has no network namespace left to count).
pub fn of_process(pid: i32) -> Vec<InterfaceStats> {
    if pid <= 0 {
        return Vec::new();
    }
    std::fs::read_to_string(format!("/proc/{pid}/net/dev"))
        .map(|t| parse_net_dev(&t))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NET_DEV: &str = "\
Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:     840      10    0    0    0     0          0         0      840      10    0    0    0     0       0          0
  eth0: 1234567     890    1    2    0     0          0         3   765432     456    4    5    0     0       0          0
  bad0: 12 x
";

    #[test]
    fn parses_every_interface_but_loopback() {
        let s = parse_net_dev(NET_DEV);
        assert_eq!(s.len(), 1, "{s:?}");
        let e = &s[0];
        assert_eq!(e.name, "eth0");
        assert_eq!(
            (e.rx_bytes, e.rx_packets, e.rx_errors, e.rx_dropped),
            (1234567, 890, 1, 2)
        );
        assert_eq!(
            (e.tx_bytes, e.tx_packets, e.tx_errors, e.tx_dropped),
            (765432, 456, 4, 5)
        );
    }

    #[test]
    fn garbage_and_missing_processes_give_nothing() {
        assert!(parse_net_dev("").is_empty());
        assert!(parse_net_dev("a\nb\nc: 1 2 3\n:\n").is_empty());
        assert!(of_process(0).is_empty());
        assert!(of_process(-1).is_empty());
    }

    #[test]
    fn own_namespace_is_readable() {
        // The test process's own /proc/<pid>/net/dev parses (whatever interfaces it has,
        // loopback is never among them).
        let s = of_process(std::process::id() as i32);
        assert!(s.iter().all(|i| i.name != "lo"), "{s:?}");
    }
}
