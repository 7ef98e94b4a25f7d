//! Trusted proxies (`P2PIANO_TRUSTED_PROXIES`): behind a load balancer every client arrives
//! from the balancer's address, so the per-address limits would count all clients as one.
//! When, and only when, the peer of a connection is a listed proxy, the client's address is
//! taken from `X-Forwarded-For` (or, without it, `Forwarded`): the rightmost address that
//! is not itself a trusted proxy, since each proxy appends the address it received the
//! request from and only the entries added by our own proxies can be believed. From any
//! other peer those headers are ignored: a client cannot choose its own address.

use std::net::IpAddr;

use axum::http::HeaderMap;
use axum::http::header::FORWARDED;

/// The `X-Forwarded-For` header.
const X_FORWARDED_FOR: &str = "x-forwarded-for";

/// One CIDR block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Block {
    net: IpAddr,
    len: u8,
}

impl Block {
    fn parse(text: &str) -> Result<Self, String> {
        let (addr, len) = match text.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (text, None),
        };
        let net: IpAddr = addr
            .trim()
            .parse()
            .map_err(|_| format!("{text:?} is not an address or CIDR block"))?;
        let max = if net.is_ipv4() { 32 } else { 128 };
        let len = match len {
            None => max,
            Some(l) => l
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|l| *l <= max)
                .ok_or_else(|| format!("{text:?} has a prefix length out of range"))?,
        };
        Ok(Self { net, len })
    }

    fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        match (self.net, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.len)).unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.len))
                    .unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

/// An IPv4-mapped IPv6 address as the IPv4 address it is.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The trusted proxies of this edge.
#[derive(Clone, Debug, Default)]
pub struct TrustedProxies {
    blocks: Vec<Block>,
}

impl TrustedProxies {
    /// Parses addresses and CIDR blocks (`10.0.0.0/8`, `2001:db8::/32`, `192.0.2.7`); the
    /// error names the entry that is neither.
    pub fn parse(list: &[String]) -> Result<Self, String> {
        let blocks = list
            .iter()
            .map(|s| Block::parse(s))
            .collect::<Result<_, _>>()?;
        Ok(Self { blocks })
    }

    /// Whether `ip` is one of the trusted proxies.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.blocks.iter().any(|b| b.contains(ip))
    }

    /// The client's address for a request from `peer`: `peer` itself unless it is a trusted
    /// proxy; else the rightmost forwarded address that is not a trusted proxy (the
    /// leftmost when they all are). An entry that is not an address ends the walk: what is
    /// left of it cannot be trusted, and the last trusted hop is the answer.
    pub fn client_of(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        if !self.contains(peer) {
            return peer;
        }
        let hops = forwarded_hops(headers);
        let mut client = canonical(peer);
        for hop in hops.iter().rev() {
            match hop {
                Some(ip) => {
                    client = *ip;
                    if !self.contains(*ip) {
                        break;
                    }
                }
                None => break,
            }
        }
        client
    }
}

/// The addresses a request passed through, leftmost (the original client) first: every
/// `X-Forwarded-For` line in order, or if there is none the `for=` parameters of
/// `Forwarded` (RFC 7239). `None` for an entry that is not an address (`unknown`, an
/// obfuscated name, garbage).
fn forwarded_hops(headers: &HeaderMap) -> Vec<Option<IpAddr>> {
    let xff: Vec<Option<IpAddr>> = headers
        .get_all(X_FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|entry| parse_hop(entry.trim()))
        .collect();
    if !xff.is_empty() {
        return xff;
    }
    headers
        .get_all(FORWARDED)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|element| {
            element.split(';').find_map(|pair| {
                let (k, v) = pair.split_once('=')?;
                k.trim()
                    .eq_ignore_ascii_case("for")
                    .then(|| parse_hop(v.trim().trim_matches('"')))
            })
        })
        .collect()
}

