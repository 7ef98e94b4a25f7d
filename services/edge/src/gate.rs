//! Connection caps: how many TCP connections the edge holds in all, and from one address.
//!
//! Every accepted connection takes a [`Pass`] before hyper sees a byte of it, and holds it
//! until the connection ends, through an upgrade to a WebSocket (the pass travels into the
//! socket task with the request). Over a cap the connection is closed at once: nothing is
//! read and nothing waits, so a flood of stalled connections from one address costs that
//! address its own share and no more, and `accept` never meets the process's open-file
//! limit while the edge is answering.
//!
//! The global cap defaults to the open-file limit minus headroom for what else the process
//! opens (its NATS connections, the admin listener, health checks, log files); the
//! per-address cap defaults to [`DEFAULT_MAX_PER_IP`]. IPv6 clients are counted per /64,
//! the block one subscriber usually holds, so that one host cannot dodge the cap by
//! walking its own addresses.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use prometheus_client::metrics::gauge::Gauge;

/// Descriptors kept out of the global cap whatever the limit: NATS connections, the
/// admin listener and its scrapes, the health checks of a balancer, the log.
const HEADROOM_MIN: usize = 64;

/// Share of the open-file limit kept out of the cap on top of [`HEADROOM_MIN`] (1/16).
const HEADROOM_SHIFT: u32 = 4;

/// The readiness threshold: at this share of the global cap (15/16) the edge reports
/// not-ready, so that a balancer sends new players to another edge while this one still
/// serves the ones it has.
const NEAR_CAP_SHIFT: u32 = 4;

/// Why a connection was turned away.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// The edge holds its maximum of connections.
    Total,
    /// The client's address holds its maximum.
    PerAddress,
}

impl Refused {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Refused::Total => "total",
            Refused::PerAddress => "per_address",
        }
    }
}

/// The caps and the current counts.
#[derive(Debug)]
pub struct Gate {
    max_total: usize,
    max_per_ip: usize,
    open: AtomicUsize,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    /// `p2piano_edge_tcp_connections`, kept equal to `open`.
    gauge: Gauge,
}

/// One admitted connection (or, behind a trusted proxy, one client's request on the
/// proxy's connection); dropping it gives its place back.
#[derive(Debug)]
pub struct Pass {
    gate: Arc<Gate>,
    /// Whether it holds a place under the global cap (a connection) or only under its
    /// address's cap (a proxied client).
    counts_total: bool,
    key: Option<IpAddr>,
}

/// The places a request holds: its connection's, and behind a trusted proxy its client's
/// under the per-address cap. Travels in the request's extensions, and with an upgraded
/// socket into its task, so that a socket keeps both for its life.
#[derive(Clone, Debug)]
pub struct Places {
    /// The connection's place, held (never read) so that it is given back when the last
    /// holder, the request or the socket it became, ends.
    #[expect(dead_code, reason = "held for its Drop, which gives the place back")]
    pub connection: Arc<Pass>,
    /// The proxied client's place under its address's cap.
    pub client: Option<Arc<Pass>>,
}

impl Drop for Pass {
    fn drop(&mut self) {
        if self.counts_total {
            self.gate.open.fetch_sub(1, Ordering::Relaxed);
            self.gate.gauge.dec();
        }
        if let Some(key) = self.key {
            let mut table = self.gate.per_ip.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(n) = table.get_mut(&key) {
                *n -= 1;
                if *n == 0 {
                    table.remove(&key);
                }
            }
        }
    }
}

/// The address a connection counts against: IPv4 as is (and IPv4-mapped IPv6 as the IPv4
/// address), other IPv6 by its /64.
fn key_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// The process's soft limit on open files, from `/proc/self/limits` (Linux); `None` where
/// it cannot be read.
pub fn open_file_limit() -> Option<usize> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    match line.split_whitespace().nth(3)? {
        "unlimited" => Some(usize::MAX),
        n => n.parse().ok(),
    }
}

/// The default global cap for an open-file limit of `nofile`: the limit less
/// max(64, 1/16 of it) + 64 kept for everything else the process opens.
pub fn default_max_connections(nofile: usize) -> usize {
    let headroom = HEADROOM_MIN + (nofile >> HEADROOM_SHIFT).max(HEADROOM_MIN);
    nofile.saturating_sub(headroom).max(1)
}

impl Gate {
    /// A gate admitting `max_total` connections in all and `max_per_ip` from one address
    /// (0 turns the per-address cap off), keeping `gauge` at the number open.
    pub fn new(max_total: usize, max_per_ip: usize, gauge: Gauge) -> Arc<Self> {
        Arc::new(Self {
            max_total: max_total.max(1),
            max_per_ip,
            open: AtomicUsize::new(0),
            per_ip: Mutex::new(HashMap::new()),
            gauge,
        })
    }

