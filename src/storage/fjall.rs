//! The disk backend: one fjall database with a keyspace per kind of record.
//!
//! | keyspace        | key                              | value                         |
//! |-----------------|----------------------------------|-------------------------------|
//! | `meta`          | `format`                         | the data dir's format version |
//! | `sessions`      | client                           | [`SessionRecord`]             |
//! | `subscriptions` | client ‖ filter text             | options, identifier           |
//! | `queues`        | client ‖ seq (u64 BE)            | the delivery and its message  |
//! | `inflight`      | client ‖ seq (u64 BE)            | sent / released + packet id   |
//! | `incoming`      | client ‖ packet id (u16 BE)      | (empty)                       |
//! | `retained`      | topic                            | the message                   |
//!
//! "client" is the length-prefixed client id ([`record::client_prefix`]). Each
//! operation is one fjall write batch, committed with `PersistMode::Buffer` (the
//! journal reaches the OS, so it survives `kill -9`); with fsync durability the
//! [`GroupCommit`] thread adds the fsync. A torn journal tail is fjall's to
//! recover: it replays every complete batch and drops the rest.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use fjall::{Database, Keyspace, KeyspaceCreateOptions, OwnedWriteBatch, PersistMode};

use super::group_commit::GroupCommit;
use super::record::{self, Clock};
use super::{
    DeliveryState, Error, Message, PublishWrite, QueuedDelivery, Recovered, RecoveredSession,
    SessionRecord, StoredSubscription, SyncPoint,
};
use crate::metrics::StorageLatency;
use crate::protocol::{ClientId, PacketId};

/// Block cache: reads are rare (resume, startup), so it stays small.
const CACHE_SIZE: u64 = 16 * 1024 * 1024;
/// One keyspace's memtable before it is flushed to a table: what bounds the RAM
/// that queued messages take, since offline queues live on disk (mosquitto #3273).
const MEMTABLE_SIZE: u64 = 16 * 1024 * 1024;

const FORMAT_KEY: &str = "format";

fn io(error: fjall::Error) -> Error {
    Error::Io(error.to_string())
}

/// The opened database and its keyspaces.
pub struct FjallStore {
    // Declared first so that it is dropped (its thread joined) before `db`.
    group_commit: Option<GroupCommit>,
    db: Database,
    sessions: Keyspace,
    subscriptions: Keyspace,
    queues: Keyspace,
    inflight: Keyspace,
    incoming: Keyspace,
    retained: Keyspace,
    dir: PathBuf,
    latency: Arc<StorageLatency>,
}

impl std::fmt::Debug for FjallStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FjallStore")
            .field("dir", &self.dir)
            .field("is_fsync", &self.group_commit.is_some())
            .finish_non_exhaustive()
    }
}

impl FjallStore {
    /// Opens or creates the database in `dir`; `is_fsync` starts group commit.
    pub fn open(dir: &Path, is_fsync: bool) -> Result<FjallStore, Error> {
        std::fs::create_dir_all(dir).map_err(|source| Error::DataDir {
            dir: dir.to_path_buf(),
            source,
        })?;
        let db = Database::builder(dir)
            .cache_size(CACHE_SIZE)
            .open()
            .map_err(|error| match error {
                fjall::Error::Locked => Error::InUse {
                    dir: dir.to_path_buf(),
                },
                fjall::Error::Io(source) => Error::DataDir {
                    dir: dir.to_path_buf(),
                    source,
                },
                other => Error::Io(format!("cannot open {}: {other}", dir.display())),
            })?;
        let keyspace = |name: &str| {
            db.keyspace(name, || {
                KeyspaceCreateOptions::default().max_memtable_size(MEMTABLE_SIZE)
            })
            .map_err(io)
        };
        check_format(&keyspace("meta")?, dir)?;
        let latency = Arc::new(StorageLatency::default());
        let group_commit = if is_fsync {
            let db = db.clone();
            let latency = latency.clone();
            Some(GroupCommit::start(Box::new(move || {
                let started = Instant::now();
                let synced = db.persist(PersistMode::SyncData).map_err(io);
                latency.sync.record(started.elapsed());
                synced
            }))?)
        } else {
            None
        };
        Ok(FjallStore {
            group_commit,
            sessions: keyspace("sessions")?,
            subscriptions: keyspace("subscriptions")?,
            queues: keyspace("queues")?,
            inflight: keyspace("inflight")?,
            incoming: keyspace("incoming")?,
            retained: keyspace("retained")?,
            dir: dir.to_path_buf(),
            db,
            latency,
        })
    }

