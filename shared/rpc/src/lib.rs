//! Request/reply over the bus, typed: every request type names its operation and its reply
//! ([`p2piano_protocol::Call`]), [`RpcClient`] sends one and reads its reply, and [`serve`]
//! is the one serving loop of the rooms and presence services (decode, span, handle, reply,
//! bounded concurrency, drain).
//!
//! Replies are `{"ok": value}` or `{"error": {"code", "message"}}`
//! ([`p2piano_protocol::Reply`]). Trace context travels in the headers of every request and
//! reply, injected and extracted here, so that a caller's span is the parent of the
//! service's.

mod client;
mod reply;
mod serve;

pub use client::{CallError, RpcClient};
pub use reply::{Answer, answer, decode, encode_reply};
pub use serve::{Handler, ServeLimits, serve};
