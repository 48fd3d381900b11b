//! The embedded broker of a single node: the mesh between shards already delivers
//! everything inside the node, and there are no other nodes, so it forwards nothing.
use super::{Broker, Health, Outbound};

#[derive(Debug, Default)]
pub struct MemoryBroker;

impl Broker for MemoryBroker {
    fn name(&self) -> &'static str {
        "memory"
    }
    fn forward(&self, _msg: Outbound<'_>) {}
    fn interest(&self, _topic: &str, _present: bool) {}
    fn health(&self) -> Health {
        Health::Ok
    }
}
