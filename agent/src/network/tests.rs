//! Unit tests of `network.rs`.

use super::*;

fn ip(f: IPFamily, a: &str, m: &str) -> IPAddress {
    let mut x = IPAddress::new();
    x.family = f.into();
    x.address = a.into();
    x.mask = m.into();
    x
}

#[test]
fn macs() {
    assert_eq!(
        parse_mac("02:aB:00:ff:10:01").unwrap(),
        [2, 0xab, 0, 0xff, 0x10, 1]
    );
    for bad in [
        "",
        "02:00:00:00:00",
        "02:00:00:00:00:00:00",
        "02:00:00:00:00:zz",
        "2:00:00:00:00:00:0",
        "02-00-00-00-00-01",
        "+2:00:00:00:00:01",
    ] {
        let e = parse_mac(bad).unwrap_err();
        assert_eq!(e.code, ttrpc::Code::INVALID_ARGUMENT);
        assert!(e.message.contains("bad MAC"), "{bad}: {e}");
    }
}

#[test]
fn addresses() {
    assert_eq!(
        parse_ip(&ip(IPFamily::v4, "10.88.0.5", "16")).unwrap(),
        ("10.88.0.5".parse().unwrap(), 16)
    );
    assert_eq!(parse_ip(&ip(IPFamily::v6, "fd00::5", "64")).unwrap().1, 64);
    for (f, a, m, want) in [
        (IPFamily::v4, "10.88.0.5", "33", "prefix"),
        (IPFamily::v4, "10.88.0.5", "", "prefix"),
        (IPFamily::v4, "10.88.0.5", "+8", "prefix"),
        (IPFamily::v4, "10.88.0.5", "-1", "prefix"),
        (IPFamily::v6, "fd00::5", "129", "prefix"),
        (IPFamily::v4, "10.88.0.256", "16", "bad IP"),
        (IPFamily::v4, "10.88.0.5/16", "16", "bad IP"),
        (IPFamily::v4, "fd00::5", "64", "does not match"),
        (IPFamily::v6, "10.0.0.1", "8", "does not match"),
    ] {
        let e = parse_ip(&ip(f, a, m)).unwrap_err();
        assert_eq!(e.code, ttrpc::Code::INVALID_ARGUMENT);
        assert!(e.message.contains(want), "{a}/{m}: {e}");
    }
    let mut unknown = ip(IPFamily::v4, "10.0.0.1", "8");
    unknown.family = EnumOrUnknown::from_i32(7);
    assert!(parse_ip(&unknown)
        .unwrap_err()
        .message
        .contains("unknown IP family"));
}

fn iface() -> Interface {
    let mut i = Interface::new();
    i.name = "eth0".into();
    i.hw_addr = "02:42:0a:58:00:05".into();
    i.mtu = 1500;
    i.ip_addresses.push(ip(IPFamily::v4, "10.88.0.5", "16"));
    i
}

#[test]
fn interface_plan() {
    let p = InterfacePlan::parse(&iface()).unwrap();
    assert_eq!(p.mac, [2, 0x42, 0x0a, 0x58, 0, 5]);
    assert_eq!(p.name.as_deref(), Some("eth0"));
    assert_eq!(p.mtu, Some(1500));
    assert_eq!(p.addresses.len(), 1);
    let mut keep = iface();
    keep.name.clear();
    keep.mtu = 0;
    let p = InterfacePlan::parse(&keep).unwrap();
    assert_eq!((p.name, p.mtu), (None, None));

    type Edit = Box<dyn Fn(&mut Interface)>;
    let cases: Vec<(Edit, &str)> = vec![
        (Box::new(|i| i.hw_addr.clear()), "hw_addr is required"),
        (
            Box::new(|i| i.hw_addr = "01:00:5e:00:00:01".into()),
            "unicast",
        ),
        (
            Box::new(|i| i.hw_addr = "00:00:00:00:00:00".into()),
            "unicast",
        ),
        (Box::new(|i| i.hw_addr = "zz".into()), "bad MAC"),
        (Box::new(|i| i.name = "a/b".into()), "bad interface name"),
        (Box::new(|i| i.name = "x".repeat(16)), "bad interface name"),
        (Box::new(|i| i.name = "eth 0".into()), "bad interface name"),
        (Box::new(|i| i.name = "..".into()), "bad interface name"),
        (Box::new(|i| i.mtu = 67), "MTU 67 out of range"),
        (Box::new(|i| i.mtu = 65536), "out of range"),
        (
            Box::new(|i| i.ip_addresses[0].mask = "40".into()),
            "bad prefix length",
        ),
    ];
    for (f, want) in cases {
        let mut i = iface();
        f(&mut i);
        let e = InterfacePlan::parse(&i).unwrap_err();
        assert_eq!(e.code, ttrpc::Code::INVALID_ARGUMENT);
        assert!(e.message.contains(want), "want {want:?}: {e}");
    }
}

