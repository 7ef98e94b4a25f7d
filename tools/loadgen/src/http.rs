//! A minimal HTTP/1.1 client for the room API: one request per connection
//! (`Connection: close`, so the server closes first and keeps the TIME_WAIT), from a spread
//! source address. Just enough for `POST /api/room`, `POST /rooms` and `GET /api/room/:id`.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::addr::Sources;
use crate::target::Target;

/// Longest an HTTP exchange may take.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest response read (the room API answers far less).
const MAX_RESPONSE: usize = 256 * 1024;

/// A response: status, the session cookie it set, and the body.
#[derive(Clone, Debug, Default)]
pub struct Response {
    /// HTTP status.
    pub status: u16,
    /// `sessionId=<value>` from `Set-Cookie`, ready for a `Cookie` header.
    pub cookie: Option<String>,
    /// The body (de-chunked).
    pub body: String,
}

/// Sends one request and reads the whole response.
pub async fn request(
    sources: &Sources,
    target: &Target,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> Result<Response, String> {
    tokio::time::timeout(HTTP_TIMEOUT, exchange(sources, target, method, path, body))
        .await
        .map_err(|_| "http timeout".to_owned())?
}

async fn exchange(
    sources: &Sources,
    target: &Target,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> Result<Response, String> {
    let mut stream = sources
        .connect(target.addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nUser-Agent: p2piano-loadgen\r\n",
        target.host
    );
    match body {
        Some(b) => req.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{b}",
            b.len()
        )),
        None => req.push_str("Content-Length: 0\r\n\r\n"),
    }
    stream
        .write_all(req.as_bytes())
        .await
        .map_err(|e| format!("write: {e}"))?;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream
            .read(&mut chunk)
            .await
            .map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > MAX_RESPONSE {
            return Err("response too large".into());
        }
        if let Some(done) = complete_length(&buf)
            && buf.len() >= done
        {
            buf.truncate(done);
            break;
        }
    }
    parse_response(&String::from_utf8_lossy(&buf))
}

/// The total length of a response with `Content-Length`, once its head is in.
fn complete_length(buf: &[u8]) -> Option<usize> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = std::str::from_utf8(&buf[..end]).ok()?;
    let len = head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case("content-length")
            .then(|| v.trim().parse::<usize>().ok())
            .flatten()
    })?;
    Some(end + len)
}

/// Parses a whole HTTP/1.1 response.
pub fn parse_response(text: &str) -> Result<Response, String> {
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| "truncated response".to_owned())?;
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| "bad status line".to_owned())?;
    let mut cookie = None;
    let mut chunked = false;
    for (k, v) in lines.filter_map(|l| l.split_once(':')) {
        let (k, v) = (k.trim(), v.trim());
        if k.eq_ignore_ascii_case("set-cookie") {
            let pair = v.split(';').next().unwrap_or_default().trim();
            if pair.starts_with("sessionId=") {
                cookie = Some(pair.to_owned());
            }
        } else if k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked") {
            chunked = true;
        }
    }
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_owned()
    };
    Ok(Response {
        status,
        cookie,
        body,
    })
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_status_cookie_and_body() {
        let r = parse_response(
            "HTTP/1.1 201 Created\r\ncontent-type: application/json\r\n\
             set-cookie: sessionId=abc.def; Path=/; HttpOnly\r\ncontent-length: 19\r\n\r\n\
             {\"roomId\":\"fxa3x\"}",
        )
        .unwrap();
        assert_eq!(r.status, 201);
        assert_eq!(r.cookie.as_deref(), Some("sessionId=abc.def"));
        assert_eq!(r.body, "{\"roomId\":\"fxa3x\"}");
    }

    #[test]
    fn chunked_bodies_and_other_cookies() {
        let r = parse_response(
            "HTTP/1.1 200 OK\r\nSet-Cookie: other=1\r\nTransfer-Encoding: chunked\r\n\r\n\
             3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!((r.status, r.cookie, r.body.as_str()), (200, None, "abcde"));
        assert!(parse_response("HTTP/1.1 200 OK\r\n").is_err());
    }

    #[test]
    fn knows_when_a_response_is_complete() {
        assert_eq!(
            complete_length(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n"),
            Some(40)
        );
        assert_eq!(complete_length(b"HTTP/1.1 200 OK\r\n"), None);
        assert_eq!(complete_length(b"HTTP/1.1 200 OK\r\n\r\n"), None);
    }
}
