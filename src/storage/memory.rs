//! The in-memory backend: one map per client behind a std mutex.
//!
//! A std `Mutex`, not a tokio one: it is never held across `.await`, and every
//! critical section is a map operation (mini-redis's `db.rs` makes the same call).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;

use super::{DeliveryState, QueuedDelivery};
use crate::protocol::{ClientId, PacketId};

#[derive(Debug, Default)]
struct ClientRecords {
    queue: BTreeMap<u64, QueuedDelivery>,
    incoming: HashSet<PacketId>,
}

/// Every persistent session's records, in memory.
#[derive(Debug, Default)]
pub struct MemoryStore {
    clients: Mutex<HashMap<ClientId, ClientRecords>>,
}

impl MemoryStore {
    fn with<R>(&self, f: impl FnOnce(&mut HashMap<ClientId, ClientRecords>) -> R) -> R {
        // A poisoned lock means a panic elsewhere already; the maps stay consistent
        // because every operation below is a single insert or remove.
        let mut clients = self
            .clients
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        f(&mut clients)
    }

    pub fn enqueue(&self, batch: &[(ClientId, QueuedDelivery)]) {
        self.with(|clients| {
            for (client_id, entry) in batch {
                clients
                    .entry(client_id.clone())
                    .or_default()
                    .queue
                    .insert(entry.seq, entry.clone());
            }
        });
    }

    pub fn queue(&self, client_id: &ClientId) -> Vec<QueuedDelivery> {
        self.with(|clients| {
            clients
                .get(client_id)
                .map(|records| records.queue.values().cloned().collect())
                .unwrap_or_default()
        })
    }

    pub fn set_state(&self, client_id: &ClientId, seq: u64, state: DeliveryState) {
        self.with(|clients| {
            if let Some(entry) = clients
                .get_mut(client_id)
                .and_then(|records| records.queue.get_mut(&seq))
            {
                entry.state = state;
            }
        });
    }

    pub fn remove(&self, client_id: &ClientId, seq: u64) {
        self.with(|clients| {
            if let Some(records) = clients.get_mut(client_id) {
                records.queue.remove(&seq);
            }
        });
    }

    pub fn add_incoming(&self, client_id: &ClientId, packet_id: PacketId) {
        self.with(|clients| {
            clients
                .entry(client_id.clone())
                .or_default()
                .incoming
                .insert(packet_id);
        });
    }

    pub fn remove_incoming(&self, client_id: &ClientId, packet_id: PacketId) {
        self.with(|clients| {
            if let Some(records) = clients.get_mut(client_id) {
                records.incoming.remove(&packet_id);
            }
        });
    }

    pub fn incoming(&self, client_id: &ClientId) -> Vec<PacketId> {
        self.with(|clients| {
            let mut ids: Vec<PacketId> = clients
                .get(client_id)
                .map(|records| records.incoming.iter().copied().collect())
                .unwrap_or_default();
            ids.sort();
            ids
        })
    }

    pub fn delete_session(&self, client_id: &ClientId) {
        self.with(|clients| {
            clients.remove(client_id);
        });
    }
}
