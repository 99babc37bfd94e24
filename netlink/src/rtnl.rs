//! rtnetlink queries: links, routes and the attributes both ends read from them.

use std::net::IpAddr;

use futures_util::stream::TryStreamExt;
use rtnetlink::packet_route::{
    link::{LinkAttribute, LinkMessage},
    route::{RouteAddress, RouteAttribute, RouteMessage},
    AddressFamily,
};
use rtnetlink::{Handle, RouteMessageBuilder};

/// Every link of the handle's network namespace.
pub async fn links(h: &Handle) -> Result<Vec<LinkMessage>, rtnetlink::Error> {
    h.link().get().execute().try_collect().await
}

/// The index of the link named `name`, if there is one.
pub async fn link_index(h: &Handle, name: &str) -> Result<Option<u32>, rtnetlink::Error> {
    Ok(links(h)
        .await?
        .iter()
        .find(|l| link_name(l) == Some(name))
        .map(|l| l.header.index))
}

/// A link's interface name.
pub fn link_name(l: &LinkMessage) -> Option<&str> {
    l.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(n) => Some(n.as_str()),
        _ => None,
    })
}

/// A link's hardware address.
pub fn link_mac(l: &LinkMessage) -> Option<&[u8]> {
    l.attributes.iter().find_map(|a| match a {
        LinkAttribute::Address(m) => Some(m.as_slice()),
        _ => None,
    })
}

/// Every route of the handle's network namespace (all tables), IPv4 ones first.
pub async fn routes(h: &Handle) -> Result<Vec<RouteMessage>, rtnetlink::Error> {
    let mut all: Vec<RouteMessage> = h
        .route()
        .get(RouteMessageBuilder::<std::net::Ipv4Addr>::new().build())
        .execute()
        .try_collect()
        .await?;
    let v6: Vec<RouteMessage> = h
        .route()
        .get(RouteMessageBuilder::<std::net::Ipv6Addr>::new().build())
        .execute()
        .try_collect()
        .await?;
    all.extend(v6);
    Ok(all)
}

/// Whether a route is an IPv6 one.
pub fn route_is_v6(m: &RouteMessage) -> bool {
    m.header.address_family == AddressFamily::Inet6
}

/// A route's output interface index.
pub fn route_oif(m: &RouteMessage) -> Option<u32> {
    m.attributes.iter().find_map(|a| match a {
        RouteAttribute::Oif(i) => Some(*i),
        _ => None,
    })
}

/// A route address attribute as an IP address (`None` for other kinds, e.g. MPLS).
pub fn route_ip(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_ip_takes_v4_and_v6_only() {
        let v4: std::net::Ipv4Addr = "10.88.0.1".parse().unwrap();
        let v6: std::net::Ipv6Addr = "fe80::1".parse().unwrap();
        assert_eq!(route_ip(&RouteAddress::Inet(v4)), Some(IpAddr::V4(v4)));
        assert_eq!(route_ip(&RouteAddress::Inet6(v6)), Some(IpAddr::V6(v6)));
        assert_eq!(route_ip(&RouteAddress::Other(vec![1, 2])), None);
    }

    /// Listing needs no privileges: this namespace's loopback exists and its local route
    /// (table local, 127.0.0.0/8 or ::1) goes out through it.
    #[tokio::test(flavor = "current_thread")]
    async fn loopback_is_listed_with_its_routes() {
        let (conn, h, _) = rtnetlink::new_connection().expect("netlink socket");
        tokio::spawn(conn);
        let lo = link_index(&h, "lo")
            .await
            .expect("list links")
            .expect("a link named lo");
        let all = links(&h).await.expect("list links");
        let l = all.iter().find(|l| l.header.index == lo).unwrap();
        assert_eq!(link_mac(l), Some(&[0u8; 6][..]));
        let rs = routes(&h).await.expect("list routes");
        assert!(
            rs.iter().any(|r| route_oif(r) == Some(lo)),
            "a route through lo among {} routes",
            rs.len()
        );
        assert!(rs.iter().any(|r| !route_is_v6(r)), "IPv4 routes are listed");
        assert_eq!(link_index(&h, "no-such-if0").await.unwrap(), None);
    }
}
