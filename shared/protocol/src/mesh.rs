//! What the edges tell each other about their relay links over the bus. The links
//! themselves (the edge's `mesh` module) carry the relays; the bus only introduces the
//! edges: each heartbeat names where its edge's links are
//! ([`crate::presence::Heartbeat::mesh`]), and a starting edge calls the roll
//! ([`crate::Subjects::mesh_roll`]) so that it knows every other edge before it serves.

use serde::{Deserialize, Serialize};

/// One edge and where its relay links are: the body of a roll call and of each answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MeshPeer {
    /// The edge's id (a subject token).
    pub edge_id: String,
    /// `host:port` of its relay listener, as the other edges reach it.
    pub addr: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_reads_back_from_its_json() {
        let p = MeshPeer {
            edge_id: "e1".into(),
            addr: "10.0.0.7:3101".into(),
        };
        let json = serde_json::to_value(&p).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"edgeId": "e1", "addr": "10.0.0.7:3101"})
        );
        assert_eq!(serde_json::from_value::<MeshPeer>(json).unwrap(), p);
    }
}
