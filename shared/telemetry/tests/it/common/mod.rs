//! HTTP for the telemetry tests: requests to the admin listener go through the testkit's
//! client; the collector the OTLP exporter sends to is a tiny HTTP/1.1 server of raw sockets,
//! so that a test sees the request exactly as it was written.

use std::net::SocketAddr;

use p2piano_testkit::http::Response;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A parsed HTTP message: start line, lower-cased headers, body.
#[derive(Debug)]
pub struct Message {
    pub start: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Message {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

/// Reads one request (headers, then a Content-Length body or everything until EOF).
async fn read_message(stream: &mut TcpStream) -> Message {
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at;
        }
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await.expect("read");
        assert!(n > 0, "connection closed before the end of the headers");
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let start = lines.next().unwrap_or_default().to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut body = buf[head_end + 4..].to_vec();
    let length = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse::<usize>().ok());
    match length {
        Some(length) => {
            while body.len() < length {
                let mut chunk = [0u8; 4096];
                let n = stream.read(&mut chunk).await.expect("read body");
                assert!(n > 0, "connection closed inside the body");
                body.extend_from_slice(&chunk[..n]);
            }
        }
        _ => {
            stream.read_to_end(&mut body).await.expect("read to end");
        }
    }
    Message {
        start,
        headers,
        body,
    }
}

/// `GET path` on the admin listener at `addr` (on loopback), with the tests' HTTP client.
pub async fn get(addr: SocketAddr, path: &str) -> Response {
    assert!(addr.ip().is_loopback(), "{addr} is not on loopback");
    p2piano_testkit::http::request(addr.port(), "GET", path, &[], None).await
}

/// Accepts one request on `listener` and answers it with an empty 200.
pub async fn accept_one(listener: &TcpListener) -> Message {
    let (mut stream, _) = listener.accept().await.expect("accept");
    let request = read_message(&mut stream).await;
    stream
        .write_all(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n",
        )
        .await
        .expect("respond");
    request
}
