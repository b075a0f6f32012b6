//! What both modes share and neither owns: the store and its node ring, the
//! configuration, storage keys, sealing and opening stored bytes, the checks a commit
//! makes before it writes, the ids this server ended, the counters, and the count of
//! background work in flight. Nothing here knows either mode.

pub(crate) mod background;
pub(crate) mod ends;
pub(crate) mod local_key;
pub(crate) mod merge;
pub(crate) mod stats;
pub(crate) mod ttl;

use std::hash::BuildHasher;
use std::sync::Arc;
use std::sync::LazyLock;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant, SystemTime};

use rand::RngExt;

use tandem_core::envelope;
use tandem_core::{
    Clock, Codec, CodecId, KeySpace, LayerError, NodeId, RemoteStore, Route, Session, SessionId,
    StoreKey,
};

use crate::config::{BackupMode, ManagerConfig};
use crate::error::{CommitError, OpenError};
use background::InFlight;
use ends::{EndReason, Ends};
use local_key::LocalKey;
use stats::Counters;

/// How long this server remembers the ids it ended, without asking the remote tier:
/// long enough for their tombstones to land (those whose node failed are remembered
/// until they do, in the ends waiting for their nodes).
const ENDED_MEMORY: Duration = Duration::from_secs(10);

/// The mode-neutral state of a manager, shared by its engine and background tasks.
pub(crate) struct Common {
    pub(crate) store: Arc<dyn RemoteStore>,
    pub(crate) config: ManagerConfig,
    /// The regular nodes, in configuration order; never empty (checked by the builder).
    pub(crate) regular: Vec<NodeId>,
    /// The failover nodes, used only while every regular node is down.
    pub(crate) failover: Vec<NodeId>,
    /// Ids the remote tier did not know, recently.
    pub(crate) negative: moka::sync::Cache<LocalKey, ()>,
    /// Ids this server ended recently (invalidated, cycled, expired), with why: they
    /// are answered as ended without a remote read, also before their tombstones land.
    pub(crate) ended: moka::sync::Cache<LocalKey, EndReason>,
    pub(crate) counters: Arc<Counters>,
    /// Where every time of the manager is read (`ManagerBuilder::clock`).
    pub(crate) clock: Arc<dyn Clock>,
    /// The instant `now_ms` counts from.
    origin: Instant,
    /// Set by `shutdown`: commits back up synchronously from then on.
    pub(crate) closing: AtomicBool,
    /// Set by `abort`: background work stops writing, as if the process had died.
    pub(crate) aborted: AtomicBool,
    /// Tombstones, deletion markers and deletes waiting for their nodes.
    pub(crate) ends: Ends,
    /// Remote work running in the background (queued backups, writes of ends, backup
    /// copies): what `pending_backups` counts and `shutdown` waits for.
    pub(crate) in_flight: Arc<InFlight>,
}

impl Common {
    /// The shared state of a manager over `store`.
    pub(crate) fn new(store: Arc<dyn RemoteStore>, config: ManagerConfig) -> Common {
        let (regular, failover): (Vec<NodeId>, Vec<NodeId>) = store
            .nodes()
            .into_iter()
            .partition(|node| !config.failover.contains(node));
        Common {
            store,
            regular,
            failover,
            negative: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(config.negative_cache_ttl.max(Duration::from_millis(1)))
                .build(),
            ended: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(ENDED_MEMORY)
                .build(),
            counters: Arc::new(Counters::default()),
            clock: Arc::clone(&config.clock),
            origin: config.clock.now(),
            closing: AtomicBool::new(false),
            aborted: AtomicBool::new(false),
            ends: Ends::default(),
            in_flight: Arc::new(InFlight::default()),
            config,
        }
    }

    /// Milliseconds since the manager started, by its clock: what entries record
    /// times in without a lock.
    pub(crate) fn now_ms(&self) -> u64 {
        u64::try_from(self.clock.since(self.origin).as_millis()).unwrap_or(u64::MAX)
    }

