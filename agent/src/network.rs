//! Guest network: UpdateInterface, UpdateRoutes and AddARPNeighbors (Kata's names).
//!
//! The shim reads the pod's CNI-configured interface on the host and replays it here.
//! Every field of a request is checked first ([`InterfacePlan::parse`], [`RoutePlan::parse`],
//! [`NeighborPlan::parse`], pure and unit-tested); then the change is made over rtnetlink
//! (`rtnetlink` crate, pure Rust, so the static musl agent needs no `ip` binary).

use std::net::IpAddr;

use futures_util::stream::TryStreamExt;
use kata_rs_netlink::{self as nl, format_mac, link_mac, link_name};
use kata_rs_protocol::agent::{
    ARPNeighbor, IPAddress, IPFamily, Interface, Route, Routes, UpdateInterfaceRequest,
};
use protobuf::EnumOrUnknown;
use rtnetlink::packet_route::{
    address::{AddressAttribute, AddressMessage},
    link::{LinkAttribute, LinkMessage},
    neighbour::{NeighbourFlags, NeighbourState},
    route::{RouteMessage, RouteProtocol, RouteScope, RouteType},
};
use rtnetlink::{Handle, LinkUnspec, RouteMessageBuilder};

use crate::error::{AgentError, Result};

/// Longest interface name (IFNAMSIZ - 1).
const IFNAME_MAX: usize = 15;
/// MTU range accepted (0 in a request = keep the current one).
const MTU_MIN: u64 = 68;
const MTU_MAX: u64 = 65535;
/// Most addresses / routes / neighbours in one request.
const MAX_ITEMS: usize = 256;
/// The main routing table.
const RT_TABLE_MAIN: u8 = 254;

/// Parses a MAC address `aa:bb:cc:dd:ee:ff` ([`nl::parse_mac`]: hex, colon-separated,
/// 6 octets).
pub fn parse_mac(s: &str) -> Result<[u8; 6]> {
    nl::parse_mac(s).ok_or_else(|| {
        AgentError::invalid(format!("bad MAC address {s:?} (want aa:bb:cc:dd:ee:ff)"))
    })
}

/// Checks an interface name: 1..=15 bytes, no `/`, whitespace, `:` or control characters,
/// not `.` or `..`.
pub fn validate_ifname(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= IFNAME_MAX
        && name != "."
        && name != ".."
        && name
            .chars()
            .all(|c| c.is_ascii_graphic() && c != '/' && c != ':');
    if ok {
        Ok(())
    } else {
        Err(AgentError::invalid(format!(
            "bad interface name {name:?} (1..={IFNAME_MAX} printable characters, no '/' or ':')"
        )))
    }
}

fn family_of(f: &EnumOrUnknown<IPFamily>) -> Result<IPFamily> {
    f.enum_value()
        .map_err(|v| AgentError::invalid(format!("unknown IP family {v}")))
}

/// Parses an [`IPAddress`]: the address must match its family, `mask` is the prefix length
/// in decimal (≤ 32 for IPv4, ≤ 128 for IPv6).
pub fn parse_ip(a: &IPAddress) -> Result<(IpAddr, u8)> {
    let ip: IpAddr = a
        .address
        .parse()
        .map_err(|_| AgentError::invalid(format!("bad IP address {:?}", a.address)))?;
    check_family(ip, family_of(&a.family)?)?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let prefix = a
        .mask
        .parse::<u8>()
        .ok()
        .filter(|p| *p <= max && !a.mask.starts_with('+'))
        .ok_or_else(|| {
            AgentError::invalid(format!(
                "bad prefix length {:?} for {ip} (0..={max})",
                a.mask
            ))
        })?;
    Ok((ip, prefix))
}

fn check_family(ip: IpAddr, family: IPFamily) -> Result<()> {
    let ok = match family {
        IPFamily::v4 => ip.is_ipv4(),
        IPFamily::v6 => ip.is_ipv6(),
    };
    if ok {
        Ok(())
    } else {
        Err(AgentError::invalid(format!(
            "address {ip} does not match family {family:?}"
        )))
    }
}

