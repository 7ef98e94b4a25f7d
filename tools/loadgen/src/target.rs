//! Target base URLs (`http://host:port`), loopback only: the load generator refuses to
//! aim at anything but this machine.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::str::FromStr;

/// One server to load: where to connect and what to put in `Host`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// The address to connect to (always loopback).
    pub addr: SocketAddr,
    /// The `Host` header value (`host:port` as given).
    pub host: String,
}

impl Target {
    /// The URL this target was parsed from, normalised (`http://host:port`).
    pub fn url(&self) -> String {
        format!("http://{}", self.host)
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.url())
    }
}

/// Whether `ip` is this machine: 127.0.0.0/8 or ::1 (or ::ffff:127.x).
pub fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

impl FromStr for Target {
    type Err = String;

    /// Parses `http://host[:port][/]`; `host` is `localhost`, an IPv4 address in
    /// 127.0.0.0/8 or `[::1]`. Anything else is refused. The port defaults to 80.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let rest = s
            .strip_prefix("http://")
            .ok_or_else(|| format!("{s}: only http:// targets are supported"))?;
        let authority = rest.trim_end_matches('/');
        if authority.is_empty() || authority.contains('/') || authority.contains('@') {
            return Err(format!("{s}: give a base URL, http://host:port"));
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, after) = v6
                .split_once(']')
                .ok_or_else(|| format!("{s}: unterminated [ipv6]"))?;
            (h, after.strip_prefix(':'))
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        let port: u16 = match port {
            Some(p) => p.parse().map_err(|_| format!("{s}: bad port {p:?}"))?,
            None => 80,
        };
        let ip: IpAddr = if host.eq_ignore_ascii_case("localhost") {
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        } else {
            host.parse()
                .map_err(|_| format!("{s}: host must be localhost, 127.x.x.x or [::1]"))?
        };
        if !is_loopback(ip) {
            return Err(format!(
                "{s}: refusing a target outside this machine (loopback only: 127.0.0.0/8, ::1, localhost)"
            ));
        }
        let host = match ip {
            IpAddr::V6(_) => format!("[{host}]:{port}"),
            IpAddr::V4(_) => format!("{host}:{port}"),
        };
        Ok(Target {
            addr: SocketAddr::new(ip, port),
            host,
        })
    }
}

/// Parses a comma-separated list of targets (at least one).
pub fn parse_list(s: &str) -> Result<Vec<Target>, String> {
    let list = s
        .split(',')
        .filter(|p| !p.trim().is_empty())
        .map(Target::from_str)
        .collect::<Result<Vec<_>, _>>()?;
    if list.is_empty() {
        return Err("no target given".into());
    }
    Ok(list)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_targets_parse() {
        let t: Target = "http://localhost:3001".parse().unwrap();
        assert_eq!(t.addr, "127.0.0.1:3001".parse().unwrap());
        assert_eq!(t.host, "localhost:3001");
        assert_eq!(t.url(), "http://localhost:3001");
        let t: Target = "http://127.0.0.9:80/".parse().unwrap();
        assert_eq!(t.addr, "127.0.0.9:80".parse().unwrap());
        let t: Target = "http://[::1]:3002".parse().unwrap();
        assert_eq!(t.addr, "[::1]:3002".parse().unwrap());
        assert_eq!(t.host, "[::1]:3002");
        let t: Target = "http://127.255.255.254".parse().unwrap();
        assert_eq!(t.addr.port(), 80);
    }

    #[test]
    fn anything_else_is_refused() {
        for bad in [
            "http://10.0.0.1:3001",
            "http://192.168.1.2:80",
            "http://example.com:3001",
            "http://0.0.0.0:3001",
            "http://[::]:3001",
            "http://[2001:db8::1]:3001",
            "http://128.0.0.1:3001",
            "https://localhost:3001",
            "localhost:3001",
            "http://localhost:3001/api",
            "http://user@localhost:3001",
            "http://localhost:99999",
            "http://",
        ] {
            assert!(bad.parse::<Target>().is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn loopback_check() {
        assert!(is_loopback("127.0.0.1".parse().unwrap()));
        assert!(is_loopback("127.1.2.3".parse().unwrap()));
        assert!(is_loopback("::1".parse().unwrap()));
        assert!(is_loopback("::ffff:127.0.0.1".parse().unwrap()));
        assert!(!is_loopback("::ffff:10.0.0.1".parse().unwrap()));
        assert!(!is_loopback("8.8.8.8".parse().unwrap()));
        assert!(is_loopback(IpAddr::V6(std::net::Ipv6Addr::LOCALHOST)));
    }

    #[test]
    fn lists() {
        let l = parse_list("http://localhost:3001, http://127.0.0.1:3002,").unwrap();
        assert_eq!(l.len(), 2);
        assert_eq!(l[1].addr.port(), 3002);
        assert!(parse_list("").is_err());
        assert!(parse_list("http://localhost:1,http://10.1.1.1:2").is_err());
    }
}
