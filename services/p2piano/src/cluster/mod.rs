//! One builder for every deployment this repository runs: `p2piano all`, the integration
//! tests' clusters and the fault tests' processes.
//!
//! A [`Plan`] says which services run (rooms, presence replicas, edges) and gives each its
//! whole [`p2piano_config::Config`]. Run in this process ([`Plan::start`]), each service is a
//! task, on one in-process bus and memory stores when the plan has no NATS, on a NATS
//! connection of its own otherwise. Run as processes (the fault tests), each service is
//! `p2piano <role>` with its configuration as environment ([`p2piano_config::Config::to_env`]).
//! Either way the names, edge ids, admin listeners and start order come from here.

mod plan;
mod run;

pub use plan::{Plan, Service};
pub use run::{Cluster, ClusterError, Options, Running};