    /// How long a commit waits for its backup write, if it waits at all: the
    /// configured timeout in `BackupMode::Sync`, and during shutdown (when nothing is
    /// left to write it later) a retry interval, but at least a second, in either
    /// mode; `None` when the write goes to the background.
    pub(crate) fn sync_write_timeout(&self) -> Option<Duration> {
        if self.closing.load(std::sync::atomic::Ordering::Acquire) {
            return Some(self.config.retry_interval.max(Duration::from_secs(1)));
        }
        match self.config.backup {
            BackupMode::Sync { timeout } => Some(timeout),
            BackupMode::Async => None,
        }
    }

    /// The current monotonic instant, by the manager's clock.
    #[inline]
    pub(crate) fn now(&self) -> Instant {
        self.clock.now()
    }

    /// How long ago `earlier` was, by the manager's clock.
    #[inline]
    pub(crate) fn since(&self, earlier: Instant) -> Duration {
        self.clock.since(earlier)
    }

    /// The current wall-clock time, by the manager's clock.
    #[inline]
    pub(crate) fn wall(&self) -> SystemTime {
        self.clock.wall()
    }

    /// The key of `id` in `space`: from the id itself, or derived from the storage key
    /// secret if one is configured.
    pub(crate) fn key(&self, space: KeySpace, id: &SessionId) -> StoreKey {
        match &self.config.key_secret {
            None => self.config.prefix.key(space, id),
            Some(secret) => self.config.prefix.hashed_key(space, id, secret),
        }
    }

    pub(crate) fn store_key(&self, id: &SessionId) -> StoreKey {
        self.key(KeySpace::Session, id)
    }

    /// The ring of nodes: regular nodes in configuration order, then failover nodes.
    pub(crate) fn ring(&self) -> impl Iterator<Item = &NodeId> + Clone {
        self.regular.iter().chain(&self.failover)
    }

    /// Strict parsing before anything else: a malformed id or one naming no node of
    /// this store is no session at all.
    pub(crate) fn parse_incoming(&self, text: &str) -> Option<SessionId> {
        let id = SessionId::parse(text).ok().filter(|id| {
            self.regular
                .iter()
                .chain(&self.failover)
                .any(|node| node.as_str() == id.node())
        });
        if id.is_none() {
            Counters::add(&self.counters.invalid_ids);
        }
        id
    }

    pub(crate) fn node_of(&self, id: &SessionId) -> NodeId {
        self.node_ref(id).clone()
    }

    /// [`node_of`](Self::node_of) without the copy (a node id is a boxed string).
    pub(crate) fn node_ref(&self, id: &SessionId) -> &NodeId {
        // parse_incoming and every id this manager makes name a configured node.
        self.regular
            .iter()
            .chain(&self.failover)
            .find(|node| node.as_str() == id.node())
            .unwrap_or(&self.regular[0])
    }

    /// A live node for a new or relocated session: a random available regular node,
    /// else a random available failover node, else none.
    pub(crate) fn live_node(&self) -> Option<NodeId> {
        let pick = |nodes: &[NodeId]| {
            let live: Vec<&NodeId> = nodes
                .iter()
                .filter(|node| self.store.is_available(node))
                .collect();
            (!live.is_empty()).then(|| live[rand::rng().random_range(0..live.len())].clone())
        };
        pick(&self.regular).or_else(|| pick(&self.failover))
    }

    /// Opens stored bytes (through the configured layers) and decodes the envelope.
    pub(crate) fn decode<C: Codec>(
        &self,
        id: &SessionId,
        stored: &[u8],
    ) -> Result<Session<C>, OpenError> {
        let opened = self.config.layer.open(id, stored)?;
        Ok(envelope::decode::<C>(id.clone(), &opened)?)
    }

    /// The bytes to store for `session`: its envelope, sealed by the configured layers.
    pub(crate) fn seal<C: Codec>(&self, session: &Session<C>) -> Result<Vec<u8>, LayerError> {
        self.seal_envelope(session.id(), envelope::encode(session))
    }