/// One hop: `192.0.2.1`, `192.0.2.1:4711`, `2001:db8::1`, `[2001:db8::1]:4711`.
fn parse_hop(text: &str) -> Option<IpAddr> {
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(canonical(ip));
    }
    if let Some(rest) = text.strip_prefix('[') {
        return rest.split_once(']')?.0.parse().ok().map(canonical);
    }
    let (host, _port) = text.rsplit_once(':')?;
    host.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    fn proxies(list: &[&str]) -> TrustedProxies {
        TrustedProxies::parse(&list.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn blocks_parse_and_match() {
        let p = proxies(&["10.0.0.0/8", "192.0.2.7", "2001:db8::/32"]);
        assert!(p.contains(ip("10.1.2.3")));
        assert!(p.contains(ip("::ffff:10.1.2.3")));
        assert!(!p.contains(ip("11.0.0.1")));
        assert!(p.contains(ip("192.0.2.7")));
        assert!(!p.contains(ip("192.0.2.8")));
        assert!(p.contains(ip("2001:db8:ffff::1")));
        assert!(!p.contains(ip("2001:db9::1")));
        assert!(proxies(&["0.0.0.0/0"]).contains(ip("203.0.113.9")));
        for bad in ["10.0.0.0/33", "example.com", "10.0.0.0/x", "::/129"] {
            assert!(TrustedProxies::parse(&[bad.to_owned()]).is_err(), "{bad}");
        }
    }

    #[test]
    fn only_a_trusted_peer_is_believed() {
        let p = proxies(&["10.0.0.0/8"]);
        let h = headers(&[("x-forwarded-for", "203.0.113.5")]);
        assert_eq!(p.client_of(ip("198.51.100.1"), &h), ip("198.51.100.1"));
        assert_eq!(p.client_of(ip("10.0.0.2"), &h), ip("203.0.113.5"));
        // No header: the proxy itself.
        assert_eq!(
            p.client_of(ip("10.0.0.2"), &HeaderMap::new()),
            ip("10.0.0.2")
        );
    }

    #[test]
    fn the_rightmost_untrusted_hop_is_the_client() {
        let p = proxies(&["10.0.0.0/8"]);
        // A client that sends its own X-Forwarded-For only adds entries to the left.
        let h = headers(&[("x-forwarded-for", "1.2.3.4, 203.0.113.5, 10.0.0.9")]);
        assert_eq!(p.client_of(ip("10.0.0.2"), &h), ip("203.0.113.5"));
        // Several header lines are one list.
        let h = headers(&[
            ("x-forwarded-for", "1.2.3.4"),
            ("x-forwarded-for", "203.0.113.5"),
        ]);
        assert_eq!(p.client_of(ip("10.0.0.2"), &h), ip("203.0.113.5"));
        // Garbage stops the walk at the last trusted hop.
        let h = headers(&[("x-forwarded-for", "203.0.113.5, unknown, 10.0.0.9")]);
        assert_eq!(p.client_of(ip("10.0.0.2"), &h), ip("10.0.0.9"));
        // Every hop trusted: the leftmost.
        let h = headers(&[("x-forwarded-for", "10.9.9.9, 10.0.0.9")]);
        assert_eq!(p.client_of(ip("10.0.0.2"), &h), ip("10.9.9.9"));
    }

    #[test]
    fn forwarded_is_read_without_x_forwarded_for() {
        let p = proxies(&["10.0.0.0/8"]);
        let h = headers(&[(
            "forwarded",
            r#"for=198.51.100.17;proto=https, for="[2001:db8:cafe::17]:4711", for=10.0.0.3:80"#,
        )]);
        assert_eq!(p.client_of(ip("10.0.0.2"), &h), ip("2001:db8:cafe::17"));
        let h = headers(&[("forwarded", "for=198.51.100.17:8080")]);
        assert_eq!(p.client_of(ip("10.0.0.2"), &h), ip("198.51.100.17"));
    }
}
