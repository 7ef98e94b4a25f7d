//! Configuration of every p2piano process.
//!
//! Values are layered with [figment]: built-in defaults, then the optional TOML file named
//! by `P2PIANO_CONFIG`, then the environment. The original service's variables keep their
//! meaning (`NODE_ENV`, `PORT`, `CORS_ORIGIN`, `COOKIE_SECRET`, `MONGO_URI`,
//! `MONGO_USERNAME`, `MONGO_PASSWORD`) so that this backend is a drop-in replacement; the
//! rest are `NATS_URL`, the standard `OTEL_*` variables and `P2PIANO_*`.
//!
//! Loading checks types (durations, [`NodeEnv`], [`RoomStore`], [`Secret`]s) and refuses
//! unknown keys in the file; [`Config::validate`] runs the start-up checks for the
//! [`Role`] that is starting and reports every problem at once. Every default, including
//! the fallbacks services use for unset optional settings ([`DEFAULT_NATS_URL`] and the
//! admin addresses), is defined here.

mod config;
mod de;
mod defaults;
mod durations;
mod env;
mod error;
mod file;
mod load;
mod log_format;
mod mongo;
mod node_env;
mod redact;
mod role;
mod room_store;
mod secret;
mod to_env;
mod validate;
mod vars;

pub use config::Config;
pub use defaults::{
    DEFAULT_EDGE_ADMIN_ADDR, DEFAULT_MONGO_URI, DEFAULT_NATS_URL, DEFAULT_PRESENCE_ADMIN_ADDR,
    DEFAULT_ROOMS_ADMIN_ADDR, DEVELOPMENT_COOKIE_SECRET,
};
pub use error::{ConfigError, Problem};
pub use log_format::LogFormat;
pub use node_env::NodeEnv;
pub use role::Role;
pub use room_store::{RoomStore, UnknownRoomStore};
pub use secret::Secret;
pub use vars::{CONFIG_FILE_VAR, ENV_PREFIX};