    /// Admits a connection from `ip`, unless a cap is reached. `counted` false skips the
    /// per-address cap (a trusted proxy's connections carry many clients).
    pub fn admit(self: &Arc<Self>, ip: IpAddr, counted: bool) -> Result<Pass, Refused> {
        if self.open.fetch_add(1, Ordering::Relaxed) >= self.max_total {
            self.open.fetch_sub(1, Ordering::Relaxed);
            return Err(Refused::Total);
        }
        let key = (counted && self.max_per_ip > 0).then(|| key_of(ip));
        if let Some(key) = key {
            let mut table = self.per_ip.lock().unwrap_or_else(|e| e.into_inner());
            let n = table.entry(key).or_insert(0);
            if *n >= self.max_per_ip {
                drop(table);
                self.open.fetch_sub(1, Ordering::Relaxed);
                return Err(Refused::PerAddress);
            }
            *n += 1;
        }
        self.gauge.inc();
        Ok(Pass {
            gate: self.clone(),
            counts_total: true,
            key,
        })
    }

    /// Admits one request of client `ip` that came through a trusted proxy, under the
    /// per-address cap only (the proxy's connection holds the global place).
    pub fn admit_client(self: &Arc<Self>, ip: IpAddr) -> Result<Pass, Refused> {
        let key = (self.max_per_ip > 0).then(|| key_of(ip));
        if let Some(key) = key {
            let mut table = self.per_ip.lock().unwrap_or_else(|e| e.into_inner());
            let n = table.entry(key).or_insert(0);
            if *n >= self.max_per_ip {
                return Err(Refused::PerAddress);
            }
            *n += 1;
        }
        Ok(Pass {
            gate: self.clone(),
            counts_total: false,
            key,
        })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// The global cap.
    pub fn max_total(&self) -> usize {
        self.max_total
    }

    /// Whether the edge is close enough to its global cap to ask for no new players.
    pub fn near_cap(&self) -> bool {
        self.open() >= self.max_total - (self.max_total >> NEAR_CAP_SHIFT)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn caps_hold_and_places_come_back() {
        let gate = Gate::new(4, 2, Gauge::default());
        let a1 = gate.admit(ip("10.0.0.1"), true).unwrap();
        let _a2 = gate.admit(ip("10.0.0.1"), true).unwrap();
        assert_eq!(
            gate.admit(ip("10.0.0.1"), true).unwrap_err(),
            Refused::PerAddress
        );
        let _b1 = gate.admit(ip("10.0.0.2"), true).unwrap();
        let _p1 = gate.admit(ip("10.0.0.3"), false).unwrap();
        assert_eq!(gate.open(), 4);
        assert_eq!(
            gate.admit(ip("10.0.0.4"), true).unwrap_err(),
            Refused::Total
        );
        drop(a1);
        assert_eq!(gate.open(), 3);
        let _a3 = gate.admit(ip("10.0.0.1"), true).unwrap();
        assert!(gate.near_cap());
    }

    #[test]
    fn proxied_clients_count_per_address_only() {
        let gate = Gate::new(2, 1, Gauge::default());
        let _proxy = gate.admit(ip("10.0.0.1"), false).unwrap();
        let a = gate.admit_client(ip("203.0.113.5")).unwrap();
        assert_eq!(
            gate.admit_client(ip("203.0.113.5")).unwrap_err(),
            Refused::PerAddress
        );
        let _b = gate.admit_client(ip("203.0.113.6")).unwrap();
        assert_eq!(
            gate.open(),
            1,
            "clients behind a proxy take no connection place"
        );
        drop(a);
        assert!(gate.admit_client(ip("203.0.113.5")).is_ok());
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_ipv4_as_ipv4() {
        let gate = Gate::new(100, 1, Gauge::default());
        let _a = gate.admit(ip("2001:db8:1:2::1"), true).unwrap();
        assert_eq!(
            gate.admit(ip("2001:db8:1:2::ffff:5"), true).unwrap_err(),
            Refused::PerAddress
        );
        let _b = gate.admit(ip("2001:db8:1:3::1"), true).unwrap();
        let _c = gate.admit(ip("192.0.2.7"), true).unwrap();
        assert_eq!(
            gate.admit(ip("::ffff:192.0.2.7"), true).unwrap_err(),
            Refused::PerAddress
        );
    }

    #[test]
    fn default_cap_keeps_headroom() {
        assert_eq!(default_max_connections(1024), 1024 - 64 - 64);
        assert_eq!(default_max_connections(20_000), 20_000 - 64 - 1250);
        assert!(default_max_connections(10) >= 1);
    }
}
