//! The edge: the HTTP API and the Socket.IO gateway that browsers talk to.
//!
//! Stateless apart from its own sockets: sessions live in presence, rooms in the rooms
//! service. Each room's membership events reach every edge holding a member of it through
//! the room's subject, and its relays over the relay links between those edges. Any edge
//! can serve any client.
//!
//! - [`http`]: REST routes in both dialects, sessions and cookies, CORS, limits, OpenAPI;
//! - [`sio`]: the Engine.IO / Socket.IO frame codec;
//! - [`socket`]: the upgrade, one task per socket (its frames, membership and actions), the
//!   writer and its queue, per-session budgets;
//! - [`events`]: validation of each dialect's events into actions;
//! - [`dialect`]: how each dialect's outgoing events are written;
//! - [`fanout`]: per-room subscriptions and delivery to local sockets;
//! - [`mesh`]: the relay links between edges, and how edges find each other;
//! - [`serve`], [`gate`], [`proxy`]: the accept loop, its deadlines, its connection caps,
//!   and the client address behind trusted proxies;
//! - [`edge`], [`app`]: shared state, start-up, control from presence, drain.

pub mod app;
mod dialect;
mod edge;
pub mod events;
mod fanout;
mod gate;
mod http;
pub mod mesh;
mod metrics;
pub mod presence_link;
mod proxy;
mod rpc;
mod security;
mod serve;
pub mod sio;
mod socket;

pub use app::{AppError, Application};
pub use edge::SocketSettings;
pub use http::CookieSigner;
pub use http::rooms::SettingsBody;
/// The wire types the public validators take and return, for callers outside the
/// workspace (the fuzz targets), so that they need no path of their own to the protocol
/// crate.
pub use p2piano_protocol as protocol;