    /// How long commits and fsyncs took.
    pub fn latency(&self) -> &StorageLatency {
        &self.latency
    }

    /// Commits one batch, timed: two clock reads and two relaxed adds beside a
    /// commit that takes microseconds.
    fn commit(&self, batch: OwnedWriteBatch) -> Result<(), Error> {
        let started = Instant::now();
        batch.commit().map_err(io)?;
        self.latency.commit.record(started.elapsed());
        if let Some(group_commit) = &self.group_commit {
            group_commit.committed();
        }
        Ok(())
    }

    pub fn commit_publish(&self, write: &PublishWrite<'_>) -> Result<(), Error> {
        let clock = Clock::now();
        let mut batch = self.db.batch();
        for (client_id, entry) in &write.deliveries {
            let key = record::seq_key(client_id, entry.seq);
            if entry.state != DeliveryState::Queued {
                batch.insert(
                    &self.inflight,
                    key.clone(),
                    &record::encode_state(entry.state)[..],
                );
            }
            batch.insert(
                &self.queues,
                key,
                record::encode_delivery(&entry.delivery, clock),
            );
        }
        if let Some((client_id, packet_id)) = write.incoming {
            let key = record::packet_id_key(client_id, packet_id);
            batch.insert(&self.incoming, key, &[record::FORMAT][..]);
        }
        if let Some((client_id, session)) = write.session {
            let value = record::encode_session(session, clock);
            batch.insert(&self.sessions, record::client_prefix(client_id), value);
        }
        self.commit(batch)
    }

    /// Stores a retained message, or clears its topic when the payload is empty.
    pub fn put_retained(&self, message: &Message) -> Result<(), Error> {
        let topic = message.topic.as_str();
        let mut batch = self.db.batch();
        if message.payload.is_empty() {
            batch.remove(&self.retained, topic);
        } else {
            let value = record::encode_retained(message, Clock::now());
            batch.insert(&self.retained, topic, value);
        }
        self.commit(batch)
    }

    /// Every retained message that has not expired; those that expired while the
    /// broker was down are deleted ([MQTT-3.3.2-5]).
    pub fn retained(&self) -> Result<Vec<Arc<Message>>, Error> {
        let clock = Clock::now();
        let mut messages = Vec::new();
        let mut expired = self.db.batch();
        for guard in self.retained.iter() {
            let (key, value) = guard.into_inner().map_err(io)?;
            let message = record::decode_retained(value.into(), clock)?;
            if message.is_expired(clock.instant()) {
                expired.remove(&self.retained, key);
            } else {
                messages.push(Arc::new(message));
            }
        }
        if !expired.is_empty() {
            self.commit(expired)?;
        }
        Ok(messages)
    }

    pub fn queue(&self, client_id: &ClientId) -> Result<Vec<QueuedDelivery>, Error> {
        let clock = Clock::now();
        let prefix = record::client_prefix(client_id);
        let mut states = std::collections::HashMap::new();
        for guard in self.inflight.prefix(&prefix) {
            let (key, value) = guard.into_inner().map_err(io)?;
            let (_, rest) = record::split_key(&key)?;
            states.insert(record::key_seq(rest)?, record::decode_state(value.into())?);
        }
        let mut queue = Vec::new();
        for guard in self.queues.prefix(&prefix) {
            let (key, value) = guard.into_inner().map_err(io)?;
            let (_, rest) = record::split_key(&key)?;
            let seq = record::key_seq(rest)?;
            queue.push(QueuedDelivery {
                seq,
                delivery: record::decode_delivery(Bytes::from(value), seq, clock)?,
                state: states.remove(&seq).unwrap_or(DeliveryState::Queued),
            });
        }
        Ok(queue)
    }

