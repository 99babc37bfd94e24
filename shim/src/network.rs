//! Pod networking, Kata's "tcfilter" model.
//!
//! When the sandbox's OCI spec names a network namespace by path (CRI: the CNI netns), the
//! shim, before booting the VM, enters that namespace in a dedicated thread and
//! - reads the CNI-configured interface `eth0`: MAC, MTU, addresses, routes, static
//!   neighbours;
//! - creates a persistent tap [`TAP_NAME`] there (same MTU, up);
//! - adds an ingress qdisc to both and a u32 match-all filter with `mirred egress redirect`
//!   each way (eth0 → tap, tap → eth0), so the guest's frames leave through the veth and
//!   everything arriving on the veth goes to the guest.
//!
//! The VMM is started inside that namespace and attaches to the tap by name
//! (`--net tap=tap0_kata,mac=<eth0's MAC>`), so the guest's NIC has the pod's MAC. After the
//! agent answers, UpdateInterface/UpdateRoutes/AddARPNeighbors give the guest's `eth0` the
//! pod's addresses, MTU and routes. [`PodNetwork::teardown`] removes the tap and the qdiscs
//! (with their filters) again; a namespace that is already gone needs nothing.

use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures_util::stream::TryStreamExt;
use kata_rs_netlink::{self as netlink, format_mac, link_name};
use kata_rs_protocol::agent as pb;
use oci_spec::runtime::{LinuxNamespaceType, Spec};
use rtnetlink::packet_route::{
    address::AddressAttribute,
    link::{LinkAttribute, LinkMessage},
    neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourState},
    route::{RouteAttribute, RouteMessage, RouteProtocol},
    tc::TcHandle,
};
use rtnetlink::{Handle, LinkUnspec};

/// The pod's interface CNI configures (CRI always asks for `eth0`).
pub const POD_IFACE: &str = "eth0";
/// The tap the VM's NIC is attached to, in the pod's network namespace (Kata's name).
pub const TAP_NAME: &str = "tap0_kata";
/// Longest a step in the namespace may take.
const NETNS_TIMEOUT: Duration = Duration::from_secs(20);
/// The main routing table.
const RT_TABLE_MAIN: u8 = 254;
/// ETH_P_ALL, the protocol of the redirect filters.
const ETH_P_ALL: u16 = 0x0003;

/// The network namespace path of the spec (`linux.namespaces[type=network].path`), if any.
pub fn netns_path(spec: &Spec) -> Option<PathBuf> {
    spec.linux()
        .as_ref()?
        .namespaces()
        .as_ref()?
        .iter()
        .find(|n| n.typ() == LinuxNamespaceType::Network)
        .and_then(|n| n.path().clone())
        .filter(|p| !p.as_os_str().is_empty())
}

/// A route of the pod's interface as read in its namespace.
#[derive(Debug, Clone, PartialEq)]
pub struct PodRoute {
    /// Destination prefix (None = default).
    pub dest: Option<(IpAddr, u8)>,
    /// Next hop.
    pub gateway: Option<IpAddr>,
    /// Preferred source.
    pub source: Option<IpAddr>,
    /// RT_SCOPE_*.
    pub scope: u8,
    /// IPv6.
    pub v6: bool,
}

/// A static neighbour entry of the pod's interface.
#[derive(Debug, Clone, PartialEq)]
pub struct PodNeighbor {
    /// IP address.
    pub ip: IpAddr,
    /// MAC.
    pub mac: [u8; 6],
}

/// The pod's network as the shim set it up: what the guest gets, and what to remove.
#[derive(Debug, Clone, PartialEq)]
pub struct PodNetwork {
    /// The pod's network namespace.
    pub netns: PathBuf,
    /// The tap in it.
    pub tap: String,
    /// The pod interface's name (`eth0`).
    pub name: String,
    /// Its MAC (the guest NIC's MAC).
    pub mac: [u8; 6],
    /// Its MTU.
    pub mtu: u32,
    /// Its addresses (IPv6 link-local ones left out: the guest makes its own).
    pub addresses: Vec<(IpAddr, u8)>,
    /// Its routes (main table).
    pub routes: Vec<PodRoute>,
    /// Its permanent neighbour entries.
    pub neighbors: Vec<PodNeighbor>,
}

