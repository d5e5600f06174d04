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
/// the `X-Forwarded-For` header lines `forwarded` (in order; several lines form one
/// list, and a line that is not text is one unusable entry). Only entries that a
/// `trusted` hop appended are believed; entries left of where the walk stops are
/// whatever the client chose to send and are never looked at.
pub fn client_address<'a>(peer: IpAddr, forwarded: impl IntoIterator<Item = &'a [u8]>, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|net| net.contains(ip));
    let mut client = canonical(peer);
    if !is_trusted(client) {
        return client;
    }
    let hops: Vec<Option<IpAddr>> = forwarded
        .into_iter()
        .flat_map(|line| match std::str::from_utf8(line) {
            Ok(text) => text.split(',').map(parse_hop).collect(),
            Err(_) => vec![None],
        })
        .collect();
    for hop in hops.into_iter().rev() {
        let Some(ip) = hop else { return client };
        client = ip;
        if !is_trusted(client) {
            return client;
        }
    }
    client
}

/// One `X-Forwarded-For` entry: an address, optionally with a port (`1.2.3.4:80`,
/// `[2001:db8::1]:443`), as some proxies write it.
fn parse_hop(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim();
    let bare = entry.strip_prefix('[').and_then(|e| e.strip_suffix(']')).unwrap_or(entry);
    let ip = bare.parse::<IpAddr>().ok().or_else(|| entry.parse::<std::net::SocketAddr>().ok().map(|s| s.ip()))?;
    Some(canonical(ip))
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

    fn lines<'a>(lines: &'a [&'a str]) -> impl Iterator<Item = &'a [u8]> {
        lines.iter().map(|l| l.as_bytes())
    }

    #[test]
    fn walks_right_to_left_and_stops_at_the_first_untrusted_or_unusable_hop() {
        let ingress = parse_nets("10.0.0.0/8").unwrap();
        // An untrusted peer's header is ignored entirely.
        assert_eq!(client_address(ip("127.0.0.1"), lines(&["6.6.6.6"]), &ingress), ip("127.0.0.1"));
        assert_eq!(client_address(ip("127.0.0.1"), lines(&["6.6.6.6"]), &[]), ip("127.0.0.1"));
        // A trusted ingress: its view of the client, not what the client prepended.
        assert_eq!(client_address(ip("10.0.0.5"), lines(&["6.6.6.6, 203.0.113.7"]), &ingress), ip("203.0.113.7"));
        // Several header lines are one list.
        assert_eq!(client_address(ip("10.0.0.5"), lines(&["6.6.6.6", "203.0.113.7, 10.0.0.9"]), &ingress), ip("203.0.113.7"));
        // Unusable entries stop the walk at the last hop that could be named.
        for bad in ["garbage", "", "unknown", "1.2.3.4:99999"] {
            let header = format!("6.6.6.6, {bad}");
            assert_eq!(client_address(ip("10.0.0.5"), lines(&[header.as_str()]), &ingress), ip("10.0.0.5"), "{bad:?}");
        }
        assert_eq!(client_address(ip("10.0.0.5"), lines(&["1.1.1.1, junk, 10.2.2.2"]), &ingress), ip("10.2.2.2"));
        let not_text: &[u8] = b"\xff\xfe";
        assert_eq!(client_address(ip("10.0.0.5"), [b"6.6.6.6".as_slice(), not_text], &ingress), ip("10.0.0.5"));
        // Garbage left of the client is never looked at.
        assert_eq!(client_address(ip("10.0.0.5"), lines(&["junk, , unknown, 198.51.100.7"]), &ingress), ip("198.51.100.7"));
        // Ports and brackets, as some proxies write them; IPv4-mapped addresses as IPv4.
        assert_eq!(client_address(ip("10.0.0.5"), lines(&["198.51.100.7:4711"]), &ingress), ip("198.51.100.7"));
        assert_eq!(client_address(ip("10.0.0.5"), lines(&["[2001:db8::1]"]), &ingress), ip("2001:db8::1"));
        assert_eq!(client_address(ip("10.0.0.5"), lines(&["[2001:db8::1]:443"]), &ingress), ip("2001:db8::1"));
        assert_eq!(client_address(ip("::ffff:10.0.0.5"), lines(&["::ffff:198.51.100.7"]), &ingress), ip("198.51.100.7"));
        // A trusted ingress that passed nothing is itself the client.
        assert_eq!(client_address(ip("10.0.0.5"), lines(&[]), &ingress), ip("10.0.0.5"));
    }
}