    pub fn set_state(
        &self,
        client_id: &ClientId,
        seq: u64,
        state: DeliveryState,
    ) -> Result<(), Error> {
        let mut batch = self.db.batch();
        let key = record::seq_key(client_id, seq);
        match state {
            DeliveryState::Queued => batch.remove(&self.inflight, key),
            _ => batch.insert(&self.inflight, key, &record::encode_state(state)[..]),
        }
        self.commit(batch)
    }

    pub fn remove(&self, client_id: &ClientId, seq: u64) -> Result<(), Error> {
        let mut batch = self.db.batch();
        let key = record::seq_key(client_id, seq);
        batch.remove(&self.inflight, key.clone());
        batch.remove(&self.queues, key);
        self.commit(batch)
    }

    pub fn remove_incoming(&self, client_id: &ClientId, packet_id: PacketId) -> Result<(), Error> {
        let mut batch = self.db.batch();
        batch.remove(&self.incoming, record::packet_id_key(client_id, packet_id));
        self.commit(batch)
    }

    pub fn incoming(&self, client_id: &ClientId) -> Result<Vec<PacketId>, Error> {
        let mut ids = Vec::new();
        for guard in self.incoming.prefix(record::client_prefix(client_id)) {
            let key = guard.key().map_err(io)?;
            let (_, rest) = record::split_key(&key)?;
            let id: [u8; 2] = rest
                .try_into()
                .map_err(|_| Error::Corrupt("incoming key without a packet id".into()))?;
            ids.extend(PacketId::new(u16::from_be_bytes(id)));
        }
        Ok(ids)
    }

    pub fn save_session(&self, client_id: &ClientId, record: &SessionRecord) -> Result<(), Error> {
        let mut batch = self.db.batch();
        let value = record::encode_session(record, Clock::now());
        batch.insert(&self.sessions, record::client_prefix(client_id), value);
        self.commit(batch)
    }

    pub fn save_subscription(&self, subscription: &StoredSubscription) -> Result<(), Error> {
        let mut batch = self.db.batch();
        let key = record::filter_key(&subscription.client_id, &subscription.filter);
        let value = record::encode_subscription(subscription.options, subscription.identifier);
        batch.insert(&self.subscriptions, key, &value[..]);
        self.commit(batch)
    }

    pub fn remove_subscription(&self, client_id: &ClientId, filter: &str) -> Result<(), Error> {
        let mut batch = self.db.batch();
        batch.remove(&self.subscriptions, record::filter_key(client_id, filter));
        self.commit(batch)
    }

    pub fn delete_session(&self, client_id: &ClientId) -> Result<(), Error> {
        let prefix = record::client_prefix(client_id);
        let mut batch = self.db.batch();
        batch.remove(&self.sessions, prefix.clone());
        for keyspace in [
            &self.subscriptions,
            &self.queues,
            &self.inflight,
            &self.incoming,
        ] {
            for guard in keyspace.prefix(&prefix) {
                batch.remove(keyspace, guard.key().map_err(io)?);
            }
        }
        self.commit(batch)
    }

    pub fn sync_point(&self) -> SyncPoint {
        self.group_commit
            .as_ref()
            .map(GroupCommit::sync_point)
            .unwrap_or_default()
    }

    pub async fn wait_durable(&self, point: SyncPoint) -> Result<(), Error> {
        match &self.group_commit {
            Some(group_commit) => group_commit.wait(point).await,
            None => Ok(()),
        }
    }