fn family(ip: &IpAddr) -> pb::IPFamily {
    if ip.is_ipv4() {
        pb::IPFamily::v4
    } else {
        pb::IPFamily::v6
    }
}

fn pb_ip(ip: IpAddr, prefix: Option<u8>) -> pb::IPAddress {
    pb::IPAddress {
        family: family(&ip).into(),
        address: ip.to_string(),
        mask: prefix.map(|p| p.to_string()).unwrap_or_default(),
        ..Default::default()
    }
}

impl PodNetwork {
    /// The `kata-vmm --net` value: the tap and the pod's MAC.
    pub fn vmm_net_arg(&self) -> String {
        format!("tap={},mac={}", self.tap, format_mac(&self.mac))
    }

    /// The UpdateInterface request's interface.
    pub fn interface(&self) -> pb::Interface {
        pb::Interface {
            device: self.name.clone(),
            name: self.name.clone(),
            ip_addresses: self
                .addresses
                .iter()
                .map(|(ip, p)| pb_ip(*ip, Some(*p)))
                .collect(),
            mtu: u64::from(self.mtu),
            hw_addr: format_mac(&self.mac),
            ..Default::default()
        }
    }

    /// The UpdateRoutes request's routes.
    pub fn pb_routes(&self) -> Vec<pb::Route> {
        self.routes
            .iter()
            .map(|r| pb::Route {
                dest: r
                    .dest
                    .map(|(ip, p)| format!("{ip}/{p}"))
                    .unwrap_or_default(),
                gateway: r.gateway.map(|g| g.to_string()).unwrap_or_default(),
                device: self.name.clone(),
                source: r.source.map(|s| s.to_string()).unwrap_or_default(),
                scope: u32::from(r.scope),
                family: if r.v6 {
                    pb::IPFamily::v6
                } else {
                    pb::IPFamily::v4
                }
                .into(),
                ..Default::default()
            })
            .collect()
    }

    /// The AddARPNeighbors request's entries.
    pub fn pb_neighbors(&self) -> Vec<pb::ARPNeighbor> {
        self.neighbors
            .iter()
            .map(|n| pb::ARPNeighbor {
                to_ip_address: Some(pb_ip(n.ip, None)).into(),
                device: self.name.clone(),
                lladdr: format_mac(&n.mac),
                ..Default::default()
            })
            .collect()
    }

    /// Reads the pod's interface in `netns`, creates the tap and the redirects. On failure
    /// whatever was made is removed again.
    pub async fn setup(netns: &Path) -> Result<PodNetwork, String> {
        let ns = netns.to_path_buf();
        let net = in_netns(netns, move || async move {
            let h = connect()?;
            let iface = match read_iface(&h, &ns).await {
                Ok(i) => i,
                Err(e) => return Err(e),
            };
            if let Err(e) = make_tap(&h, &iface).await {
                let _ = remove(&h).await;
                return Err(e);
            }
            Ok(iface)
        })
        .await?;
        tracing::info!(
            netns = %net.netns.display(),
            mac = %format_mac(&net.mac),
            mtu = net.mtu,
            addresses = ?net.addresses,
            routes = net.routes.len(),
            "pod network: {} <-> {} (tc mirred redirect)",
            net.name,
            net.tap
        );
        Ok(net)
    }

    /// Removes the tap and both ingress qdiscs (their filters go with them). A namespace
    /// that no longer exists has nothing left to remove.
    pub async fn teardown(&self) -> Result<(), String> {
        if !self.netns.exists() {
            return Ok(());
        }
        remove_from(&self.netns).await?;
        tracing::info!(netns = %self.netns.display(), "pod network: tap {} and tc filters removed", self.tap);
        Ok(())
    }

