//! The demo page at `/`: create or join a room, see the members, and play a two-octave
//! keyboard together, with notes over WebRTC data channels (or through the server until a
//! channel is open). It speaks the service dialect of docs/protocol.md.
//!
//! Plain HTML, CSS and JavaScript compiled into the binary and served from this origin
//! (`/demo/<file>`), with no build step and no external resources, so that it works offline
//! and under the edge's strict Content-Security-Policy (no inline script or style).

use axum::Router;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

const PAGE: &str = include_str!("../../assets/demo/index.html");
const STYLE: &str = include_str!("../../assets/demo/style.css");
const SIO: &str = include_str!("../../assets/demo/sio.js");
const AUDIO: &str = include_str!("../../assets/demo/audio.js");
const RTC: &str = include_str!("../../assets/demo/rtc.js");
const APP: &str = include_str!("../../assets/demo/app.js");

const HTML: &str = "text/html; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";

/// The page's files: path, content type, body.
const ASSETS: [(&str, &str, &str); 6] = [
    ("/", HTML, PAGE),
    ("/demo/style.css", CSS, STYLE),
    ("/demo/sio.js", JS, SIO),
    ("/demo/audio.js", JS, AUDIO),
    ("/demo/rtc.js", JS, RTC),
    ("/demo/app.js", JS, APP),
];

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        body,
    )
        .into_response()
}

/// `GET /` (the page) and `GET /demo/<file>` (its script and style files).
pub fn router() -> Router {
    ASSETS
        .iter()
        .fold(Router::new(), |router, &(path, content_type, body)| {
            router.route(path, get(move || async move { asset(content_type, body) }))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// One `GET path` against the router served on a loopback port: the raw response.
    async fn get_raw(path: &str) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move { axum::serve(listener, router()).await });
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        server.abort();
        response
    }

    #[tokio::test]
    async fn serves_every_file_with_its_type() {
        for (path, content_type, body) in ASSETS {
            let response = get_raw(path).await;
            let (head, got) = response.split_once("\r\n\r\n").unwrap();
            let head = head.to_ascii_lowercase();
            assert!(head.starts_with("http/1.1 200"), "{path}: {head}");
            assert!(
                head.contains(&format!("content-type: {content_type}")),
                "{path}: {head}"
            );
            assert!(
                head.contains("cache-control: public, max-age=300"),
                "{path}"
            );
            assert_eq!(got, body, "{path}");
        }
        assert!(get_raw("/demo/nope.js").await.starts_with("HTTP/1.1 404"));
    }

    #[test]
    fn page_references_only_served_files_and_nothing_inline() {
        for (path, _, _) in &ASSETS[1..] {
            assert!(PAGE.contains(&format!("\"{path}\"")), "{path} not used");
        }
        let lower = PAGE.to_ascii_lowercase();
        for forbidden in ["<style", "style=", "http://", "https://", "javascript:"] {
            assert!(!lower.contains(forbidden), "page contains {forbidden:?}");
        }
        // No event handler attributes (` onclick=` and the like).
        for (i, _) in lower.match_indices(" on") {
            let rest = &lower[i + 3..];
            let name_len = rest.bytes().take_while(u8::is_ascii_lowercase).count();
            assert!(
                name_len == 0 || rest.as_bytes().get(name_len) != Some(&b'='),
                "page has an event handler attribute near {}",
                &lower[i..(i + 20).min(lower.len())]
            );
        }
        // Every <script> has a src.
        assert_eq!(
            lower.matches("<script").count(),
            lower.matches("<script src=").count()
        );
        for id in [
            "id=\"name\"",
            "id=\"create\"",
            "id=\"code\"",
            "id=\"join\"",
            "id=\"status\"",
            "id=\"room-code\"",
            "id=\"members\"",
            "id=\"peers\"",
            "id=\"keyboard\"",
            "id=\"received\"",
        ] {
            assert!(PAGE.contains(id), "{id} missing");
        }
    }
}
