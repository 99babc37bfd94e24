//! The agent's container statistics mapped into containerd's cgroups v2 metrics type
//! (`io.containerd.cgroups.v2.Metrics`), packed in the `Any` that Task.Stats returns and
//! `ctr task metrics` prints.

use containerd_shim_protos::{
    cgroups_v2::metrics::{
        CPUStat, IOEntry, IOStat, MemoryEvents, MemoryStat, Metrics, NetworkStat, PidsStat,
    },
    protobuf::{well_known_types::any::Any, Message, MessageField},
};
use kata_rs_protocol::agent::StatsContainerResponse;

/// The type URL containerd's typeurl registry knows the cgroups v2 metrics by (bare name,
/// without protobuf's `type.googleapis.com/` prefix, which containerd 1.6 cannot resolve).
pub const METRICS_V2_TYPE_URL: &str = "io.containerd.cgroups.v2.Metrics";

/// Maps the agent's statistics to cgroups v2 metrics. memory.stat keys that the metrics
/// type has no field for are dropped. Interface counters go into `network` (field 9 of
/// containerd's cgroup2 Metrics; containerd releases whose cgroups module predates it
/// pass the bytes through but do not print them).
pub fn to_metrics(s: &StatsContainerResponse) -> Metrics {
    let mut mem = MemoryStat {
        usage: s.memory_usage_bytes,
        usage_limit: s.memory_limit_bytes,
        swap_usage: s.memory_swap_usage_bytes,
        ..Default::default()
    };
    for (k, v) in &s.memory_stat {
        let v = *v;
        match k.as_str() {
            "anon" => mem.anon = v,
            "file" => mem.file = v,
            "kernel_stack" => mem.kernel_stack = v,
            "slab" => mem.slab = v,
            "sock" => mem.sock = v,
            "shmem" => mem.shmem = v,
            "file_mapped" => mem.file_mapped = v,
            "file_dirty" => mem.file_dirty = v,
            "file_writeback" => mem.file_writeback = v,
            "anon_thp" => mem.anon_thp = v,
            "inactive_anon" => mem.inactive_anon = v,
            "active_anon" => mem.active_anon = v,
            "inactive_file" => mem.inactive_file = v,
            "active_file" => mem.active_file = v,
            "unevictable" => mem.unevictable = v,
            "slab_reclaimable" => mem.slab_reclaimable = v,
            "slab_unreclaimable" => mem.slab_unreclaimable = v,
            "pgfault" => mem.pgfault = v,
            "pgmajfault" => mem.pgmajfault = v,
            "workingset_refault" => mem.workingset_refault = v,
            "workingset_activate" => mem.workingset_activate = v,
            "workingset_nodereclaim" => mem.workingset_nodereclaim = v,
            "pgrefill" => mem.pgrefill = v,
            "pgscan" => mem.pgscan = v,
            "pgsteal" => mem.pgsteal = v,
            "pgactivate" => mem.pgactivate = v,
            "pgdeactivate" => mem.pgdeactivate = v,
            "pglazyfree" => mem.pglazyfree = v,
            "pglazyfreed" => mem.pglazyfreed = v,
            "thp_fault_alloc" => mem.thp_fault_alloc = v,
            "thp_collapse_alloc" => mem.thp_collapse_alloc = v,
            _ => {}
        }
    }
    Metrics {
        pids: MessageField::some(PidsStat {
            current: s.pids_current,
            limit: s.pids_limit,
            ..Default::default()
        }),
        cpu: MessageField::some(CPUStat {
            usage_usec: s.cpu_usage_usec,
            user_usec: s.cpu_user_usec,
            system_usec: s.cpu_system_usec,
            nr_periods: s.cpu_nr_periods,
            nr_throttled: s.cpu_nr_throttled,
            throttled_usec: s.cpu_throttled_usec,
            ..Default::default()
        }),
        memory: MessageField::some(mem),
        memory_events: MessageField::some(MemoryEvents {
            oom_kill: s.memory_oom_kill_count,
            ..Default::default()
        }),
        io: MessageField::some(IOStat {
            usage: vec![IOEntry {
                rbytes: s.io_read_bytes,
                wbytes: s.io_write_bytes,
                ..Default::default()
            }],
            ..Default::default()
        }),
        network: s
            .network
            .iter()
            .map(|i| NetworkStat {
                name: i.name.clone(),
                rx_bytes: i.rx_bytes,
                rx_packets: i.rx_packets,
                rx_errors: i.rx_errors,
                rx_dropped: i.rx_dropped,
                tx_bytes: i.tx_bytes,
                tx_packets: i.tx_packets,
                tx_errors: i.tx_errors,
                tx_dropped: i.tx_dropped,
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

/// The metrics packed as containerd expects them in `StatsResponse.stats`.
pub fn pack(m: &Metrics) -> Result<Any, String> {
    Ok(Any {
        type_url: METRICS_V2_TYPE_URL.to_string(),
        value: m
            .write_to_bytes()
            .map_err(|e| format!("encode metrics: {e}"))?,
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_map_into_cgroups_v2_metrics_and_round_trip() {
        let mut s = StatsContainerResponse {
            cpu_usage_usec: 10,
            cpu_user_usec: 6,
            cpu_system_usec: 4,
            cpu_nr_throttled: 2,
            memory_usage_bytes: 4096,
            memory_limit_bytes: u64::MAX,
            memory_oom_kill_count: 1,
            pids_current: 3,
            pids_limit: 100,
            io_read_bytes: 7,
            io_write_bytes: 8,
            ..Default::default()
        };
        s.memory_stat.insert("anon".into(), 1000);
        s.memory_stat.insert("pgfault".into(), 5);
        s.memory_stat.insert("no_such_key".into(), 9);
        s.network.push(kata_rs_protocol::agent::InterfaceStats {
            name: "eth0".into(),
            rx_bytes: 100,
            tx_packets: 2,
            tx_dropped: 1,
            ..Default::default()
        });
        let m = to_metrics(&s);
        assert_eq!(m.pids.current, 3);
        assert_eq!(m.pids.limit, 100);
        assert_eq!(m.cpu.usage_usec, 10);
        assert_eq!(m.cpu.nr_throttled, 2);
        assert_eq!(m.memory.usage, 4096);
        assert_eq!(m.memory.usage_limit, u64::MAX);
        assert_eq!(m.memory.anon, 1000);
        assert_eq!(m.memory.pgfault, 5);
        assert_eq!(m.memory_events.oom_kill, 1);
        assert_eq!(m.io.usage[0].rbytes, 7);
        assert_eq!(m.io.usage[0].wbytes, 8);
        assert_eq!(m.network.len(), 1);
        assert_eq!(m.network[0].name, "eth0");
        assert_eq!(m.network[0].rx_bytes, 100);
        assert_eq!(m.network[0].tx_packets, 2);
        assert_eq!(m.network[0].tx_dropped, 1);

        let any = pack(&m).unwrap();
        assert_eq!(any.type_url, "io.containerd.cgroups.v2.Metrics");
        let back = Metrics::parse_from_bytes(&any.value).unwrap();
        assert_eq!(back, m);
    }
}