    /// The bytes to store for the session `id` whose envelope is `envelope`.
    pub(crate) fn seal_envelope(
        &self,
        id: &SessionId,
        envelope: Vec<u8>,
    ) -> Result<Vec<u8>, LayerError> {
        self.config.layer.seal(id, envelope)
    }

    /// Refuses a request's changes if another request changed any of the same
    /// attributes since this one read them: a conflict even if both wrote the same
    /// bytes, because each may have derived its value from what it read (two
    /// increments from 0 both write 1).
    pub(crate) fn check_conflicts<C: Codec>(
        &self,
        request: &Session<C>,
        current: &Session<C>,
    ) -> Result<(), CommitError> {
        self.check_conflicts_with(request, current.id(), |name| {
            current
                .value(name)
                .map(|value| (value.codec(), value.bytes()))
        })
    }

    /// [`check_conflicts`](Self::check_conflicts) against a current state that
    /// `current` reads an attribute of (codec and bytes).
    pub(crate) fn check_conflicts_with<'a, C: Codec>(
        &self,
        request: &Session<C>,
        id: &SessionId,
        current: impl Fn(&str) -> Option<(CodecId, &'a [u8])>,
    ) -> Result<(), CommitError> {
        let conflicts: Vec<String> = request
            .changes()
            .filter(|change| {
                current(change.name)
                    != change
                        .original
                        .map(|original| (original.codec(), original.bytes()))
            })
            .map(|change| change.name.to_owned())
            .collect();
        if conflicts.is_empty() {
            return Ok(());
        }
        Counters::add(&self.counters.conflicts);
        tracing::debug!(session = %id.redacted(), ?conflicts, "concurrent change conflict");
        Err(CommitError::Conflict {
            attributes: conflicts,
        })
    }

    pub(crate) fn check_size<C: Codec>(&self, session: &Session<C>) -> Result<(), CommitError> {
        self.check_encoded_size(session.id(), envelope::encoded_len(session))
    }

    /// [`check_size`](Self::check_size) of the session `id` whose envelope is
    /// `encoded_len` bytes long.
    pub(crate) fn check_encoded_size(
        &self,
        id: &SessionId,
        encoded_len: usize,
    ) -> Result<(), CommitError> {
        let limit = self
            .config
            .max_session_size
            .unwrap_or_else(|| self.store.max_item_size());
        // What is stored is the envelope sealed by the layers, which may add to it
        // (encryption adds its header and tag): counted, so that a session that
        // passes here is never refused by the store.
        let size = encoded_len.saturating_add(self.config.layer.max_overhead());
        if size > limit {
            Counters::add(&self.counters.too_large);
            tracing::warn!(session = %id.redacted(), size, limit, "session too large; commit refused");
            return Err(CommitError::TooLarge { size, limit });
        }
        Ok(())
    }

