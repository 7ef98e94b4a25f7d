//! What a deployment consists of: which services, and the configuration of each.

use std::net::SocketAddr;

use p2piano_config::{Config, Role};

/// A deployment to run: rooms, `presence` replicas and `edges`, all sharing one base
/// configuration (bus, stores, subject prefix, timings).
///
/// The plan is the part every way of running a deployment shares: [`Plan::start`] runs it
/// as tasks of this process (`p2piano all`, the integration tests), and the fault tests run
/// each of its [`Plan::services`] as a `p2piano <role>` process with the service's
/// configuration as its environment ([`Config::to_env`]).
#[derive(Clone)]
pub struct Plan {
    /// What every service shares. Without `nats_url` the services talk over one in-process
    /// bus and presence keeps its state in memory; without `mongo_uri` (or with
    /// `room_store = memory`) rooms live in memory.
    pub config: Config,
    /// How many edges (`edge-1`, `edge-2`, … unless `config.edge_id` names the only one).
    pub edges: usize,
    /// How many presence replicas.
    pub presence: usize,
    /// Whether presence shares its process with the (only) edge, as in `p2piano all`: it
    /// then never judges that edge by its heartbeats, since a busy process delays both
    /// alike.
    pub beside: bool,
}

/// One service of a plan.
#[derive(Clone)]
pub struct Service {
    /// `rooms`, `presence-1`, `edge-1`, …: unique in the plan, and the edge's id.
    pub name: String,
    /// Which service it is.
    pub role: Role,
    /// Its whole configuration.
    pub config: Config,
}

impl Plan {
    /// `p2piano all`: rooms, presence and one edge in one process, with `config` as it
    /// was loaded. The edge keeps `PORT`; rooms' and presence's admin listeners go to an
    /// ephemeral loopback port, so that one `P2PIANO_ADMIN_ADDR` cannot make two of them
    /// collide. The edge's id is fixed now, so that presence knows which edge shares its
    /// process.
    pub fn all(config: &Config) -> Self {
        let mut config = config.clone();
        config.edge_id = Some(p2piano_edge::app::edge_id(&config));
        Self {
            config,
            edges: 1,
            presence: 1,
            beside: true,
        }
    }

    /// The split deployment: rooms, one presence and `edges` edges on `config`.
    pub fn split(config: Config, edges: usize) -> Self {
        Self {
            config,
            edges,
            presence: 1,
            beside: false,
        }
    }

    /// Every service of the plan, in the order they start: rooms, the presence replicas,
    /// then the edges (which need both to be subscribed to be ready).
    pub fn services(&self) -> Vec<Service> {
        let mut services = vec![self.rooms()];
        services.extend((1..=self.presence).map(|i| self.presence_replica(i)));
        services.extend((1..=self.edges).map(|i| self.edge(i)));
        services
    }

    /// The rooms service.
    pub fn rooms(&self) -> Service {
        self.service("rooms".to_owned(), Role::Rooms)
    }

    /// Presence replica `i` (from 1).
    pub fn presence_replica(&self, i: usize) -> Service {
        self.service(format!("presence-{i}"), Role::Presence)
    }

    /// Edge `i` (from 1).
    pub fn edge(&self, i: usize) -> Service {
        let name = match (&self.config.edge_id, self.edges) {
            (Some(id), 1) => id.clone(),
            _ => format!("edge-{i}"),
        };
        let mut service = self.service(name.clone(), Role::Edge);
        service.config.edge_id = Some(name);
        service
    }

    /// The edge that presence shares its process with, if any.
    pub fn local_edge(&self) -> Option<String> {
        self.beside.then(|| self.edge(1).name)
    }

    fn service(&self, name: String, role: Role) -> Service {
        let mut config = self.config.clone();
        if self.beside && role != Role::Edge {
            config.admin_addr = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
        }
        Service { name, role, config }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        Config::from_figment(Config::figment().merge(("admin_addr", "127.0.0.1:9000")))
            .expect("configuration")
    }

    #[test]
    fn split_names_each_service_and_gives_each_edge_its_id() {
        let plan = Plan::split(config(), 2);
        let services = plan.services();
        let names: Vec<&str> = services.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["rooms", "presence-1", "edge-1", "edge-2"]);
        assert_eq!(services[3].role, Role::Edge);
        assert_eq!(services[3].config.edge_id.as_deref(), Some("edge-2"));
        assert_eq!(services[0].config.edge_id, None);
        assert_eq!(plan.local_edge(), None);
        assert!(
            services
                .iter()
                .all(|s| s.config.admin_addr == config().admin_addr),
            "the split services keep the configured admin address"
        );
    }

    #[test]
    fn all_fixes_the_edge_id_and_moves_the_inner_admin_listeners() {
        let plan = Plan::all(&config());
        let services = plan.services();
        let edge = services.iter().find(|s| s.role == Role::Edge).unwrap();
        assert!(
            edge.config
                .edge_id
                .as_deref()
                .is_some_and(|id| !id.is_empty())
        );
        assert_eq!(plan.local_edge(), edge.config.edge_id);
        assert_eq!(edge.config.admin_addr, config().admin_addr);
        for inner in services.iter().filter(|s| s.role != Role::Edge) {
            assert_eq!(inner.config.admin_addr.map(|a| a.port()), Some(0));
        }
    }
}
