//! The remote-store trait: node-addressed operations on a set of remote nodes.
//!
//! The caller names the node of every operation (the node is part of the session id),
//! so a key always goes to exactly the node the caller chose; nothing is hashed or
//! rerouted behind its back. Implementations: [`MemoryStore`](crate::MemoryStore)
//! in-process, and the memcached store in `tandem-memcached`.

use std::time::{Duration, SystemTime};

use async_trait::async_trait;

use crate::id::NodeId;
use crate::key::StoreKey;

/// The largest value a store accepts unless configured otherwise: 1 MiB (memcached's
/// default `-I 1m`). Each store reports its own limit through
/// [`RemoteStore::max_item_size`].
pub const DEFAULT_MAX_ITEM_SIZE: usize = 1024 * 1024;

/// How long a stored item lives.
///
/// ```
/// use std::time::Duration;
/// use tandem_core::Ttl;
///
/// assert_eq!(Ttl::from_max_inactive(None), Ttl::Never);
/// assert_eq!(Ttl::from_max_inactive(Some(Duration::ZERO)), Ttl::Never);
/// assert_eq!(Ttl::After(Duration::from_millis(1500)).whole_seconds(), Some(2));
/// assert_eq!(Ttl::After(Duration::from_micros(1500)).millis(), Some(2));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ttl {
    /// The item never expires (it may still be evicted for space).
    Never,
    /// The item expires this long after the operation, never sooner. Each store
    /// rounds the lifetime up to its own resolution (memcached: whole seconds, plus
    /// the second its expiry clock may be early; Redis and [`MemoryStore`]
    /// (crate::MemoryStore): milliseconds), so a positive lifetime never turns into
    /// "expired at once" or "never".
    After(Duration),
}

impl Ttl {
    /// The TTL for a session's max inactive interval: `None` or zero means never.
    pub fn from_max_inactive(max_inactive: Option<Duration>) -> Ttl {
        match max_inactive {
            Some(interval) if !interval.is_zero() => Ttl::After(interval),
            _ => Ttl::Never,
        }
    }

    /// The lifetime in whole milliseconds (rounded up, at least 1, saturating at
    /// `u64::MAX`); `None` for [`Ttl::Never`].
    pub fn millis(self) -> Option<u64> {
        match self {
            Ttl::Never => None,
            Ttl::After(duration) => {
                let millis = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
                let partial = u64::from(duration.subsec_nanos() % 1_000_000 > 0);
                Some(millis.saturating_add(partial).max(1))
            }
        }
    }

    /// The lifetime in whole seconds (rounded up, at least 1, saturating at
    /// `u32::MAX`); `None` for [`Ttl::Never`].
    pub fn whole_seconds(self) -> Option<u32> {
        match self {
            Ttl::Never => None,
            Ttl::After(duration) => {
                let seconds = duration
                    .as_secs()
                    .saturating_add(u64::from(duration.subsec_nanos() > 0));
                Some(u32::try_from(seconds.max(1)).unwrap_or(u32::MAX))
            }
        }
    }
}

/// One node's health, as a store reports it through [`RemoteStore::node_status`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct NodeStatus {
    /// The node.
    pub id: NodeId,
    /// Where it is, as configured (`host:port`), if the store has an address.
    pub address: Option<String>,
    /// Whether operations are sent to it.
    pub up: bool,
    /// Since when it is down; `None` while up.
    pub down_since: Option<SystemTime>,
    /// The most recent failure, with its time.
    pub last_error: Option<(String, SystemTime)>,
    /// Operations sent to the node.
    pub operations: u64,
    /// Operations that failed.
    pub failures: u64,
    /// How often the node went from up to down.
    pub down_transitions: u64,
    /// Mean latency of the operations that got an answer, if the store measures it.
    pub mean_latency: Option<Duration>,
    /// Reads that went out pipelined together with other reads, in one exchange,
    /// because the node's read exchanges were all busy; 0 for a store that does not
    /// coalesce reads. Counted in `operations` too.
    pub coalesced_reads: u64,
    /// Operations that waited because the node's connection limit was reached (every
    /// connection busy); 0 for a store without such a limit.
    pub connection_waits: u64,
}