fn route(dest: &str, gw: &str, dev: &str) -> Route {
    let mut r = Route::new();
    r.dest = dest.into();
    r.gateway = gw.into();
    r.device = dev.into();
    r
}

#[test]
fn route_plans() {
    let p = RoutePlan::parse(&route("", "10.88.0.1", "eth0")).unwrap();
    assert_eq!(p.dest, None);
    assert_eq!(p.gateway, Some("10.88.0.1".parse().unwrap()));
    let p = RoutePlan::parse(&route("10.88.0.0/16", "", "eth0")).unwrap();
    assert_eq!(p.dest, Some(("10.88.0.0".parse().unwrap(), 16)));
    let mut v6 = route("default", "fd00::1", "eth0");
    v6.family = IPFamily::v6.into();
    assert!(RoutePlan::parse(&v6).unwrap().v6);
    let mut scoped = route("10.0.0.0/8", "", "eth0");
    scoped.scope = 253;
    assert_eq!(RoutePlan::parse(&scoped).unwrap().scope, 253);

    for (r, want) in [
        (route("", "", "eth0"), "needs a gateway"),
        (route("10.0.0.0", "", "eth0"), "bad route destination"),
        (route("10.0.0.0/33", "", "eth0"), "bad route destination"),
        (route("10.0.0.0/x", "", "eth0"), "bad route destination"),
        (route("", "10.0.0.300", "eth0"), "bad gateway"),
        (route("", "fd00::1", "eth0"), "does not match"),
        (route("fd00::/64", "", "eth0"), "does not match"),
        (route("", "10.0.0.1", ""), "bad interface name"),
        (route("", "10.0.0.1", "e/th0"), "bad interface name"),
    ] {
        let e = RoutePlan::parse(&r).unwrap_err();
        assert_eq!(e.code, ttrpc::Code::INVALID_ARGUMENT);
        assert!(e.message.contains(want), "want {want:?}: {e}");
    }
    let mut bad_scope = route("10.0.0.0/8", "", "eth0");
    bad_scope.scope = 7;
    assert!(RoutePlan::parse(&bad_scope)
        .unwrap_err()
        .message
        .contains("scope 7"));
    let mut many = Routes::new();
    many.routes = vec![route("", "10.0.0.1", "eth0"); MAX_ITEMS + 1];
    assert!(parse_routes(&many)
        .unwrap_err()
        .message
        .contains("more than"));
}

#[test]
fn neighbor_plans() {
    let mut n = ARPNeighbor::new();
    n.to_ip_address = Some(ip(IPFamily::v4, "10.88.0.1", "")).into();
    n.device = "eth0".into();
    n.lladdr = "02:00:00:00:00:01".into();
    let p = NeighborPlan::parse(&n).unwrap();
    assert_eq!(p.state, 0x80);
    assert_eq!(p.mac, [2, 0, 0, 0, 0, 1]);

    let mut bad = n.clone();
    bad.lladdr = "02:00".into();
    assert!(NeighborPlan::parse(&bad)
        .unwrap_err()
        .message
        .contains("bad MAC"));
    let mut bad = n.clone();
    bad.state = 3;
    assert!(NeighborPlan::parse(&bad)
        .unwrap_err()
        .message
        .contains("NUD state"));
    let mut bad = n.clone();
    bad.to_ip_address = None.into();
    assert!(NeighborPlan::parse(&bad)
        .unwrap_err()
        .message
        .contains("without to_ip_address"));
    let mut bad = n.clone();
    bad.to_ip_address = Some(ip(IPFamily::v6, "10.88.0.1", "")).into();
    assert!(NeighborPlan::parse(&bad)
        .unwrap_err()
        .message
        .contains("does not match"));
    let mut bad = n;
    bad.device = String::new();
    assert!(NeighborPlan::parse(&bad)
        .unwrap_err()
        .message
        .contains("interface name"));
}

