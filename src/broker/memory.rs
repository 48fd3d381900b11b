//! The embedded broker of a single node: the mesh between shards already delivers
//! everything inside the node, and there are no other nodes, so it forwards nothing.
use std::sync::Arc;

use super::{Broker, Health, LinkError, Outbound};

#[derive(Debug, Default)]
pub struct MemoryBroker;

impl Broker for MemoryBroker {
    fn name(&self) -> &'static str {
        "memory"
    }
    fn forward(&self, _msg: Outbound<'_>) -> Result<(), LinkError> {
        Ok(())
    }
    fn interest(&self, _shard: usize, _topic: &Arc<str>, _add: bool, _gen: u64) -> bool {
        false
    }
    fn health(&self) -> Health {
        Health::Ok
    }
}