impl NodeStatus {
    /// A status that says only whether `id` is up.
    pub fn up_or_down(id: NodeId, up: bool) -> NodeStatus {
        NodeStatus {
            id,
            address: None,
            up,
            down_since: None,
            last_error: None,
            operations: 0,
            failures: 0,
            down_transitions: 0,
            mean_latency: None,
            coalesced_reads: 0,
            connection_waits: 0,
        }
    }
}

/// An opaque compare-and-swap token: what [`RemoteStore::get`] and
/// [`RemoteStore::get_with_ttl`] read with an item, and what
/// [`WriteOutcome::Stored`] returns after a write. Every write to the item (an
/// append included) changes it; a touch does not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CasToken(pub u64);

/// A stored item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// The stored bytes.
    pub value: Vec<u8>,
    /// Token for a later [`RemoteStore::cas`], [`Precondition::Cas`] or
    /// [`RemoteStore::delete_if`].
    pub cas: CasToken,
}

/// One item of [`RemoteStore::set_many`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SetItem<'a> {
    /// Where to store it.
    pub key: &'a StoreKey,
    /// What to store.
    pub value: &'a [u8],
    /// How long it lives.
    pub ttl: Ttl,
}

/// What must hold for a [`RemoteStore::write`] to be applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precondition {
    /// Nothing: the write replaces whatever is stored (memcached `set`).
    None,
    /// The key must be absent (memcached `add`).
    Absent,
    /// The item must still have this CAS token (memcached `cas`).
    Cas(CasToken),
}

/// One item of [`RemoteStore::write_many`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteItem<'a> {
    /// Where to store it.
    pub key: &'a StoreKey,
    /// What to store.
    pub value: &'a [u8],
    /// How long it lives.
    pub ttl: Ttl,
    /// What must hold for the write to be applied.
    pub precondition: Precondition,
}

/// Outcome of [`RemoteStore::write`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteOutcome {
    /// The value is stored. Carries the item's new CAS token when the store reports
    /// it (memcached and [`MemoryStore`](crate::MemoryStore) do), so that the writer
    /// can make its next write conditional on nobody having written since.
    Stored(Option<CasToken>),
    /// [`Precondition::Absent`]: the key exists; nothing was written.
    Exists,
    /// [`Precondition::Cas`]: the item has another token; nothing was written.
    Conflict,
    /// [`Precondition::Cas`]: the item does not exist; nothing was written.
    NotFound,
}

/// Outcome of [`RemoteStore::add`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddOutcome {
    /// The key was absent and is now stored.
    Stored,
    /// The key already existed; nothing was written.
    Exists,
}

/// Outcome of [`RemoteStore::cas`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CasOutcome {
    /// The token matched and the value is stored.
    Stored,
    /// The item changed since the token was read; nothing was written.
    Conflict,
    /// The item no longer exists; nothing was written.
    NotFound,
}

