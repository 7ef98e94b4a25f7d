//! Source address spreading: client sockets are bound to 127.0.0.1 .. 127.0.0.k in turn
//! before they connect, so that the number of connections is not capped by the ephemeral
//! ports of one source address (about 28 000 on Linux).

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::net::{TcpSocket, TcpStream};

/// The loopback source addresses 127.0.0.1 ..= 127.0.0.k (k clamped to 1..=254).
pub fn source_addrs(k: u8) -> Vec<Ipv4Addr> {
    (1..=k.clamp(1, 254))
        .map(|i| Ipv4Addr::new(127, 0, 0, i))
        .collect()
}

/// Hands out source addresses round-robin and connects from them.
#[derive(Debug)]
pub struct Sources {
    addrs: Vec<Ipv4Addr>,
    next: AtomicUsize,
}

impl Sources {
    /// Sources 127.0.0.1 ..= 127.0.0.k.
    pub fn new(k: u8) -> Self {
        Self {
            addrs: source_addrs(k),
            next: AtomicUsize::new(0),
        }
    }

    /// Opens a TCP connection to `target` (with `TCP_NODELAY`), from the next source
    /// address for an IPv4 target (trying the others when that one has no port left), or
    /// from the system's choice for an IPv6 target.
    pub async fn connect(&self, target: SocketAddr) -> io::Result<TcpStream> {
        let stream = match target.ip() {
            IpAddr::V6(_) => TcpSocket::new_v6()?.connect(target).await?,
            IpAddr::V4(_) => {
                let first = self.next.fetch_add(1, Ordering::Relaxed);
                let mut last_err = None;
                let mut connected = None;
                for i in 0..self.addrs.len() {
                    let src = self.addrs[(first + i) % self.addrs.len()];
                    let socket = TcpSocket::new_v4()?;
                    match socket.bind(SocketAddr::new(IpAddr::V4(src), 0)) {
                        Ok(()) => {}
                        Err(e) if is_out_of_ports(&e) => {
                            last_err = Some(e);
                            continue;
                        }
                        Err(e) => return Err(e),
                    }
                    match socket.connect(target).await {
                        Ok(s) => {
                            connected = Some(s);
                            break;
                        }
                        Err(e) if is_out_of_ports(&e) => last_err = Some(e),
                        Err(e) => return Err(e),
                    }
                }
                match connected {
                    Some(s) => s,
                    None => {
                        return Err(last_err.unwrap_or_else(|| io::Error::other("no source")));
                    }
                }
            }
        };
        stream.set_nodelay(true)?;
        Ok(stream)
    }
}

fn is_out_of_ports(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::AddrInUse | io::ErrorKind::AddrNotAvailable
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_consecutive_loopback() {
        assert_eq!(source_addrs(1), vec![Ipv4Addr::new(127, 0, 0, 1)]);
        let four = source_addrs(4);
        assert_eq!(four.len(), 4);
        assert_eq!(four[3], Ipv4Addr::new(127, 0, 0, 4));
        assert_eq!(source_addrs(0).len(), 1);
        assert_eq!(source_addrs(255).len(), 254);
        assert!(source_addrs(200).iter().all(|a| a.is_loopback()));
    }

    #[tokio::test]
    async fn connects_round_robin_from_each_source() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = listener.local_addr().unwrap();
        let sources = Sources::new(3);
        let mut seen = Vec::new();
        for _ in 0..3 {
            let s = sources.connect(target).await.unwrap();
            seen.push(s.local_addr().unwrap().ip());
            let _ = listener.accept().await.unwrap();
        }
        seen.sort();
        let want: Vec<IpAddr> = source_addrs(3).into_iter().map(IpAddr::V4).collect();
        assert_eq!(seen, want);
    }
}
