//! Who the client is, from a hop that may have been told by an ingress in front of it
//! (docs/security.md, "X-Forwarded-For from the proxy").
//!
//! `X-Forwarded-For` is read right to left, because only the entries appended by hops
//! we trust can be believed: the walk starts at the TCP peer, steps left while the
//! current hop is trusted, and stops at the first hop that is not trusted (that hop is
//! the client) or at the first entry that does not parse (then the last address we
//! could name, a trusted hop, is the client: it passed on something unusable).

use std::net::IpAddr;
use std::str::FromStr;

/// An address range in CIDR notation (a bare address is a /32 or /128).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

impl IpNet {
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.prefix)).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.prefix)).unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for IpNet {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p.parse::<u8>().map_err(|e| format!("{s:?}: {e}"))?)),
            None => (s, None),
        };
        let addr: IpAddr = addr.parse().map_err(|e| format!("{s:?}: {e}"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = prefix.unwrap_or(max);
        if prefix > max {
            return Err(format!("{s:?}: prefix /{prefix} is too long"));
        }
        Ok(IpNet { addr: canonical(addr), prefix })
    }
}

/// Parses a comma-separated list of CIDR ranges; empty means none.
pub fn parse_nets(list: &str) -> Result<Vec<IpNet>, String> {
    list.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::parse).collect()
}

/// IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`) are treated as the IPv4 address.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

/// The client's address, seen from a hop whose TCP peer is `peer` and which received
/// the `X-Forwarded-For` header values `forwarded` (in order). Only entries that a
/// `trusted` hop appended are believed.
pub fn client_address<'a>(peer: IpAddr, forwarded: impl IntoIterator<Item = &'a str>, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|net| net.contains(ip));
    let mut client = canonical(peer);
    if !is_trusted(client) {
        return client;
    }
    let entries: Vec<&str> = forwarded.into_iter().flat_map(|v| v.split(',')).collect();
    for entry in entries.into_iter().rev() {
        match entry.trim().parse::<IpAddr>() {
            Ok(ip) => client = canonical(ip),
            Err(_) => return client,
        }
        if !is_trusted(client) {
            return client;
        }
    }
    client
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn nets() {
        let net: IpNet = "10.0.0.0/8".parse().unwrap();
        assert!(net.contains(ip("10.1.2.3")) && !net.contains(ip("11.0.0.1")));
        let lo: IpNet = "127.0.0.1".parse().unwrap();
        assert!(lo.contains(ip("::ffff:127.0.0.1")));
        assert!("10.0.0.0/33".parse::<IpNet>().is_err());
        assert_eq!(parse_nets(" ").unwrap(), vec![]);
        assert_eq!(parse_nets("10.0.0.0/8, ::1").unwrap().len(), 2);
        assert!(parse_nets("10.0.0.0/8,garbage").is_err());
    }

    #[test]
    fn walks_right_to_left_and_stops_at_the_first_untrusted_or_unusable_hop() {
        let ingress = parse_nets("10.0.0.0/8").unwrap();
        // An untrusted peer's header is ignored entirely.
        assert_eq!(client_address(ip("127.0.0.1"), ["6.6.6.6"], &ingress), ip("127.0.0.1"));
        assert_eq!(client_address(ip("127.0.0.1"), ["6.6.6.6"], &[]), ip("127.0.0.1"));
        // A trusted ingress: its view of the client, not what the client prepended.
        assert_eq!(client_address(ip("10.0.0.5"), ["6.6.6.6, 203.0.113.7"], &ingress), ip("203.0.113.7"));
        assert_eq!(client_address(ip("10.0.0.5"), ["6.6.6.6", "203.0.113.7, 10.0.0.9"], &ingress), ip("203.0.113.7"));
        // Unparsable entries stop the walk at the last hop that could be named.
        for bad in ["garbage", "1.2.3.4:4711", "", "unknown"] {
            let header = format!("6.6.6.6, {bad}");
            assert_eq!(client_address(ip("10.0.0.5"), [header.as_str()], &ingress), ip("10.0.0.5"), "{bad:?}");
        }
        // A trusted ingress that passed nothing is itself the client.
        assert_eq!(client_address(ip("10.0.0.5"), [], &ingress), ip("10.0.0.5"));
    }
}