    /// Gives the guest the pod's interface, routes and neighbours.
    pub async fn configure_guest(&self, agent: &crate::agent::Agent) -> Result<(), String> {
        let got = agent
            .update_interface(self.interface())
            .await
            .map_err(|e| format!("pod network: {e}"))?;
        agent
            .update_routes(self.pb_routes())
            .await
            .map_err(|e| format!("pod network: {e}"))?;
        if !self.neighbors.is_empty() {
            agent
                .add_arp_neighbors(self.pb_neighbors())
                .await
                .map_err(|e| format!("pod network: {e}"))?;
        }
        tracing::info!(
            "pod network: guest {} {} mtu {} addresses {:?}, {} routes",
            crate::util::sanitize(&got.name, 32),
            crate::util::sanitize(&got.hw_addr, 32),
            got.mtu,
            got.ip_addresses
                .iter()
                .map(|a| format!(
                    "{}/{}",
                    crate::util::sanitize(&a.address, 64),
                    crate::util::sanitize(&a.mask, 8)
                ))
                .collect::<Vec<_>>(),
            self.routes.len()
        );
        Ok(())
    }
}

/// Runs `f` on a fresh thread that has joined the network namespace `netns` (the thread
/// ends afterwards, so no other work ever runs in that namespace), with a current-thread
/// tokio runtime, and waits for it at most [`NETNS_TIMEOUT`].
pub(crate) async fn in_netns<F, Fut, T>(netns: &Path, f: F) -> Result<T, String>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<T, String>>,
    T: Send + 'static,
{
    let file = std::fs::File::open(netns)
        .map_err(|e| format!("pod network namespace {}: {e}", netns.display()))?;
    let shown = netns.display().to_string();
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("kata-netns".into())
        .spawn(move || {
            // SAFETY: setns only reads the fd, which `file` keeps open for the call; it
            // changes the network namespace of this thread alone, which is dedicated to
            // this job and ends with it.
            let r = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            let out = if r != 0 {
                Err(format!(
                    "cannot enter network namespace {shown}: {}",
                    std::io::Error::last_os_error()
                ))
            } else {
                match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt.block_on(f()),
                    Err(e) => Err(format!("runtime: {e}")),
                }
            };
            let _ = tx.send(out);
        })
        .map_err(|e| format!("cannot start the network namespace thread: {e}"))?;
    match tokio::time::timeout(NETNS_TIMEOUT, rx).await {
        Ok(Ok(r)) => r,
        Ok(Err(_)) => Err(format!(
            "network namespace {}: worker failed",
            netns.display()
        )),
        Err(_) => Err(format!(
            "network namespace {}: no answer within {}s",
            netns.display(),
            NETNS_TIMEOUT.as_secs()
        )),
    }
}

fn connect() -> Result<Handle, String> {
    let (conn, handle, _) = rtnetlink::new_connection().map_err(|e| format!("netlink: {e}"))?;
    tokio::spawn(conn);
    Ok(handle)
}

fn nl(what: impl std::fmt::Display) -> impl FnOnce(rtnetlink::Error) -> String {
    move |e| format!("{what}: {e}")
}

async fn links(h: &Handle) -> Result<Vec<LinkMessage>, String> {
    netlink::links(h).await.map_err(nl("list interfaces"))
}

async fn find_link(h: &Handle, name: &str) -> Result<Option<u32>, String> {
    netlink::link_index(h, name)
        .await
        .map_err(nl("list interfaces"))
}

/// Whether a route of the pod interface is passed to the guest: main table, and for IPv6
/// not the kernel's own link-local/multicast/prefix routes (the guest makes those).
fn keep_route(m: &RouteMessage, v6: bool) -> bool {
    m.header.table == RT_TABLE_MAIN && !(v6 && m.header.protocol == RouteProtocol::Kernel)
}