/// A checked UpdateInterface request.
#[derive(Debug, Clone, PartialEq)]
pub struct InterfacePlan {
    /// The interface is found by this MAC.
    pub mac: [u8; 6],
    /// New name (None = keep).
    pub name: Option<String>,
    /// New MTU (None = keep).
    pub mtu: Option<u32>,
    /// The addresses it ends up with (all others removed).
    pub addresses: Vec<(IpAddr, u8)>,
}

impl InterfacePlan {
    /// Checks every field of `iface`.
    pub fn parse(iface: &Interface) -> Result<Self> {
        if iface.hw_addr.is_empty() {
            return Err(AgentError::invalid(
                "UpdateInterface: hw_addr is required (the interface is found by its MAC)",
            ));
        }
        let mac = parse_mac(&iface.hw_addr)?;
        if !nl::is_unicast(&mac) {
            return Err(AgentError::invalid(format!(
                "UpdateInterface: MAC {} is not a unicast address",
                iface.hw_addr
            )));
        }
        let name = if iface.name.is_empty() {
            None
        } else {
            validate_ifname(&iface.name)?;
            Some(iface.name.clone())
        };
        let mtu = match iface.mtu {
            0 => None,
            m if (MTU_MIN..=MTU_MAX).contains(&m) => Some(m as u32),
            m => {
                return Err(AgentError::invalid(format!(
                    "UpdateInterface: MTU {m} out of range ({MTU_MIN}..={MTU_MAX})"
                )))
            }
        };
        if iface.ip_addresses.len() > MAX_ITEMS {
            return Err(AgentError::invalid(format!(
                "UpdateInterface: more than {MAX_ITEMS} addresses"
            )));
        }
        let addresses = iface
            .ip_addresses
            .iter()
            .map(parse_ip)
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            mac,
            name,
            mtu,
            addresses,
        })
    }
}

/// A checked route.
#[derive(Debug, Clone, PartialEq)]
pub struct RoutePlan {
    /// Destination prefix (None = default route).
    pub dest: Option<(IpAddr, u8)>,
    /// Next hop (None = on link).
    pub gateway: Option<IpAddr>,
    /// Output interface name.
    pub device: String,
    /// Preferred source address.
    pub source: Option<IpAddr>,
    /// RT_SCOPE_* value.
    pub scope: u8,
    /// Whether the route is IPv6.
    pub v6: bool,
}

fn parse_prefix(s: &str) -> Result<(IpAddr, u8)> {
    let bad = || AgentError::invalid(format!("bad route destination {s:?} (want ADDR/PREFIX)"));
    let (a, p) = s.split_once('/').ok_or_else(bad)?;
    let ip: IpAddr = a.parse().map_err(|_| bad())?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let p: u8 = p
        .parse()
        .ok()
        .filter(|p| *p <= max && !s.contains('+'))
        .ok_or_else(bad)?;
    Ok((ip, p))
}

impl RoutePlan {
    /// Checks every field of `r`.
    pub fn parse(r: &Route) -> Result<Self> {
        validate_ifname(&r.device)
            .map_err(|e| AgentError::invalid(format!("route {:?}: device: {e}", r.dest)))?;
        let family = family_of(&r.family)?;
        let dest = match r.dest.as_str() {
            "" | "default" => None,
            d => Some(parse_prefix(d)?),
        };
        let ip_opt = |s: &str, what: &str| -> Result<Option<IpAddr>> {
            if s.is_empty() {
                return Ok(None);
            }
            let ip: IpAddr = s.parse().map_err(|_| {
                AgentError::invalid(format!("route {:?}: bad {what} {s:?}", r.dest))
            })?;
            check_family(ip, family)?;
            Ok(Some(ip))
        };
        let gateway = ip_opt(&r.gateway, "gateway")?;
        let source = ip_opt(&r.source, "source")?;
        if let Some((ip, _)) = dest {
            check_family(ip, family)?;
        }
        if dest.is_none() && gateway.is_none() {
            return Err(AgentError::invalid(format!(
                "default route on {} needs a gateway",
                r.device
            )));
        }
        let scope = match r.scope {
            0 | 200 | 253 | 254 => r.scope as u8,
            s => {
                return Err(AgentError::invalid(format!(
                    "route {:?}: scope {s} is not one of 0 (universe), 200 (site), 253 (link), 254 (host)",
                    r.dest
                )))
            }
        };
        Ok(Self {
            dest,
            gateway,
            device: r.device.clone(),
            source,
            scope,
            v6: family == IPFamily::v6,
        })
    }
}

