//! The CRI pod-network test (tests/scripts/cri-net.sh, one node boot): containerd's CRI plugin
//! with a CNI bridge network (bridge + host-local, 10.88.0.0/16) and a pod under `runc` and one
//! under `kata` at the same time, each with its own network namespace. Asserted as a user sees
//! it: the kata pod gets an IP from CNI, its container shows that IP on `eth0` with the pod's
//! MAC (the one CNI gave the veth in the pod's namespace), the node reaches both pods' servers
//! via the pod IPs, the two pods reach each other over the bridge, the kata pod's namespace has
//! the tap with tc redirects both ways while it runs, and after StopPodSandbox/RemovePodSandbox
//! there is no network namespace, tap or kata-rs leftover. Task.Stats of the kata tasks carries
//! the guest eth0 counters (cgroup2 Metrics.network). Each pod's network sysctl
//! (net.ipv4.ip_local_port_range) reads back in its container, and PortForward reaches a
//! server in the pod on localhost and on all addresses (not one bound to the pod IP alone)
//! under both runtimes.

use kata_rs_tests::{build_cri_tools, marker, node_run, require_kata_artifacts, CriTools, NodeRun};

/// Debian's containernetworking-plugins (scripts/install-deps.sh installs it).
const CNI_DIR: &str = "/usr/lib/cni";
/// iproute2's tc, to show the redirect filters on the node (busybox tc cannot).
const TC: &str = "/usr/sbin/tc";

fn section_text(run: &NodeRun, name: &str) -> String {
    run.section(name).join("\n") + "\n"
}

fn want(text: &str, who: &str, key: &str, value: &str) {
    assert_eq!(
        marker(text, key),
        Some(value),
        "{who}: marker {key}, want {value}; output:\n{text}"
    );
}

fn is_pod_ip(ip: &str) -> bool {
    let o: Vec<u8> = ip.split('.').filter_map(|p| p.parse().ok()).collect();
    o.len() == 4 && o[0] == 10 && o[1] == 88 && ip.split('.').count() == 4
}

fn is_mac(m: &str) -> bool {
    m.len() == 17
        && m.split(':').count() == 6
        && m.split(':')
            .all(|p| p.len() == 2 && p.chars().all(|c| c.is_ascii_hexdigit()))
}

/// What both pods must show: an IP from CNI on their eth0, the peer reached.
fn check_pod(run: &NodeRun, handler: &str, peer: &str) -> (String, String) {
    let t = section_text(run, handler);
    assert_eq!(
        marker(&t, "handler"),
        Some(handler),
        "no output of the {handler} pod's CRI client:\n{}",
        run.stdout
    );
    for k in ["run-pod", "create-server", "start-server", "start-client"] {
        want(&t, handler, k, "ok");
    }
    want(&t, handler, "pod-network", "POD");
    let ip = marker(&t, "pod-ip").unwrap_or("").to_string();
    assert!(
        is_pod_ip(&ip),
        "{handler}: pod IP from CNI {ip:?} is not in 10.88.0.0/16:\n{t}"
    );
    // Inside the container: that IP on eth0, with a MAC, a default route via the bridge.
    want(&t, handler, "eth0-addr", &format!("{ip}/16"));
    let mac = marker(&t, "eth0-mac").unwrap_or("").to_string();
    assert!(is_mac(&mac), "{handler}: eth0 MAC {mac:?}:\n{t}");
    want(&t, handler, "eth0-mtu", "1500");
    want(&t, handler, "eth0-gw", "10.88.0.1");
    want(&t, handler, "eth0-route", "default");
    // The other pod's server, from this pod's client container over the bridge.
    want(&t, handler, &format!("peer-fetch-{peer}"), "ok");
    want(&t, handler, "released", "ok");
    // Containers sharing the pod network still see each other on localhost.
    want(&t, handler, "localhost", "ok");
    // The pod's network sysctl, in its namespace (the guest's for kata).
    want(&t, handler, "net-sysctl", "20000_40000");
    // PortForward (kubectl port-forward), through containerd's streaming server: containerd
    // dials localhost:PORT in the pod's network namespace, which under kata the shim's
    // forwarder serves (docs/port-forward.md). A server on all addresses and one on 127.0.0.1
    // answer; one bound to the pod IP only is not on localhost: refused under both.
    want(&t, handler, "pf-servers", "ok");
    want(&t, handler, "pf-all", "ok");
    want(&t, handler, "pf-loopback", "ok");
    want(&t, handler, "pf-podip", "refused");
    for k in ["stop-pod", "remove-pod"] {
        want(&t, handler, k, "ok");
    }
    want(&t, handler, "pods-left", "0");
    want(&t, handler, "containers-left", "0");
    // And the node reached this pod's server via the pod IP.
    assert_eq!(
        run.marker(&format!("node-sees-{handler}-ip")),
        Some(ip.as_str()),
        "the node read another IP for {handler}"
    );
    assert_eq!(
        run.marker(&format!("node-fetch-{handler}")),
        Some("ok"),
        "the node could not fetch the {handler} pod's page via {ip}:\n{}",
        run.stdout
    );
    (ip, mac)
}