    pub fn sync(&self) -> Result<(), Error> {
        self.db.persist(PersistMode::SyncAll).map_err(io)
    }

    /// Reads everything back at startup, in one pass per keyspace. Records that
    /// belong to no session (a crash between two writes of a session's end, say)
    /// are deleted.
    pub fn recover(&self) -> Result<Recovered, Error> {
        let clock = Clock::now();
        let mut recovered = Recovered::default();
        let mut index = std::collections::HashMap::new();
        for guard in self.sessions.iter() {
            let (key, value) = guard.into_inner().map_err(io)?;
            let (client_id, _) = record::split_key(&key)?;
            index.insert(client_id.clone(), recovered.sessions.len());
            recovered.sessions.push(RecoveredSession {
                client_id,
                record: record::decode_session(value.into(), clock)?,
                queued: 0,
                max_seq: 0,
            });
        }
        let mut orphans = self.db.batch();
        for guard in self.queues.iter() {
            let key = guard.key().map_err(io)?;
            let (client_id, rest) = record::split_key(&key)?;
            let seq = record::key_seq(rest)?;
            match index
                .get(&client_id)
                .and_then(|&i| recovered.sessions.get_mut(i))
            {
                Some(session) => {
                    session.queued += 1;
                    session.max_seq = session.max_seq.max(seq);
                }
                None => orphans.remove(&self.queues, key),
            }
        }
        for keyspace in [&self.inflight, &self.incoming] {
            for guard in keyspace.iter() {
                let key = guard.key().map_err(io)?;
                if !index.contains_key(&record::split_key(&key)?.0) {
                    orphans.remove(keyspace, key);
                }
            }
        }
        for guard in self.subscriptions.iter() {
            let (key, value) = guard.into_inner().map_err(io)?;
            let (client_id, filter) = record::split_key(&key)?;
            if !index.contains_key(&client_id) {
                orphans.remove(&self.subscriptions, key.clone());
                continue;
            }
            let filter = String::from_utf8(filter.to_vec())
                .map_err(|_| Error::Corrupt("filter not UTF-8".into()))?;
            let (options, identifier) = record::decode_subscription(value.into())?;
            recovered.subscriptions.push(StoredSubscription {
                client_id,
                filter,
                options,
                identifier,
            });
        }
        if !orphans.is_empty() {
            tracing::info!(
                records = orphans.len(),
                "deleting records of ended sessions"
            );
            self.commit(orphans)?;
        }
        Ok(recovered)
    }
}