/// A checked neighbour entry.
#[derive(Debug, Clone, PartialEq)]
pub struct NeighborPlan {
    /// The neighbour's IP.
    pub ip: IpAddr,
    /// Its MAC.
    pub mac: [u8; 6],
    /// Interface name.
    pub device: String,
    /// NUD_* state.
    pub state: u16,
}

/// NUD_* values a request may name (0 = PERMANENT).
const NUD_VALID: [i32; 8] = [0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80];

impl NeighborPlan {
    /// Checks every field of `n`.
    pub fn parse(n: &ARPNeighbor) -> Result<Self> {
        let to = n
            .to_ip_address
            .as_ref()
            .ok_or_else(|| AgentError::invalid("ARP neighbor without to_ip_address"))?;
        let ip: IpAddr = to
            .address
            .parse()
            .map_err(|_| AgentError::invalid(format!("bad neighbor IP {:?}", to.address)))?;
        check_family(ip, family_of(&to.family)?)?;
        validate_ifname(&n.device)?;
        let mac = parse_mac(&n.lladdr)?;
        let state = match n.state {
            0 => 0x80,
            s if NUD_VALID.contains(&s) => s as u16,
            s => {
                return Err(AgentError::invalid(format!(
                    "neighbor {ip}: bad NUD state {s:#x}"
                )))
            }
        };
        Ok(Self {
            ip,
            mac,
            device: n.device.clone(),
            state,
        })
    }
}

/// Parses all routes of a request.
pub fn parse_routes(routes: &Routes) -> Result<Vec<RoutePlan>> {
    if routes.routes.len() > MAX_ITEMS {
        return Err(AgentError::invalid(format!(
            "UpdateRoutes: more than {MAX_ITEMS} routes"
        )));
    }
    routes.routes.iter().map(RoutePlan::parse).collect()
}

/// Parses all neighbours of a request.
pub fn parse_neighbors(n: &[ARPNeighbor]) -> Result<Vec<NeighborPlan>> {
    if n.len() > MAX_ITEMS {
        return Err(AgentError::invalid(format!(
            "AddARPNeighbors: more than {MAX_ITEMS} entries"
        )));
    }
    n.iter().map(NeighborPlan::parse).collect()
}

fn nl_err(what: impl std::fmt::Display) -> impl FnOnce(rtnetlink::Error) -> AgentError {
    move |e| AgentError::internal(format!("{what}: {e}"))
}

/// Opens an rtnetlink connection; its driver runs on the tokio runtime.
fn connect() -> Result<Handle> {
    let (conn, handle, _) =
        rtnetlink::new_connection().map_err(|e| AgentError::internal(format!("netlink: {e}")))?;
    tokio::spawn(conn);
    Ok(handle)
}

/// Refuses to change the network unless the agent is the guest's init: in development mode
/// (on a host) the host's network must never be touched.
fn require_guest(rpc: &str) -> Result<()> {
    if std::process::id() != 1 {
        return Err(AgentError::precondition(format!(
            "{rpc}: the agent is not the guest's init (PID 1); the network is left alone"
        )));
    }
    Ok(())
}

async fn links(h: &Handle) -> Result<Vec<LinkMessage>> {
    nl::links(h).await.map_err(nl_err("list links"))
}

