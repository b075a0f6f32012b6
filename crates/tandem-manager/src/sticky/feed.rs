//! Sticky mode's peer feed: how a server tells the others to drop their copy of a
//! session, so that a copy left behind is not served after the session moved on.
//!
//! In sticky mode every server trusts the copy of a session it holds, without asking
//! the remote tier (that is what makes a read free). A copy can outlive its
//! truth: the load balancer sends a client elsewhere and that server takes the session
//! over, or logs it out, or gives it a new id, while the old server keeps its copy and
//! would go on serving it to whoever presents the old id. So whenever a server takes a
//! session's copy from the remote tier (a takeover, or a reload) or ends its id, it
//! *announces* the id in the feed; every other server reads the feed every
//! [`peer_feed_interval`](super::ManagerBuilder::peer_feed_interval) and drops its own
//! copy of each announced id. The cost does not grow with the number of sessions: one
//! remote read per interval per server, and one write per announcement.
//!
//! The feed lives in the remote tier, as one item per [`BUCKET`] of wall-clock time
//! (`<prefix>feed:<bucket>`), to which announcements are appended. It is written to
//! every node that answers and read from the first node that answers in ring order,
//! so that one node failing loses nothing. A reader reads the buckets that cover the
//! present time give or take [`CLOCK_SKEW`], remembering how much of each it has
//! read, so that servers whose clocks differ by up to that much miss nothing.
//!
//! An announcement names the session by its storage id, the part of its id without
//! the route: the same secret as memcached's keys. With a storage key secret
//! configured (so that memcached's keys do not reveal ids), announcements are
//! encrypted with a key derived from that secret (AES-256-GCM), so the feed reveals
//! nothing either.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use parking_lot::Mutex;
use tokio::sync::mpsc;

use tandem_core::Codec;
use tandem_core::Ttl;
use tandem_core::{KeySecret, StoreKey};
use tandem_core::{NodeId, SessionId};

use super::Engine;
use crate::common::local_key::local_key;
use crate::common::stats::Counters;

/// How much wall-clock time one feed item covers.
const BUCKET: Duration = Duration::from_secs(8);
/// How far the servers' clocks may differ without an announcement being missed.
pub(crate) const CLOCK_SKEW: Duration = Duration::from_secs(2);
/// How long a feed item lives: long past the last read of its bucket.
const ITEM_TTL: Duration = Duration::from_secs(60);
/// At most this many announcements wait to be written; beyond, they are dropped
/// (counted, logged).
const QUEUE: usize = 10_000;
/// At most this many announcements go into one append.
pub(crate) const PER_APPEND: usize = 256;

/// The format version of an announcement.
const VERSION: u8 = 1;
/// AES-GCM's nonce and tag.
const NONCE_LEN: usize = 12;

/// The peer feed of one manager.
pub(crate) struct Feed {
    /// Whether the feed runs (sticky mode with a feed interval).
    on: bool,
    counters: Arc<Counters>,
    /// Tells this server's announcements apart from the others' when reading.
    instance: u64,
    cipher: Option<Aes256Gcm>,
    queue: mpsc::Sender<SessionId>,
    reader: Mutex<Reader>,
    /// Whether a read of the feed is running: the next tick waits for it.
    reading: AtomicBool,
}

/// Where reading the feed stands.
#[derive(Default)]
struct Reader {
    /// The node read last: another node's items hold the same announcements at other
    /// offsets, so a change of node starts the buckets over.
    node: Option<NodeId>,
    /// Per bucket, how many bytes of its item were read.
    read: HashMap<u64, usize>,
}

impl Feed {
    /// A feed; the receiving end goes to the dispatcher, which writes what arrives.
    pub(crate) fn new(
        secret: Option<&KeySecret>,
        on: bool,
        counters: Arc<Counters>,
    ) -> (Feed, mpsc::Receiver<SessionId>) {
        let (queue, announcements) = mpsc::channel(QUEUE);
        let cipher = secret.map(|secret| {
            let key = secret.derive(b"tandem peer feed", b"");
            Aes256Gcm::new(&key.into())
        });
        let feed = Feed {
            on,
            counters,
            instance: rand::random::<u64>(),
            cipher,
            queue,
            reader: Mutex::new(Reader::default()),
            reading: AtomicBool::new(false),
        };
        (feed, announcements)
    }

    /// Announces that this server took `id`'s copy from the remote tier or ended it:
    /// the other servers drop their copies. Never waits: the announcement is queued
    /// for the dispatcher, or dropped (counted) if the queue is full.
    pub(crate) fn announce(&self, id: &SessionId) {
        if !self.on {
            return;
        }
        if self.queue.try_send(id.clone()).is_err() {
            Counters::add(&self.counters.peer_announcements_dropped);
            tracing::warn!(session = %id.redacted(), "peer feed queue full; an announcement is dropped");
        }
    }