/// Refuses a data dir written by a newer release; stamps a new one, and an older
/// one with this release's format: records written from now on may be in it, so
/// the older release must refuse the dir rather than meet a record it cannot read.
/// Records already there keep their format; each is read by its own decoder.
fn check_format(meta: &Keyspace, dir: &Path) -> Result<(), Error> {
    let found = meta
        .get(FORMAT_KEY)
        .map_err(io)?
        .map(|value| value.first().copied().unwrap_or(0));
    match found {
        Some(found) if found > record::FORMAT => Err(Error::NewerDataDir {
            dir: dir.to_path_buf(),
            found,
            known: record::FORMAT,
        }),
        Some(record::FORMAT) => Ok(()),
        _ => meta.insert(FORMAT_KEY, &[record::FORMAT][..]).map_err(io),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::message::Delivery;
    use crate::protocol::{Properties, QoS, TopicName};

    fn delivery(seq: u64, payload: &'static str) -> QueuedDelivery {
        QueuedDelivery {
            seq,
            delivery: Delivery {
                message: Arc::new(Message {
                    topic: TopicName::new("t").unwrap(),
                    payload: Bytes::from_static(payload.as_bytes()),
                    qos: QoS::AtLeastOnce,
                    retain: false,
                    properties: Properties::default(),
                    expires_at: None,
                }),
                qos: QoS::AtLeastOnce,
                retain: false,
                subscription_ids: vec![],
                seq: Some(seq),
            },
            state: DeliveryState::Queued,
        }
    }

    #[test]
    fn queue_and_state_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let a = ClientId::new("a");
        let id = PacketId::new(7).unwrap();
        {
            let store = FjallStore::open(dir.path(), false).unwrap();
            let record = SessionRecord::Online {
                expiry: None,
                will: None,
            };
            store.save_session(&a, &record).unwrap();
            let write = PublishWrite {
                deliveries: vec![(a.clone(), delivery(1, "x")), (a.clone(), delivery(2, "y"))],
                incoming: Some((&a, id)),
                ..PublishWrite::default()
            };
            store.commit_publish(&write).unwrap();
            store.set_state(&a, 1, DeliveryState::Sent(id)).unwrap();
        }
        let store = FjallStore::open(dir.path(), false).unwrap();
        let queue = store.queue(&a).unwrap();
        assert_eq!(queue.len(), 2);
        assert_eq!(queue[0].state, DeliveryState::Sent(id));
        assert_eq!(&queue[1].delivery.message.payload[..], b"y");
        assert_eq!(store.incoming(&a).unwrap(), vec![id]);
        let recovered = store.recover().unwrap();
        assert_eq!(recovered.sessions[0].queued, 2);
        assert_eq!(recovered.sessions[0].max_seq, 2);
    }

    #[test]
    fn orphaned_records_are_deleted_at_recovery() {
        let dir = tempfile::tempdir().unwrap();
        let store = FjallStore::open(dir.path(), false).unwrap();
        let b = ClientId::new("b");
        store.enqueue_for_test(&b);
        assert!(store.recover().unwrap().sessions.is_empty());
        assert!(store.queue(&b).unwrap().is_empty());
    }

    #[test]
    fn newer_data_dir_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = Database::builder(dir.path()).open().unwrap();
            let meta = db.keyspace("meta", KeyspaceCreateOptions::default).unwrap();
            meta.insert(FORMAT_KEY, &[record::FORMAT + 1][..]).unwrap();
        }
        let error = FjallStore::open(dir.path(), false).unwrap_err();
        assert!(matches!(error, Error::NewerDataDir { found, .. } if found == record::FORMAT + 1));
        assert!(error.to_string().contains("newer rookery"), "{error}");
    }

    #[test]
    fn format_1_data_dir_is_read_and_restamped() {
        let dir = tempfile::tempdir().unwrap();
        let old = ClientId::new("old");
        {
            let db = Database::builder(dir.path()).open().unwrap();
            let meta = db.keyspace("meta", KeyspaceCreateOptions::default).unwrap();
            meta.insert(FORMAT_KEY, &[1][..]).unwrap();
            let sessions = db
                .keyspace("sessions", KeyspaceCreateOptions::default)
                .unwrap();
            let value = include_bytes!("../../tests/fixtures/records/v1_session_online.bin");
            sessions
                .insert(record::client_prefix(&old), &value[..])
                .unwrap();
        }
        let store = FjallStore::open(dir.path(), false).unwrap();
        let recovered = store.recover().unwrap();
        assert_eq!(recovered.sessions[0].client_id, old);
        assert_eq!(
            recovered.sessions[0].record,
            SessionRecord::Online {
                expiry: Some(std::time::Duration::from_secs(30)),
                will: None,
            }
        );
        drop(store);
        let db = Database::builder(dir.path()).open().unwrap();
        let meta = db.keyspace("meta", KeyspaceCreateOptions::default).unwrap();
        let stamp = meta.get(FORMAT_KEY).unwrap().unwrap();
        assert_eq!(&stamp[..], &[record::FORMAT][..]);
    }

    impl FjallStore {
        fn enqueue_for_test(&self, client_id: &ClientId) {
            let write = PublishWrite {
                deliveries: vec![(client_id.clone(), delivery(1, "x"))],
                ..PublishWrite::default()
            };
            self.commit_publish(&write).unwrap();
        }
    }
}