#[tokio::test(flavor = "current_thread")]
async fn outside_the_guest_nothing_is_touched() {
    // The test process is not PID 1: valid requests are refused before any netlink call.
    let mut req = UpdateInterfaceRequest::new();
    req.interface = Some(iface()).into();
    let e = update_interface(&req).await.unwrap_err();
    assert_eq!(e.code, ttrpc::Code::FAILED_PRECONDITION);
    let mut rs = Routes::new();
    rs.routes.push(route("", "10.88.0.1", "eth0"));
    let e = update_routes(&rs).await.unwrap_err();
    assert_eq!(e.code, ttrpc::Code::FAILED_PRECONDITION);
    // Invalid input is still INVALID_ARGUMENT first.
    req.interface.as_mut().unwrap().mtu = 1;
    let e = update_interface(&req).await.unwrap_err();
    assert_eq!(e.code, ttrpc::Code::INVALID_ARGUMENT);
}

/// Root only, as PID 1 of a network + PID namespace with a link whose MAC is
/// `KATA_RS_AGENT_NET_TEST` (not named eth0):
/// `unshare --net --pid --fork sh -c 'ip link add x0 address 02:00:00:00:00:05 type veth peer name y0; exec TESTBIN --ignored --exact network::tests::configures_a_real_interface'`.
#[tokio::test(flavor = "current_thread")]
#[ignore]
async fn configures_a_real_interface() {
    let mac = std::env::var("KATA_RS_AGENT_NET_TEST").unwrap();
    let mut i = iface();
    i.hw_addr = mac.clone();
    i.mtu = 1400;
    let mut req = UpdateInterfaceRequest::new();
    req.interface = Some(i).into();
    let got = update_interface(&req).await.unwrap();
    assert_eq!(got.name, "eth0");
    assert_eq!(got.hw_addr, mac);
    assert_eq!(got.mtu, 1400);
    assert!(got
        .ip_addresses
        .iter()
        .any(|a| a.address == "10.88.0.5" && a.mask == "16"));
    let mut rs = Routes::new();
    rs.routes.push(route("", "10.88.0.1", "eth0"));
    let mut subnet = route("10.88.0.0/16", "", "eth0");
    subnet.scope = 253;
    subnet.source = "10.88.0.5".into();
    rs.routes.push(subnet);
    update_routes(&rs).await.unwrap();
    // Twice: the same state, no EEXIST.
    update_routes(&rs).await.unwrap();
    let mut n = ARPNeighbor::new();
    n.to_ip_address = Some(ip(IPFamily::v4, "10.88.0.1", "")).into();
    n.device = "eth0".into();
    n.lladdr = "02:00:00:00:00:01".into();
    add_neighbors(&[n]).await.unwrap();
    let mut unknown = iface();
    unknown.hw_addr = "02:99:99:99:99:99".into();
    req.interface = Some(unknown).into();
    let e = update_interface(&req).await.unwrap_err();
    assert_eq!(e.code, ttrpc::Code::NOT_FOUND);
    let out = std::process::Command::new("sh")
        .args(["-c", "ip addr show eth0; ip route; ip neigh"])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&out.stdout);
    println!("{out}");
    assert!(
        out.contains("mtu 1400") && out.contains("inet 10.88.0.5/16"),
        "{out}"
    );
    assert!(out.contains("default via 10.88.0.1 dev eth0"), "{out}");
    assert!(
        out.contains("10.88.0.1 dev eth0 lladdr 02:00:00:00:00:01 PERMANENT"),
        "{out}"
    );
}