async fn read_iface(h: &Handle, netns: &Path) -> Result<PodNetwork, String> {
    let all = links(h).await?;
    let link = all
        .iter()
        .find(|l| link_name(l) == Some(POD_IFACE))
        .ok_or_else(|| {
            let names: Vec<&str> = all.iter().filter_map(link_name).collect();
            format!(
                "pod network namespace {} has no interface {POD_IFACE} (it has: {}); did CNI set it up?",
                netns.display(),
                names.join(", ")
            )
        })?;
    if all.iter().any(|l| link_name(l) == Some(TAP_NAME)) {
        return Err(format!(
            "pod network namespace {} already has an interface {TAP_NAME}",
            netns.display()
        ));
    }
    let index = link.header.index;
    let mut mac = [0u8; 6];
    let mut mtu = 1500;
    for a in &link.attributes {
        match a {
            LinkAttribute::Address(m) if m.len() == 6 => mac.copy_from_slice(m),
            LinkAttribute::Mtu(m) => mtu = *m,
            _ => {}
        }
    }
    if mac == [0; 6] {
        return Err(format!(
            "{POD_IFACE} in {} has no Ethernet address",
            netns.display()
        ));
    }
    let addrs: Vec<_> = h
        .address()
        .get()
        .set_link_index_filter(index)
        .execute()
        .try_collect()
        .await
        .map_err(nl("list addresses"))?;
    let mut addresses = Vec::new();
    for a in addrs {
        for x in &a.attributes {
            if let AddressAttribute::Address(ip) = x {
                let link_local =
                    matches!(ip, IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) == 0xfe80);
                if !link_local && !addresses.contains(&(*ip, a.header.prefix_len)) {
                    addresses.push((*ip, a.header.prefix_len));
                }
            }
        }
    }
    if addresses.is_empty() {
        return Err(format!(
            "{POD_IFACE} in {} has no IP address; did CNI set it up?",
            netns.display()
        ));
    }
    let mut routes = Vec::new();
    for m in netlink::routes(h).await.map_err(nl("list routes"))? {
        let v6 = netlink::route_is_v6(&m);
        let mut dest = None;
        let mut gateway = None;
        let mut source = None;
        for a in &m.attributes {
            match a {
                RouteAttribute::Destination(d) => dest = netlink::route_ip(d),
                RouteAttribute::Gateway(g) => gateway = netlink::route_ip(g),
                RouteAttribute::PrefSource(s) => source = netlink::route_ip(s),
                _ => {}
            }
        }
        if netlink::route_oif(&m) != Some(index) || !keep_route(&m, v6) {
            continue;
        }
        let dest = dest.map(|d| (d, m.header.destination_prefix_length));
        if dest.is_none() && gateway.is_none() {
            continue;
        }
        routes.push(PodRoute {
            dest: dest.filter(|(_, p)| *p > 0),
            gateway,
            source,
            scope: u8::from(m.header.scope),
            v6,
        });
    }
    let neigh: Vec<_> = h
        .neighbours()
        .get()
        .execute()
        .try_collect()
        .await
        .map_err(nl("list neighbours"))?;
    let mut neighbors = Vec::new();
    for n in neigh {
        if n.header.ifindex != index || n.header.state != NeighbourState::Permanent {
            continue;
        }
        let mut ip = None;
        let mut mac = None;
        for a in &n.attributes {
            match a {
                NeighbourAttribute::Destination(NeighbourAddress::Inet(v4)) => {
                    ip = Some(IpAddr::V4(*v4))
                }
                NeighbourAttribute::Destination(NeighbourAddress::Inet6(v6)) => {
                    ip = Some(IpAddr::V6(*v6))
                }
                NeighbourAttribute::LinkLayerAddress(l) if l.len() == 6 => {
                    let mut m = [0u8; 6];
                    m.copy_from_slice(l);
                    mac = Some(m);
                }
                _ => {}
            }
        }
        if let (Some(ip), Some(mac)) = (ip, mac) {
            neighbors.push(PodNeighbor { ip, mac });
        }
    }
    Ok(PodNetwork {
        netns: netns.to_path_buf(),
        tap: TAP_NAME.to_string(),
        name: POD_IFACE.to_string(),
        mac,
        mtu,
        addresses,
        routes,
        neighbors,
    })
}

