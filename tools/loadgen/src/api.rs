//! The room API as players use it: create a room (its creator gets a session cookie), and
//! let each further player get a cookie of its own by reading the room.

use serde_json::Value;

use crate::addr::Sources;
use crate::http::{Response, request};
use crate::target::Target;

/// Rooms hold this many players unless created with more (`maxParticipants`).
pub const DEFAULT_CAPACITY: usize = 8;
/// The most players a room may be created for.
pub const MAX_CAPACITY: usize = 16;

/// A created room: its code and the creator's cookie.
#[derive(Clone, Debug)]
pub struct Created {
    /// The 5-letter room code.
    pub code: String,
    /// The creator's `sessionId=...` cookie.
    pub cookie: String,
}

fn field(body: &str, name: &str) -> Option<String> {
    serde_json::from_str::<Value>(body)
        .ok()?
        .get(name)?
        .as_str()
        .map(str::to_owned)
}

fn expect(resp: Response, status: u16, what: &str) -> Result<Response, String> {
    if resp.status == status {
        Ok(resp)
    } else {
        let body: String = resp.body.chars().take(120).collect();
        Err(format!("{what}: HTTP {} {body}", resp.status))
    }
}

/// Creates a room for `capacity` players: `POST /api/room` (client dialect) when the
/// default capacity is enough, else `POST /rooms` with `settings.maxParticipants`.
pub async fn create_room(
    sources: &Sources,
    target: &Target,
    capacity: usize,
) -> Result<Created, String> {
    let (resp, key) = if capacity <= DEFAULT_CAPACITY {
        let r = request(sources, target, "POST", "/api/room", None).await?;
        (r, "roomId")
    } else {
        let body = format!(
            "{{\"settings\":{{\"maxParticipants\":{}}}}}",
            capacity.min(MAX_CAPACITY)
        );
        let r = request(sources, target, "POST", "/rooms", Some(&body)).await?;
        (r, "code")
    };
    let resp = expect(resp, 201, "create room")?;
    let code = field(&resp.body, key).ok_or_else(|| format!("create room: no {key}"))?;
    let cookie = resp
        .cookie
        .ok_or_else(|| "create room: no session cookie".to_owned())?;
    Ok(Created { code, cookie })
}

/// `GET /api/room/<code>` without a cookie: a new session for a player who joins.
pub async fn guest_cookie(
    sources: &Sources,
    target: &Target,
    code: &str,
) -> Result<String, String> {
    let resp = request(sources, target, "GET", &format!("/api/room/{code}"), None).await?;
    let resp = expect(resp, 200, "get room")?;
    resp.cookie
        .ok_or_else(|| "get room: no session cookie".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_and_statuses() {
        assert_eq!(
            field("{\"roomId\":\"abcde\"}", "roomId").as_deref(),
            Some("abcde")
        );
        assert_eq!(field("{\"roomId\":5}", "roomId"), None);
        assert_eq!(field("not json", "roomId"), None);
        let r = Response {
            status: 429,
            cookie: None,
            body: "{\"message\":\"slow down\"}".into(),
        };
        let e = expect(r, 201, "create room").unwrap_err();
        assert!(e.contains("429") && e.contains("slow down"), "{e}");
    }
}