#[test]
fn cri_pod_network_runc_and_kata() {
    require_kata_artifacts();
    assert!(
        std::path::Path::new(TC).is_file(),
        "no {TC}: apt-get install iproute2 (make deps)"
    );
    for p in ["bridge", "host-local", "loopback"] {
        assert!(
            std::path::Path::new(CNI_DIR).join(p).is_file(),
            "no CNI plugin {CNI_DIR}/{p}: apt-get install containernetworking-plugins (make deps)"
        );
    }
    let CriTools {
        client,
        task_stats: stats,
    } = build_cri_tools();
    let ours = format!("{}:{CNI_DIR}:{TC}:{}", client.display(), stats.display());
    let extra = match std::env::var("KATA_RS_NODE_EXTRA") {
        Ok(x) if !x.is_empty() => format!("{x}:{ours}"),
        _ => ours,
    };
    std::env::set_var("KATA_RS_NODE_EXTRA", extra);
    let run = node_run(
        "cri-net.sh",
        &[
            client.to_str().expect("UTF-8 path"),
            CNI_DIR,
            TC,
            stats.to_str().expect("UTF-8 path"),
        ],
    );
    run.assert_success();
    assert_eq!(run.expect_marker("cri-containerd"), "ok");
    assert_eq!(
        run.expect_marker("pods-up"),
        "ok",
        "both pods did not come up"
    );

    let (runc_ip, _) = check_pod(&run, "runc", "kata");
    let (kata_ip, kata_mac) = check_pod(&run, "kata", "runc");
    assert_ne!(runc_ip, kata_ip);

    // The kata pod really is a VM: its containers run on a kata-rs guest kernel.
    let kata = section_text(&run, "kata");
    let kernel = marker(&kata, "client-kernel").unwrap_or("");
    assert!(
        kernel.ends_with("-kata-rs"),
        "kata pod's kernel {kernel:?} is not a kata-rs guest"
    );
    let ready: u32 = run
        .expect_marker("cri-kata-agent-ready")
        .parse()
        .expect("a count");
    assert!(ready >= 1, "no kata-rs agent became ready");

    // The pod's namespace, seen from the node while both pods ran: one namespace per pod, the
    // kata one with tap0_kata, an ingress qdisc and a u32 redirect filter on eth0 and on the
    // tap, and the guest's eth0 MAC is the MAC CNI gave the pod's veth end.
    assert_eq!(run.expect_marker("netns-running"), "2");
    assert_eq!(run.expect_marker("netns-with-tap"), "1");
    for d in ["eth0", "tap0_kata"] {
        assert_eq!(
            run.expect_marker(&format!("kata-netns-ingress-{d}")),
            "1",
            "no ingress qdisc on {d}"
        );
        assert_eq!(
            run.expect_marker(&format!("kata-netns-filter-{d}")),
            "1",
            "no redirect filter on {d}"
        );
    }
    assert_eq!(
        run.expect_marker("kata-netns-eth0-mac"),
        kata_mac,
        "the guest's eth0 MAC is not the pod interface's"
    );
    // Task.Stats of each of the pod's kata tasks (sandbox, server, client) carries the guest
    // eth0's counters, non-zero both ways after the traffic above.
    let kata_tasks: u32 = run.expect_marker("kata-tasks").parse().expect("a count");
    assert!(
        kata_tasks >= 3,
        "expected the kata pod's 3 tasks:\n{}",
        run.stdout
    );
    assert_eq!(
        run.expect_marker("kata-tasks-eth0-stats"),
        kata_tasks.to_string(),
        "not every kata task's Task.Stats had eth0 counters with traffic:\n{}",
        run.stdout
    );
    assert_eq!(run.expect_marker("net-setup-logged"), "1");
    assert_eq!(run.expect_marker("net-guest-logged"), "1");
    // The kata pod's answers came through the shim's forwarder: it listened for the guest's
    // ports (the pod's server and the loopback one at least), not some other listener.
    let pf: u32 = run
        .expect_marker("pf-listen-logged")
        .parse()
        .expect("a count");
    assert!(
        pf >= 2,
        "the kata shim logged {pf} port-forward listeners, want at least 2"
    );

    // Nothing left: the shim removed tap and filters, CNI the namespaces, no kata-rs process.
    assert_eq!(
        run.expect_marker("net-teardown-logged"),
        "1",
        "the shim did not report removing the tap and tc filters"
    );
    assert_eq!(
        run.expect_marker("netns-left"),
        "0",
        "network namespaces left"
    );
    assert_eq!(run.expect_marker("taps-left"), "0", "taps left");
    assert_eq!(run.expect_marker("cri-containers"), "0");
    assert_eq!(run.expect_marker("cri-tasks"), "0");
    assert_eq!(run.expect_marker("cri-mounts"), "0");
    assert_eq!(
        run.expect_marker("leftovers-rc"),
        "0",
        "kata-rs processes, mounts or sockets left"
    );
}