/// Why a remote operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The node is marked down and was not contacted.
    #[error("node {node} is down")]
    NodeDown {
        /// The node.
        node: NodeId,
    },
    /// The operation did not finish within the operation timeout.
    #[error("node {node}: no answer within {after:?}")]
    Timeout {
        /// The node.
        node: NodeId,
        /// The timeout that expired.
        after: Duration,
    },
    /// The connection to the node failed.
    #[error("node {node} is unreachable: {message}")]
    Unreachable {
        /// The node.
        node: NodeId,
        /// What the transport reported.
        message: String,
    },
    /// The node answered with an error (or something unparseable).
    #[error("node {node} failed the operation: {message}")]
    Server {
        /// The node.
        node: NodeId,
        /// What the node reported.
        message: String,
    },
    /// The store has no node with this id.
    #[error("no node {node:?} is configured")]
    UnknownNode {
        /// The id asked for.
        node: String,
    },
    /// The value exceeds the store's item size limit; nothing was written.
    #[error("item of {size} bytes exceeds the store's limit of {limit} bytes")]
    TooLarge {
        /// Size of the rejected value.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The node applied the write, but fewer of its replicas than the store's
    /// durable setting asks for acknowledged it in time: a failover before they
    /// catch up may lose it. The node itself is fine.
    #[error(
        "node {node} applied the write, but only {acknowledged} of {wanted} replicas acknowledged it in time"
    )]
    Unreplicated {
        /// The node.
        node: NodeId,
        /// Replicas that acknowledged the write.
        acknowledged: u32,
        /// Replicas the setting asks for.
        wanted: u32,
    },
}

impl StoreError {
    /// Whether this error says the node is unusable (down, hung or unreachable), as
    /// opposed to a refusal of this one operation.
    pub fn is_node_failure(&self) -> bool {
        matches!(
            self,
            StoreError::NodeDown { .. }
                | StoreError::Timeout { .. }
                | StoreError::Unreachable { .. }
        )
    }
}