    /// One announcement, as appended to a feed item: version, instance, length,
    /// then the storage id (encrypted, with its nonce, when there is a cipher).
    fn encode(&self, id: &SessionId, out: &mut Vec<u8>) {
        let storage = id.storage_id().as_bytes();
        let payload = match &self.cipher {
            None => storage.to_vec(),
            Some(cipher) => {
                let nonce: [u8; NONCE_LEN] = rand::random();
                let sealed = cipher
                    .encrypt(
                        &Nonce::from(nonce),
                        Payload {
                            msg: storage,
                            aad: &self.instance.to_le_bytes(),
                        },
                    )
                    .unwrap_or_default();
                [&nonce[..], &sealed].concat()
            }
        };
        // A storage id is at most 120 bytes, sealed at most 148: the length fits.
        let Ok(len) = u8::try_from(payload.len()) else {
            return;
        };
        out.push(VERSION);
        out.extend_from_slice(&self.instance.to_le_bytes());
        out.push(len);
        out.extend_from_slice(&payload);
    }

    /// The storage ids announced by other servers in `bytes`. Stops at the first
    /// malformed announcement (the rest of that item cannot be framed): anyone who
    /// can write to memcached could put garbage there, and garbage only ever drops
    /// copies, which then reload.
    fn decode(&self, mut bytes: &[u8]) -> Vec<String> {
        let mut ids = Vec::new();
        while let [VERSION, rest @ ..] = bytes {
            let Some((instance, rest)) = rest.split_first_chunk::<8>() else {
                break;
            };
            let Some((&len, rest)) = rest.split_first() else {
                break;
            };
            let Some((payload, rest)) = rest.split_at_checked(usize::from(len)) else {
                break;
            };
            bytes = rest;
            if u64::from_le_bytes(*instance) == self.instance {
                continue;
            }
            let storage = match &self.cipher {
                None => Some(payload.to_vec()),
                Some(cipher) => payload
                    .split_at_checked(NONCE_LEN)
                    .and_then(|(nonce, sealed)| {
                        let nonce: [u8; NONCE_LEN] = nonce.try_into().ok()?;
                        cipher
                            .decrypt(
                                &Nonce::from(nonce),
                                Payload {
                                    msg: sealed,
                                    aad: instance,
                                },
                            )
                            .ok()
                    }),
            };
            // Only what parses as a session's storage id: garbage is skipped.
            if let Some(storage) = storage
                .and_then(|storage| String::from_utf8(storage).ok())
                .filter(|storage| SessionId::parse(storage).is_ok())
            {
                ids.push(storage);
            }
        }
        ids
    }
}

/// The bucket of a wall-clock time.
fn bucket(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs() / BUCKET.as_secs())
}

impl<C: Codec> Engine<C> {
    fn feed_key(&self, bucket: u64) -> StoreKey {
        let text = format!("{}feed:{bucket}", self.common.config.prefix.as_str());
        // The prefix is validated printable ASCII of at most 64 bytes.
        StoreKey::new(&text).unwrap_or_else(|_| unreachable!("a valid feed key: {text}"))
    }

    /// Writes announcements the dispatcher took from the queue, as one append to the
    /// current bucket's item on every node that answers.
    pub(super) async fn publish(&self, ids: Vec<SessionId>) {
        let mut bytes = Vec::new();
        for id in &ids {
            self.feed.encode(id, &mut bytes);
        }
        let count = u64::try_from(ids.len()).unwrap_or(u64::MAX);
        let key = self.feed_key(bucket(self.common.wall()));
        let nodes: Vec<NodeId> = self
            .common
            .ring()
            .filter(|node| self.common.store.is_available(node))
            .cloned()
            .collect();
        let mut landed = false;
        for node in nodes {
            match self
                .common
                .store
                .append(&node, &key, &bytes, Ttl::After(ITEM_TTL))
                .await
            {
                Ok(()) => landed = true,
                Err(error) => {
                    tracing::debug!(%node, %error, "peer feed not written to this node");
                }
            }
        }
        let counter = if landed {
            &self.common.counters.peer_announcements
        } else {
            tracing::warn!(count, "peer feed written to no node; announcements dropped");
            &self.common.counters.peer_announcements_dropped
        };
        counter.fetch_add(count, Ordering::Relaxed);
    }

    /// Called every feed interval: reads what other servers announced since the last
    /// read, and drops this server's copies of those sessions. Runs in a task of its
    /// own; a tick that finds the last read still running skips.
    pub(super) fn read_feed(self: &Arc<Self>) {
        if !self.feed.on || self.feed.reading.swap(true, Ordering::AcqRel) {
            return;
        }
        let inner = Arc::clone(self);
        tokio::spawn(async move {
            inner.read_feed_now().await;
            inner.feed.reading.store(false, Ordering::Release);
        });
    }