/// Creates the persistent tap `name` in the calling thread's network namespace.
fn create_tap(name: &str) -> Result<(), String> {
    let file = netlink::tap::open_tap(name, false)?;
    netlink::tap::set_persist(&file, name)
}

async fn make_tap(h: &Handle, net: &PodNetwork) -> Result<(), String> {
    let veth = find_link(h, &net.name)
        .await?
        .ok_or_else(|| format!("{} vanished", net.name))?;
    create_tap(&net.tap)?;
    let tap = find_link(h, &net.tap)
        .await?
        .ok_or_else(|| format!("tap {} not found after creating it", net.tap))?;
    h.link()
        .set(LinkUnspec::new_with_index(tap).mtu(net.mtu).up().build())
        .execute()
        .await
        .map_err(nl(format!("tap {}: set MTU {} and up", net.tap, net.mtu)))?;
    for (from, to, what) in [
        (veth, tap, format!("{} -> {}", net.name, net.tap)),
        (tap, veth, format!("{} -> {}", net.tap, net.name)),
    ] {
        h.qdisc()
            .add(from as i32)
            .ingress()
            .execute()
            .await
            .map_err(nl(format!("ingress qdisc for {what}")))?;
        h.traffic_filter(from as i32)
            .add()
            .parent(u32::from(TcHandle {
                major: 0xffff,
                minor: 0,
            }))
            .priority(49152)
            .protocol(ETH_P_ALL.to_be())
            .redirect(to)
            .map_err(|e| format!("redirect filter {what}: {e}"))?
            .execute()
            .await
            .map_err(nl(format!("redirect filter {what}")))?;
    }
    Ok(())
}

/// Removes what pod networking made in `netns` (the tap and the ingress qdiscs with their
/// filters); missing pieces are fine. [`PodNetwork::teardown`] uses it, and so does the
/// cleanup of a sandbox whose shim is gone, which only has the namespace's path.
pub async fn remove_from(netns: &Path) -> Result<(), String> {
    in_netns(netns, || async {
        let h = connect()?;
        remove(&h).await
    })
    .await
}

/// Removes the tap (its qdisc and filter go with it) and eth0's ingress qdisc (with its
/// filter). Missing pieces are fine.
async fn remove(h: &Handle) -> Result<(), String> {
    let mut errs = Vec::new();
    if let Some(tap) = find_link(h, TAP_NAME).await? {
        if let Err(e) = h.link().del(tap).execute().await {
            errs.push(format!("delete tap {TAP_NAME}: {e}"));
        }
    }
    if let Some(veth) = find_link(h, POD_IFACE).await? {
        let qdiscs: Vec<_> = h
            .qdisc()
            .get()
            .index(veth as i32)
            .ingress()
            .execute()
            .try_collect()
            .await
            .map_err(nl("list qdiscs"))?;
        for q in qdiscs {
            if q.header.index != veth as i32 || q.header.parent != TcHandle::INGRESS {
                continue;
            }
            let mut del = h.qdisc().del(veth as i32);
            del.message_mut().header = q.header.clone();
            if let Err(e) = del.execute().await {
                errs.push(format!("delete {POD_IFACE}'s ingress qdisc: {e}"));
            }
        }
    }
    if errs.is_empty() {
        Ok(())
    } else {
        Err(errs.join("; "))
    }
}

#[cfg(test)]
mod tests;