async fn index_of(h: &Handle, name: &str) -> Result<u32> {
    nl::link_index(h, name)
        .await
        .map_err(nl_err("list links"))?
        .ok_or_else(|| AgentError::not_found(format!("no guest interface named {name}")))
}

/// UpdateInterface: finds the interface by MAC, renames it, sets the MTU, replaces its
/// addresses and sets it up. Returns the interface as it now is.
pub async fn update_interface(req: &UpdateInterfaceRequest) -> Result<Interface> {
    let iface = req
        .interface
        .as_ref()
        .ok_or_else(|| AgentError::invalid("UpdateInterface: no interface"))?;
    let plan = InterfacePlan::parse(iface)?;
    require_guest("UpdateInterface")?;
    let h = connect()?;
    let all = links(&h).await?;
    let link = all
        .iter()
        .find(|l| link_mac(l) == Some(&plan.mac[..]))
        .ok_or_else(|| {
            AgentError::not_found(format!(
                "UpdateInterface: no guest interface with MAC {}",
                iface.hw_addr
            ))
        })?;
    let index = link.header.index;
    let cur_name = link_name(link).unwrap_or_default().to_string();
    let what = format!("interface {cur_name} ({})", iface.hw_addr);

    // Renaming needs the link down.
    h.link()
        .set(LinkUnspec::new_with_index(index).down().build())
        .execute()
        .await
        .map_err(nl_err(format!("{what}: set down")))?;
    let mut m = LinkUnspec::new_with_index(index);
    if let Some(n) = &plan.name {
        if *n != cur_name {
            m = m.name(n.clone());
        }
    }
    if let Some(mtu) = plan.mtu {
        m = m.mtu(mtu);
    }
    h.link()
        .set(m.build())
        .execute()
        .await
        .map_err(nl_err(format!("{what}: set name/MTU")))?;

    // Exactly the requested addresses.
    let old: Vec<AddressMessage> = h
        .address()
        .get()
        .set_link_index_filter(index)
        .execute()
        .try_collect()
        .await
        .map_err(nl_err(format!("{what}: list addresses")))?;
    for a in old {
        h.address()
            .del(a)
            .execute()
            .await
            .map_err(nl_err(format!("{what}: delete address")))?;
    }
    for (ip, prefix) in &plan.addresses {
        h.address()
            .add(index, *ip, *prefix)
            .replace()
            .execute()
            .await
            .map_err(nl_err(format!("{what}: add address {ip}/{prefix}")))?;
    }
    h.link()
        .set(LinkUnspec::new_with_index(index).up().build())
        .execute()
        .await
        .map_err(nl_err(format!("{what}: set up")))?;
    tracing::info!(index, name = ?plan.name, mtu = ?plan.mtu, addresses = ?plan.addresses, "interface updated");
    current_interface(&h, index).await
}

async fn current_interface(h: &Handle, index: u32) -> Result<Interface> {
    let all = links(h).await?;
    let l = all
        .iter()
        .find(|l| l.header.index == index)
        .ok_or_else(|| AgentError::internal(format!("interface {index} vanished")))?;
    let mut out = Interface::new();
    out.name = link_name(l).unwrap_or_default().to_string();
    out.device = out.name.clone();
    out.hw_addr = link_mac(l).map(format_mac).unwrap_or_default();
    out.mtu = l
        .attributes
        .iter()
        .find_map(|a| match a {
            LinkAttribute::Mtu(m) => Some(u64::from(*m)),
            _ => None,
        })
        .unwrap_or(0);
    let addrs: Vec<AddressMessage> = h
        .address()
        .get()
        .set_link_index_filter(index)
        .execute()
        .try_collect()
        .await
        .map_err(nl_err("list addresses"))?;
    for a in addrs {
        let ip = a.attributes.iter().find_map(|x| match x {
            AddressAttribute::Address(ip) => Some(*ip),
            _ => None,
        });
        if let Some(ip) = ip {
            let mut o = IPAddress::new();
            o.family = if ip.is_ipv4() {
                IPFamily::v4
            } else {
                IPFamily::v6
            }
            .into();
            o.address = ip.to_string();
            o.mask = a.header.prefix_len.to_string();
            out.ip_addresses.push(o);
        }
    }
    Ok(out)
}