    async fn read_feed_now(self: &Arc<Self>) {
        if self.local.entry_count() == 0 {
            // Nothing held, nothing to drop. The next read starts the window over,
            // so that it also drops copies taken meanwhile of sessions announced
            // meanwhile.
            self.feed.reader.lock().read.clear();
            return;
        }
        let Some(node) = self
            .common
            .ring()
            .find(|node| self.common.store.is_available(node))
            .cloned()
        else {
            return;
        };
        let now = self.common.wall();
        let first = bucket(now.checked_sub(CLOCK_SKEW).unwrap_or(now));
        let last = bucket(now + CLOCK_SKEW);
        {
            let mut reader = self.feed.reader.lock();
            if reader.node.as_ref() != Some(&node) {
                reader.node = Some(node.clone());
                reader.read.clear();
            }
            reader.read.retain(|bucket, _| *bucket >= first);
        }
        for bucket in first..=last {
            let item = match self.common.store.get(&node, &self.feed_key(bucket)).await {
                Ok(item) => item,
                Err(error) => {
                    tracing::debug!(%node, %error, "peer feed not read");
                    return;
                }
            };
            let Some(item) = item else {
                continue;
            };
            let fresh = {
                let mut reader = self.feed.reader.lock();
                let read = reader.read.entry(bucket).or_insert(0);
                let fresh = item.value.get(*read..).map(<[u8]>::to_vec);
                *read = item.value.len();
                fresh
            };
            for storage in self.feed.decode(&fresh.unwrap_or_default()) {
                self.drop_announced(&storage);
            }
        }
    }

    /// Drops this server's copy of a session another server announced.
    fn drop_announced(self: &Arc<Self>, storage: &str) {
        let Some(entry) = self.local.get(storage) else {
            return;
        };
        let id = entry.id();
        if id.storage_id() != storage {
            // Found under the announced key as its id changes (a login cycling it):
            // the announcement is about the id the session is leaving.
            return;
        }
        let unsaved = {
            let state = entry.state.lock();
            state.revision > state.backed_up
        };
        if unsaved {
            // Changes not backed up yet must not go with the copy: the announcement
            // may be older than this server's own load of the session (a server that
            // just started reads the feed's items from their start). The conditional
            // backup settles it: refused if another server wrote the copy since (this
            // copy is then dropped as no longer its own), written otherwise, and then
            // announced in turn, so that the announcer drops its older copy.
            let inner = Arc::clone(self);
            tokio::spawn(async move {
                if inner.run_backup(&entry).await.is_ok() && !entry.is_retired() {
                    inner.announce(&entry.id());
                }
            });
            return;
        }
        Counters::add(&self.common.counters.stale_copies_dropped);
        tracing::debug!(session = %id.redacted(), "another server took this session's copy or ended it; the local copy is dropped");
        self.discard(&local_key(&id), &entry);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tandem_core::NodeId;

    fn id() -> SessionId {
        SessionId::generate(&NodeId::new("n1").unwrap(), None)
    }

    #[test]
    fn announcements_round_trip_between_servers_and_skip_their_own() {
        for secret in [None, Some(KeySecret::new(&[9; 32]).unwrap())] {
            let (a, _) = Feed::new(secret.as_ref(), true, Arc::default());
            let (b, _) = Feed::new(secret.as_ref(), true, Arc::default());
            let ids = [id(), id(), id()];
            let mut bytes = Vec::new();
            for id in &ids {
                a.encode(id, &mut bytes);
            }
            let expected: Vec<String> = ids.iter().map(|id| id.storage_id().to_owned()).collect();
            assert_eq!(b.decode(&bytes), expected);
            assert!(a.decode(&bytes).is_empty(), "a server skips its own");
            if secret.is_some() {
                let text = String::from_utf8_lossy(&bytes);
                assert!(ids.iter().all(|id| !text.contains(id.random())));
                let (other, _) = Feed::new(
                    Some(&KeySecret::new(&[8; 32]).unwrap()),
                    true,
                    Arc::default(),
                );
                assert!(
                    other.decode(&bytes).is_empty(),
                    "another secret opens nothing"
                );
            }
        }
    }

    #[test]
    fn garbage_and_truncation_stop_decoding_without_panics() {
        let (a, _) = Feed::new(None, true, Arc::default());
        let (b, _) = Feed::new(None, true, Arc::default());
        let mut bytes = Vec::new();
        a.encode(&id(), &mut bytes);
        a.encode(&id(), &mut bytes);
        for cut in 0..bytes.len() {
            assert!(b.decode(&bytes[..cut]).len() <= 1);
        }
        assert!(b.decode(&[0xff; 64]).is_empty());
        assert!(b.decode(&[VERSION; 64]).is_empty());
    }
}
