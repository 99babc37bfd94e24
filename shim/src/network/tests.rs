//! Unit tests of `network.rs`.

use super::*;
use oci_spec::runtime::{LinuxBuilder, LinuxNamespaceBuilder, SpecBuilder};

fn spec(path: Option<&str>) -> Spec {
    let mut ns = LinuxNamespaceBuilder::default().typ(LinuxNamespaceType::Network);
    if let Some(p) = path {
        ns = ns.path(p);
    }
    SpecBuilder::default()
        .linux(
            LinuxBuilder::default()
                .namespaces(vec![
                    LinuxNamespaceBuilder::default()
                        .typ(LinuxNamespaceType::Pid)
                        .build()
                        .unwrap(),
                    ns.build().unwrap(),
                ])
                .build()
                .unwrap(),
        )
        .build()
        .unwrap()
}

#[test]
fn netns_path_only_with_a_path() {
    assert_eq!(
        netns_path(&spec(Some("/var/run/netns/cni-1"))),
        Some(PathBuf::from("/var/run/netns/cni-1"))
    );
    assert_eq!(netns_path(&spec(None)), None);
    assert_eq!(netns_path(&spec(Some(""))), None);
    assert_eq!(netns_path(&SpecBuilder::default().build().unwrap()), None);
}

fn net() -> PodNetwork {
    PodNetwork {
        netns: "/var/run/netns/cni-1".into(),
        tap: TAP_NAME.into(),
        name: POD_IFACE.into(),
        mac: [0x0a, 0x58, 0x0a, 0x58, 0, 5],
        mtu: 1450,
        addresses: vec![("10.88.0.5".parse().unwrap(), 16)],
        routes: vec![
            PodRoute {
                dest: Some(("10.88.0.0".parse().unwrap(), 16)),
                gateway: None,
                source: Some("10.88.0.5".parse().unwrap()),
                scope: 253,
                v6: false,
            },
            PodRoute {
                dest: None,
                gateway: Some("10.88.0.1".parse().unwrap()),
                source: None,
                scope: 0,
                v6: false,
            },
        ],
        neighbors: vec![PodNeighbor {
            ip: "10.88.0.1".parse().unwrap(),
            mac: [2, 0, 0, 0, 0, 1],
        }],
    }
}

#[test]
fn requests_for_the_guest() {
    let n = net();
    assert_eq!(n.vmm_net_arg(), "tap=tap0_kata,mac=0a:58:0a:58:00:05");
    let i = n.interface();
    assert_eq!(i.name, "eth0");
    assert_eq!(i.hw_addr, "0a:58:0a:58:00:05");
    assert_eq!(i.mtu, 1450);
    assert_eq!(i.ip_addresses.len(), 1);
    assert_eq!(i.ip_addresses[0].address, "10.88.0.5");
    assert_eq!(i.ip_addresses[0].mask, "16");
    let r = n.pb_routes();
    assert_eq!(r[0].dest, "10.88.0.0/16");
    assert_eq!(r[0].source, "10.88.0.5");
    assert_eq!(r[0].scope, 253);
    assert_eq!(r[1].dest, "");
    assert_eq!(r[1].gateway, "10.88.0.1");
    assert!(r.iter().all(|r| r.device == "eth0"));
    let a = n.pb_neighbors();
    assert_eq!(a[0].lladdr, "02:00:00:00:00:01");
    assert_eq!(a[0].to_ip_address.address, "10.88.0.1");
}

#[tokio::test(flavor = "current_thread")]
async fn missing_netns_is_a_clear_error() {
    let e = PodNetwork::setup(Path::new("/nonexistent/netns/cni-x"))
        .await
        .unwrap_err();
    assert!(
        e.contains("pod network namespace /nonexistent/netns/cni-x: No such file"),
        "{e}"
    );
    // Teardown of a namespace that is gone has nothing to do.
    let mut n = net();
    n.netns = "/nonexistent/netns/cni-x".into();
    n.teardown().await.unwrap();
}

/// Root only, on a prepared namespace: `KATA_RS_NETNS_TEST=/run/netns/x cargo test -p
/// kata-rs-shim network::tests::setup_and_teardown_in_a_real_netns -- --ignored` with an
/// `eth0` (veth, IPv4 address, default route) in that namespace.
#[tokio::test(flavor = "current_thread")]
#[ignore = "needs root and a prepared pod netns: `make unit` runs it (scripts/unit-privileged.sh)"]
async fn setup_and_teardown_in_a_real_netns() {
    let ns = PathBuf::from(std::env::var("KATA_RS_NETNS_TEST").unwrap());
    let n = PodNetwork::setup(&ns).await.unwrap();
    println!("{n:?}");
    assert!(!n.addresses.is_empty());
    let again = PodNetwork::setup(&ns).await.unwrap_err();
    assert!(
        again.contains("already has an interface tap0_kata"),
        "{again}"
    );
    let links = std::process::Command::new("nsenter")
        .arg(format!("--net={}", ns.display()))
        .args(["tc", "filter", "show", "dev", "eth0", "ingress"])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&links.stdout);
    println!("{out}");
    assert!(out.contains("mirred"), "{out}");
    n.teardown().await.unwrap();
    let links = std::process::Command::new("nsenter")
        .arg(format!("--net={}", ns.display()))
        .args(["sh", "-c", "ip link; tc qdisc show dev eth0"])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&links.stdout);
    println!("{out}");
    assert!(
        !out.contains("tap0_kata") && !out.contains("ingress"),
        "{out}"
    );
}