/// A set of remote nodes holding session bytes under [`StoreKey`]s.
///
/// Every operation names its node. Implementations must bound every operation in time
/// (a hung node costs at most one operation timeout) and must never block the async
/// runtime's worker threads.
#[async_trait]
pub trait RemoteStore: Send + Sync + 'static {
    /// Reads `key` with its CAS token; `Ok(None)` if absent.
    async fn get(&self, node: &NodeId, key: &StoreKey) -> Result<Option<Item>, StoreError>;

    /// Stores `value` under `key` unconditionally.
    async fn set(
        &self,
        node: &NodeId,
        key: &StoreKey,
        value: &[u8],
        ttl: Ttl,
    ) -> Result<(), StoreError>;

    /// Stores several items on `node` unconditionally, in one exchange where the store
    /// can (memcached: pipelined, one round trip); one result per item, in order. The
    /// default is [`write_many`](Self::write_many) without preconditions, so a store
    /// that batches its writes batches these too (and one that does not runs
    /// [`write`](Self::write), that is [`set`](Self::set), for each item in turn).
    async fn set_many(&self, node: &NodeId, items: &[SetItem<'_>]) -> Vec<Result<(), StoreError>> {
        let writes: Vec<WriteItem<'_>> = items
            .iter()
            .map(|item| WriteItem {
                key: item.key,
                value: item.value,
                ttl: item.ttl,
                precondition: Precondition::None,
            })
            .collect();
        self.write_many(node, &writes)
            .await
            .into_iter()
            .map(|result| result.map(|_| ()))
            .collect()
    }

    /// Stores `value` only if `key` is absent, and reports which happened.
    async fn add(
        &self,
        node: &NodeId,
        key: &StoreKey,
        value: &[u8],
        ttl: Ttl,
    ) -> Result<AddOutcome, StoreError>;

    /// Stores `value` only if the item still has the CAS token `cas`.
    async fn cas(
        &self,
        node: &NodeId,
        key: &StoreKey,
        value: &[u8],
        ttl: Ttl,
        cas: CasToken,
    ) -> Result<CasOutcome, StoreError>;

    /// Stores `value` under `key` if `precondition` holds, and reports what happened,
    /// with the item's new CAS token where the store knows it. The default maps the
    /// preconditions onto [`set`](Self::set), [`add`](Self::add) and
    /// [`cas`](Self::cas), and reports no token.
    async fn write(
        &self,
        node: &NodeId,
        key: &StoreKey,
        value: &[u8],
        ttl: Ttl,
        precondition: Precondition,
    ) -> Result<WriteOutcome, StoreError> {
        Ok(match precondition {
            Precondition::None => {
                self.set(node, key, value, ttl).await?;
                WriteOutcome::Stored(None)
            }
            Precondition::Absent => match self.add(node, key, value, ttl).await? {
                AddOutcome::Stored => WriteOutcome::Stored(None),
                AddOutcome::Exists => WriteOutcome::Exists,
            },
            Precondition::Cas(token) => match self.cas(node, key, value, ttl, token).await? {
                CasOutcome::Stored => WriteOutcome::Stored(None),
                CasOutcome::Conflict => WriteOutcome::Conflict,
                CasOutcome::NotFound => WriteOutcome::NotFound,
            },
        })
    }

    /// [`write`](Self::write) for several items on `node`, in one exchange where the
    /// store can (memcached: pipelined, one round trip); one result per item, in
    /// order. The default runs [`write`](Self::write) for each item in turn.
    async fn write_many(
        &self,
        node: &NodeId,
        items: &[WriteItem<'_>],
    ) -> Vec<Result<WriteOutcome, StoreError>> {
        let mut results = Vec::with_capacity(items.len());
        for item in items {
            results.push(
                self.write(node, item.key, item.value, item.ttl, item.precondition)
                    .await,
            );
        }
        results
    }

    /// Deletes `key`; returns whether it existed.
    async fn delete(&self, node: &NodeId, key: &StoreKey) -> Result<bool, StoreError>;

    /// Deletes `key` only if the item still has the CAS token `cas`: so that a holder
    /// removes only what it wrote (a lock it took, say), never what another writer
    /// put there since. [`CasOutcome::Stored`] means the item was deleted.
    async fn delete_if(
        &self,
        node: &NodeId,
        key: &StoreKey,
        cas: CasToken,
    ) -> Result<CasOutcome, StoreError>;

    /// Appends `value` to the item under `key`, or stores it there with `ttl` if the
    /// key is absent (the TTL of an existing item is left as it is). Concurrent
    /// appends all land, in some order. A value that would grow the item past the
    /// store's item limit fails with [`StoreError::TooLarge`] and changes nothing.
    async fn append(
        &self,
        node: &NodeId,
        key: &StoreKey,
        value: &[u8],
        ttl: Ttl,
    ) -> Result<(), StoreError>;

    /// Reads `key` with its CAS token and how long it has left to live
    /// ([`Ttl::Never`] if it never expires); `Ok(None)` if absent. Stores count whole
    /// seconds: the remaining time is rounded as the store keeps it.
    async fn get_with_ttl(
        &self,
        node: &NodeId,
        key: &StoreKey,
    ) -> Result<Option<(Item, Ttl)>, StoreError>;

    /// Sets a new TTL on `key` without rewriting it; returns whether it existed.
    async fn touch(&self, node: &NodeId, key: &StoreKey, ttl: Ttl) -> Result<bool, StoreError>;

    /// Reads `key` with its CAS token and sets a new TTL on it, in one operation where
    /// the store can (memcached's get-and-touch); `Ok(None)` if absent. The default
    /// runs [`get`](Self::get), then [`touch`](Self::touch) on a hit.
    async fn get_and_touch(
        &self,
        node: &NodeId,
        key: &StoreKey,
        ttl: Ttl,
    ) -> Result<Option<Item>, StoreError> {
        let item = self.get(node, key).await?;
        if item.is_some() {
            self.touch(node, key, ttl).await?;
        }
        Ok(item)
    }

    /// The ids of all configured nodes, in configuration order.
    fn nodes(&self) -> Vec<NodeId>;

    /// Whether `node` is currently believed usable. No network access: this reads the
    /// health state the operations maintain.
    fn is_available(&self, node: &NodeId) -> bool;

    /// The health of every node, in configuration order. The default knows only
    /// [`is_available`](Self::is_available); stores that track more report it.
    fn node_status(&self) -> Vec<NodeStatus> {
        self.nodes()
            .into_iter()
            .map(|node| {
                let up = self.is_available(&node);
                NodeStatus::up_or_down(node, up)
            })
            .collect()
    }

    /// The largest value the store accepts, in bytes.
    fn max_item_size(&self) -> usize {
        DEFAULT_MAX_ITEM_SIZE
    }

    /// Whether `node` keeps copies of its items by itself (a replicated deployment,
    /// such as a Redis master with replicas that fail over), so that a copy on another
    /// node adds nothing. `false` by default: a memcached node, or a lone server, loses
    /// its items with it.
    ///
    /// The manager uses it where a second node is missing: a non-sticky session on a
    /// single node that replicates itself needs no backup copy, and its commits say
    /// so instead of reporting the copy as failed.
    fn replicates(&self, node: &NodeId) -> bool {
        let _ = node;
        false
    }

    /// A number that changes whenever `node` may have lost or rolled back writes it had
    /// acknowledged: a failover to a replica, a restart of the server from older
    /// persistence files. Copies written under an older epoch may since have been
    /// replaced by older ones. 0 for a store that cannot tell (the default); it never
    /// changes for a node that keeps nothing across a failure (memcached: a restarted
    /// node is empty, which reads see).
    ///
    /// No network access: like [`is_available`](Self::is_available), it reads what the
    /// store's operations and health checks learned. Only a change means something;
    /// the manager compares it with the epoch it saw when it wrote a copy, and reads
    /// the copies of a node whose epoch changed more carefully for a while.
    ///
    /// ```
    /// use tandem_core::{MemoryStore, NodeId, RemoteStore};
    ///
    /// let n1 = NodeId::new("n1").unwrap();
    /// let store = MemoryStore::new([n1.clone()]);
    /// let before = store.node_epoch(&n1);
    /// store.fail_over(&n1, &store.snapshot(&n1).unwrap());
    /// assert_ne!(store.node_epoch(&n1), before);
    /// ```
    fn node_epoch(&self, node: &NodeId) -> u64 {
        let _ = node;
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_rounds_up_to_whole_milliseconds() {
        assert_eq!(Ttl::Never.millis(), None);
        assert_eq!(Ttl::After(Duration::ZERO).millis(), Some(1));
        assert_eq!(Ttl::After(Duration::from_nanos(1)).millis(), Some(1));
        assert_eq!(Ttl::After(Duration::from_millis(1500)).millis(), Some(1500));
        assert_eq!(
            Ttl::After(Duration::from_micros(1_500_001)).millis(),
            Some(1501)
        );
        assert_eq!(Ttl::After(Duration::MAX).millis(), Some(u64::MAX));
    }

    #[test]
    fn ttl_rounds_up_to_whole_seconds() {
        assert_eq!(Ttl::Never.whole_seconds(), None);
        assert_eq!(
            Ttl::After(Duration::from_millis(1)).whole_seconds(),
            Some(1)
        );
        assert_eq!(
            Ttl::After(Duration::from_secs(60)).whole_seconds(),
            Some(60)
        );
        assert_eq!(
            Ttl::After(Duration::from_secs(u64::MAX)).whole_seconds(),
            Some(u32::MAX)
        );
        // Rounding the fraction up must not overflow (and wrap to one second).
        assert_eq!(Ttl::After(Duration::MAX).whole_seconds(), Some(u32::MAX));
    }

    #[test]
    fn node_failures_are_told_apart_from_refusals() {
        let node = NodeId::new("n1").unwrap();
        assert!(StoreError::NodeDown { node: node.clone() }.is_node_failure());
        assert!(
            StoreError::Timeout {
                node: node.clone(),
                after: Duration::from_millis(100)
            }
            .is_node_failure()
        );
        assert!(!StoreError::TooLarge { size: 2, limit: 1 }.is_node_failure());
        assert!(
            !StoreError::Server {
                node,
                message: "out of memory".into()
            }
            .is_node_failure()
        );
    }
}
