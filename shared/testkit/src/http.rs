//! The tests' HTTP client: one request over a fresh connection to `127.0.0.1:port`, on
//! reqwest (HTTP/1.1, no TLS, no proxy, no redirects, no connection reuse), so that every
//! test crate speaks HTTP through one real client instead of hand-written request lines.
//!
//! A fresh connection per request keeps what the services see the same as a browser's first
//! visit (per-address connection limits count every request). Tests whose point is bytes no
//! client would send (malformed, stalled or partial requests) keep raw TCP sockets of their
//! own and say so.

use std::sync::OnceLock;

use serde_json::Value;

/// An HTTP answer as a test looks at it.
#[derive(Debug, Clone)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The headers, in the order received, names in lower case.
    pub headers: Vec<(String, String)>,
    /// The body as text (lossy UTF-8).
    pub body: String,
}

impl Response {
    /// The first value of header `name` (any case), if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON, failing the test with the body when it is not.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    /// The `name=value` pair of the first `Set-Cookie` (the session cookie the services
    /// hand out), ready for a `Cookie` header.
    pub fn cookie(&self) -> Option<String> {
        let set = self.header("set-cookie")?;
        set.split(';').next().map(|s| s.trim().to_owned())
    }
}

/// The one client: built once per test process (it holds no connections between requests).
fn client() -> &'static reqwest::Client {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    CLIENT.get_or_init(|| {
        reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .pool_max_idle_per_host(0)
            .build()
            .expect("an HTTP client")
    })
}

/// Sends `method path` to `127.0.0.1:port` with `headers` and, when given, a JSON `body`
/// (`Content-Type: application/json` unless `headers` name another); an error when the
/// connection fails or breaks. No timeout of its own: a test that expects an answer in
/// time bounds the call.
pub async fn try_request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> Result<Response, String> {
    let method = reqwest::Method::from_bytes(method.as_bytes()).map_err(|e| e.to_string())?;
    let mut req = client().request(method, format!("http://127.0.0.1:{port}{path}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    if let Some(b) = body {
        if !headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
        {
            req = req.header("content-type", "application/json");
        }
        req = req.body(b.to_owned());
    }
    let resp = req.send().await.map_err(|e| format!("{e:?}"))?;
    let status = resp.status().as_u16();
    let headers = resp
        .headers()
        .iter()
        .map(|(k, v)| {
            let value = String::from_utf8_lossy(v.as_bytes()).into_owned();
            (k.as_str().to_owned(), value)
        })
        .collect();
    let bytes = resp.bytes().await.map_err(|e| format!("{e:?}"))?;
    Ok(Response {
        status,
        headers,
        body: String::from_utf8_lossy(&bytes).into_owned(),
    })
}

/// [`try_request`] for a server that must answer: fails the test when it does not.
pub async fn request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> Response {
    try_request(port, method, path, headers, body)
        .await
        .unwrap_or_else(|e| panic!("{method} {path} on :{port}: {e}"))
}

/// [`request`] from synchronous code (tests that drive a child process): the request runs
/// on a runtime of its own in a thread of its own, so that it may be called from inside an
/// async test as well.
pub fn request_blocking(port: u16, method: &str, path: &str, headers: &[(&str, &str)]) -> Response {
    let (method, path) = (method.to_owned(), path.to_owned());
    let headers: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime for one request");
        let headers: Vec<(&str, &str)> = headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        runtime.block_on(request(port, &method, &path, &headers, None))
    })
    .join()
    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

/// `GET path` on `127.0.0.1:port`: the status and the body (admin endpoints: health,
/// `/metrics`).
pub async fn http_get(port: u16, path: &str) -> (u16, String) {
    let r = request(port, "GET", path, &[], None).await;
    (r.status, r.body)
}
