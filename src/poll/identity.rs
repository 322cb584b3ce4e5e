//! Who is polling: the client address (believing X-Forwarded-For only from
//! trusted proxies) and the client id the limits count against.

use std::net::IpAddr;

use http::HeaderMap;
use ipnet::IpNet;

use crate::defaults::CLIENT_ID_MAX;

/// Where a poll's client id comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientIdSource {
    /// The client address (after `trusted_proxies`), ignoring any header.
    Addr,
    /// This header when present, else the client address.
    Header(http::HeaderName),
}

/// A client id header that is too long or has odd characters.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid client id header: 1 to {CLIENT_ID_MAX} visible ASCII characters")]
pub struct BadClientId;

/// The client's address: the socket peer, or, when the peer is a trusted
/// proxy, the right-most X-Forwarded-For hop that is not itself trusted.
pub fn client_addr(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let hops = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect::<Vec<_>>();
    let mut client = peer;
    for hop in hops.iter().rev() {
        // A hop we cannot parse was written by someone we cannot vouch for:
        // the last trusted hop is as far as we believe.
        let Ok(ip) = hop.parse::<IpAddr>() else { break };
        client = ip;
        if !is_trusted(&ip) {
            break;
        }
    }
    client
}

/// The address `limits.max_per_address` counts against: an IPv4 address,
/// or an IPv6 address's /64 (one host, or one home or office network, is
/// given a /64 and can pick any address in it).
pub fn address_key(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V4(_) => addr,
        IpAddr::V6(v6) => {
            let mut bits = v6.to_bits();
            bits &= !0u128 << 64;
            IpAddr::V6(std::net::Ipv6Addr::from_bits(bits))
        }
    }
}

/// The id limits and the authorization cache count against.
///
/// # Errors
/// [`BadClientId`] when the configured header is present but malformed.
pub fn client_id(
    source: &ClientIdSource,
    headers: &HeaderMap,
    addr: IpAddr,
) -> Result<String, BadClientId> {
    match source {
        ClientIdSource::Addr => Ok(addr.to_string()),
        ClientIdSource::Header(name) => match headers.get(name) {
            None => Ok(addr.to_string()),
            Some(v) => {
                let bytes = v.as_bytes();
                let ok = !bytes.is_empty()
                    && bytes.len() <= CLIENT_ID_MAX
                    && bytes.iter().all(|b| b.is_ascii_graphic());
                if !ok {
                    return Err(BadClientId);
                }
                // Prefixed so a header can never collide with an address.
                Ok(format!("id:{}", String::from_utf8_lossy(bytes)))
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn xff(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_str(v).unwrap());
        h
    }

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|n| n.parse().unwrap()).collect()
    }

    #[test]
    fn xff_is_ignored_from_untrusted_peers() {
        let peer: IpAddr = "198.51.100.1".parse().unwrap();
        assert_eq!(
            client_addr(peer, &xff("1.2.3.4"), &nets(&["10.0.0.0/8"])),
            peer
        );
        assert_eq!(client_addr(peer, &xff("1.2.3.4"), &[]), peer);
    }

    #[test]
    fn the_rightmost_untrusted_hop_is_the_client() {
        let trusted = nets(&["10.0.0.0/8", "127.0.0.1/32"]);
        let peer: IpAddr = "127.0.0.1".parse().unwrap();
        // A client can forge the left part; only hops our proxies appended count.
        let h = xff("6.6.6.6, 203.0.113.5, 10.1.2.3");
        assert_eq!(
            client_addr(peer, &h, &trusted),
            "203.0.113.5".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            client_addr(peer, &xff("10.0.0.1, 10.0.0.2"), &trusted),
            "10.0.0.1".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            client_addr(peer, &xff("garbage, 10.0.0.2"), &trusted),
            "10.0.0.2".parse::<IpAddr>().unwrap()
        );
        assert_eq!(client_addr(peer, &HeaderMap::new(), &trusted), peer);
    }

    #[test]
    fn an_ipv6_host_is_one_address_for_the_limit_whatever_its_64_bits_say() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(address_key(a), address_key(b));
        assert_ne!(address_key(a), address_key(other));
        let v4: IpAddr = "192.0.2.7".parse().unwrap();
        assert_eq!(address_key(v4), v4);
    }

    #[test]
    fn client_ids_come_from_the_header_or_the_address() {
        let addr: IpAddr = "192.0.2.1".parse().unwrap();
        let header = ClientIdSource::Header(http::HeaderName::from_static("x-client-id"));
        let mut h = HeaderMap::new();
        assert_eq!(client_id(&header, &h, addr).unwrap(), "192.0.2.1");
        h.insert("x-client-id", HeaderValue::from_static("tab-42"));
        assert_eq!(client_id(&header, &h, addr).unwrap(), "id:tab-42");
        assert_eq!(
            client_id(&ClientIdSource::Addr, &h, addr).unwrap(),
            "192.0.2.1"
        );
        h.insert("x-client-id", HeaderValue::from_static("has space"));
        assert_eq!(client_id(&header, &h, addr), Err(BadClientId));
        h.insert(
            "x-client-id",
            HeaderValue::from_str(&"x".repeat(129)).unwrap(),
        );
        assert_eq!(client_id(&header, &h, addr), Err(BadClientId));
    }
}