fn route_message(r: &RoutePlan, oif: u32) -> Result<RouteMessage> {
    let mut b = RouteMessageBuilder::<IpAddr>::new();
    fn bad(e: impl std::fmt::Display) -> AgentError {
        AgentError::invalid(format!("route: {e}"))
    }
    b = match r.dest {
        Some((ip, p)) => b.destination_prefix(ip, p).map_err(bad)?,
        None => {
            let any: IpAddr = if r.v6 {
                std::net::Ipv6Addr::UNSPECIFIED.into()
            } else {
                std::net::Ipv4Addr::UNSPECIFIED.into()
            };
            b.destination_prefix(any, 0).map_err(bad)?
        }
    };
    if let Some(g) = r.gateway {
        b = b.gateway(g).map_err(bad)?;
    }
    if let Some(s) = r.source {
        b = b.pref_source(s).map_err(bad)?;
    }
    Ok(b.output_interface(oif)
        .scope(RouteScope::from(r.scope))
        .protocol(RouteProtocol::Static)
        .kind(RouteType::Unicast)
        .table_id(u32::from(RT_TABLE_MAIN))
        .build())
}

/// UpdateRoutes: removes the non-kernel main-table routes of every device the request names,
/// then adds the requested routes (on-link ones first, so that gateways are reachable).
pub async fn update_routes(routes: &Routes) -> Result<Routes> {
    let plans = parse_routes(routes)?;
    require_guest("UpdateRoutes")?;
    let h = connect()?;
    let mut devices = std::collections::HashMap::new();
    for r in &plans {
        if !devices.contains_key(&r.device) {
            devices.insert(r.device.clone(), index_of(&h, &r.device).await?);
        }
    }
    for m in nl::routes(&h).await.map_err(nl_err("list routes"))? {
        let ours = nl::route_oif(&m).is_some_and(|i| devices.values().any(|d| *d == i));
        if ours && m.header.table == RT_TABLE_MAIN && m.header.protocol != RouteProtocol::Kernel {
            h.route()
                .del(m)
                .execute()
                .await
                .map_err(nl_err("delete route"))?;
        }
    }
    let mut ordered: Vec<&RoutePlan> = plans.iter().filter(|r| r.gateway.is_none()).collect();
    ordered.extend(plans.iter().filter(|r| r.gateway.is_some()));
    for r in ordered {
        let oif = devices[&r.device];
        let msg = route_message(r, oif)?;
        h.route()
            .add(msg)
            .replace()
            .execute()
            .await
            .map_err(nl_err(format!(
                "add route {} via {:?} dev {}",
                r.dest
                    .map(|(ip, p)| format!("{ip}/{p}"))
                    .unwrap_or_else(|| "default".into()),
                r.gateway,
                r.device
            )))?;
    }
    tracing::info!(count = plans.len(), "routes updated");
    Ok(routes.clone())
}

/// AddARPNeighbors: adds (or replaces) each static neighbour entry.
pub async fn add_neighbors(n: &[ARPNeighbor]) -> Result<()> {
    let plans = parse_neighbors(n)?;
    require_guest("AddARPNeighbors")?;
    if plans.is_empty() {
        return Ok(());
    }
    let h = connect()?;
    for p in plans {
        let index = index_of(&h, &p.device).await?;
        h.neighbours()
            .add(index, p.ip)
            .link_layer_address(&p.mac)
            .state(NeighbourState::from(p.state))
            .flags(NeighbourFlags::empty())
            .replace()
            .execute()
            .await
            .map_err(nl_err(format!("add neighbor {} dev {}", p.ip, p.device)))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