    /// The nodes after `node` in ring order, wrapping around, without `node` itself.
    /// Read on every load: walks the ring in place rather than collecting it.
    pub(crate) fn ring_after(&self, node: &NodeId) -> impl Iterator<Item = &NodeId> + '_ {
        let len = self.ring().count();
        let start = self.ring().position(|candidate| candidate == node);
        start
            .into_iter()
            .flat_map(move |start| self.ring().cycle().skip(start + 1).take(len - 1))
    }

    /// The first available node after `node` in ring order (never `node` itself): where
    /// `node`'s sessions keep their backup, and where they move when `node` is down.
    pub(crate) fn successor(&self, node: &NodeId) -> Option<NodeId> {
        self.ring_after(node)
            .find(|candidate| self.store.is_available(candidate))
            .cloned()
    }

    /// The node right after `node` in ring order, available or not: where `node`'s
    /// sessions keep their backup copy whenever it answers.
    pub(crate) fn natural_successor(&self, node: &NodeId) -> Option<&NodeId> {
        self.ring_after(node).next()
    }

    /// Publishes the counters' totals and the gauges to the `metrics` facade, with the
    /// engine's own gauges (sessions held locally, background work pending).
    pub(crate) fn export_metrics(&self, local_sessions: u64, pending_backups: usize) {
        self.counters.export();
        metrics::gauge!("tandem_local_sessions").set(local_sessions as f64);
        metrics::gauge!("tandem_pending_backups").set(pending_backups as f64);
        for status in self.store.node_status() {
            let node = status.id.to_string();
            metrics::gauge!("tandem_node_up", "node" => node.clone()).set(if status.up {
                1.0
            } else {
                0.0
            });
            metrics::counter!("tandem_node_operations_total", "node" => node.clone())
                .absolute(status.operations);
            metrics::counter!("tandem_node_failures_total", "node" => node.clone())
                .absolute(status.failures);
            metrics::counter!("tandem_node_down_transitions_total", "node" => node.clone())
                .absolute(status.down_transitions);
            metrics::counter!("tandem_node_coalesced_reads_total", "node" => node.clone())
                .absolute(status.coalesced_reads);
            metrics::counter!("tandem_node_connection_waits_total", "node" => node)
                .absolute(status.connection_waits);
        }
        metrics::gauge!("tandem_pending_ends").set(self.ends.pending() as f64);
        let layers = self.config.layer.stats();
        metrics::counter!("tandem_layer_bytes_in_total").absolute(layers.bytes_in);
        metrics::counter!("tandem_layer_bytes_out_total").absolute(layers.bytes_out);
        metrics::counter!("tandem_layer_rejected_total").absolute(layers.rejected);
    }

    /// A new, empty session on a live node (any regular node if none is live), with
    /// `route` (sticky load balancing) if any. `unknown` is the id the client sent
    /// that no tier knew, counted.
    pub(crate) fn new_session<C: Codec>(
        &self,
        unknown: Option<&SessionId>,
        route: Option<&Route>,
    ) -> Session<C> {
        if unknown.is_some() {
            Counters::add(&self.counters.unknown_ids);
        }
        let node = self.live_node().unwrap_or_else(|| {
            Counters::add(&self.counters.degraded);
            self.regular[rand::rng().random_range(0..self.regular.len())].clone()
        });
        let id = SessionId::generate(&node, route);
        Session::new(id, self.wall(), self.config.max_inactive)
    }

    /// Whether this server knows `id` to have ended: it ended it recently, or a
    /// tombstone for it still waits for its node.
    pub(crate) fn ended_reason(&self, key: &LocalKey, id: &SessionId) -> Option<EndReason> {
        if let Some(reason) = self.ended.get(key) {
            return Some(reason);
        }
        if self.ends.pending() == 0 {
            return None;
        }
        self.ends
            .pending_tombstone(&self.node_of(id), &self.store_key(id))
    }
}

/// A digest of stored bytes, stable for the life of the process: tells whether the
/// remote copy is still the one this server last wrote or read, without keeping the
/// bytes. Digests are only ever compared within one process, so the seed is random
/// per process, which keeps crafted collisions out of reach. foldhash rather than
/// SipHash: every backup write digests the whole stored session, and SipHash took
/// about 1,400 instructions of a ~500-byte one (3% of a sticky write, callgrind).
pub(crate) fn digest(bytes: &[u8]) -> u64 {
    static STATE: LazyLock<foldhash::quality::SeedableRandomState> =
        LazyLock::new(foldhash::quality::SeedableRandomState::random);
    // 0 means "no known remote copy".
    STATE.hash_one(bytes).max(1)
}

/// Whether `current` is still the session that `incoming` named: the same random
/// part. A takeover (route) or a move to another node (node) keeps it; `cycle_id`
/// draws a new one. Cheap on the common request, where both share one text.
pub(crate) fn same_session(incoming: &SessionId, current: &SessionId) -> bool {
    incoming.shares_text_with(current) || incoming.random() == current.random()
}

/// `time` in Unix milliseconds (0 before the epoch), as envelopes store it.
pub(crate) fn unix_millis(time: SystemTime) -> u64 {
    time.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
        })
}
