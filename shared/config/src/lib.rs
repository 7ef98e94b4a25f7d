//! Configuration of every p2piano process.
//!
//! Values are layered with [figment]: built-in defaults, then the optional TOML file named
//! by `P2PIANO_CONFIG`, then the environment. The original service's variables keep their
//! meaning (`NODE_ENV`, `PORT`, `CORS_ORIGIN`, `COOKIE_SECRET`, `MONGO_URI`,
//! `MONGO_USERNAME`, `MONGO_PASSWORD`) so that this backend is a drop-in replacement; the
//! rest are `NATS_URL`, the standard `OTEL_*` variables and `P2PIANO_*`.
//!
//! Loading only checks types; [`Config::validate`] runs the start-up checks for the
//! [`Role`] that is starting and reports every problem at once.

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
mod redact;
mod role;
mod validate;
mod vars;

pub use config::Config;
pub use error::{ConfigError, Problem};
pub use log_format::LogFormat;
pub use role::Role;
pub use vars::{CONFIG_FILE_VAR, ENV_PREFIX};
