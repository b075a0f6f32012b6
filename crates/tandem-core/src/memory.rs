//! [`MemoryStore`]: an in-process [`RemoteStore`] with several named nodes.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use parking_lot::Mutex;

use crate::clock::{Clock, SystemClock};
use crate::id::NodeId;
use crate::key::StoreKey;
use crate::store::{
    AddOutcome, CasOutcome, CasToken, DEFAULT_MAX_ITEM_SIZE, Item, Precondition, RemoteStore,
    StoreError, Ttl, WriteOutcome,
};

#[derive(Clone)]
struct Entry {
    value: Vec<u8>,
    cas: u64,
    expires: Option<Instant>,
}

impl Entry {
    fn live(&self, now: Instant) -> bool {
        self.expires.is_none_or(|at| now < at)
    }
}

struct MemoryNode {
    id: NodeId,
    up: AtomicBool,
    items: Mutex<HashMap<StoreKey, Entry>>,
    /// What [`RemoteStore::node_epoch`] answers: raised by every
    /// [`fail_over`](MemoryStore::fail_over).
    epoch: AtomicU64,
}

/// The items of one node of a [`MemoryStore`] at one moment, with their CAS tokens and
/// expiry times: what a replica that lags behind its master holds, or a persistence
/// file written then. Taken with [`MemoryStore::snapshot`], put back with
/// [`MemoryStore::fail_over`].
#[derive(Clone)]
pub struct NodeSnapshot {
    node: NodeId,
    items: HashMap<StoreKey, Entry>,
}

impl NodeSnapshot {
    /// The node the snapshot was taken of.
    pub fn node(&self) -> &NodeId {
        &self.node
    }

    /// How many items it holds (expired ones included: they stay expired when put back).
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether it holds no item.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

impl std::fmt::Debug for NodeSnapshot {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Keys may be session ids (credentials): only how many.
        formatter
            .debug_struct("NodeSnapshot")
            .field("node", &self.node)
            .field("items", &self.items.len())
            .finish()
    }
}

/// An in-process remote store: a map per named node, with the trait's semantics (TTLs in
/// milliseconds, CAS tokens, add, touch, an item size limit).
///
/// It is the embedded default when no memcached is configured, and the store for unit
/// tests of manager logic, where a node can be switched off with
/// [`set_node_up`](MemoryStore::set_node_up) and every operation is counted.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// use tandem_core::{MemoryStore, NodeId, RemoteStore, StoreKey, Ttl};
///
/// let (n1, n2) = (NodeId::new("n1").unwrap(), NodeId::new("n2").unwrap());
/// let store = MemoryStore::new([n1.clone(), n2.clone()]);
/// let key = StoreKey::new("k").unwrap();
///
/// store.set(&n1, &key, b"v", Ttl::Never).await.unwrap();
/// assert_eq!(store.get(&n1, &key).await.unwrap().unwrap().value, b"v");
/// assert!(store.get(&n2, &key).await.unwrap().is_none()); // nodes are separate
///
/// store.set_node_up(&n1, false);
/// assert!(store.get(&n1, &key).await.is_err());
/// assert_eq!(store.operations(), 4);
/// # });
/// ```
pub struct MemoryStore {
    nodes: Vec<MemoryNode>,
    max_item_size: usize,
    next_cas: AtomicU64,
    operations: AtomicU64,
    /// What TTLs count against: the system clock unless a test gave another.
    clock: Arc<dyn Clock>,
    /// What [`RemoteStore::replicates`] answers for every node.
    replicates: bool,
}

impl MemoryStore {
    /// A store with the given nodes, all up, and memcached's default 1 MiB item limit.
    pub fn new(nodes: impl IntoIterator<Item = NodeId>) -> MemoryStore {
        let mut unique: Vec<NodeId> = Vec::new();
        for node in nodes {
            if !unique.contains(&node) {
                unique.push(node);
            }
        }
        MemoryStore {
            nodes: unique
                .into_iter()
                .map(|id| MemoryNode {
                    id,
                    up: AtomicBool::new(true),
                    items: Mutex::new(HashMap::new()),
                    epoch: AtomicU64::new(0),
                })
                .collect(),
            max_item_size: DEFAULT_MAX_ITEM_SIZE,
            next_cas: AtomicU64::new(1),
            operations: AtomicU64::new(0),
            clock: Arc::new(SystemClock),
            replicates: false,
        }
    }

    /// Sets the largest accepted value, in bytes.
    pub fn with_max_item_size(mut self, max_item_size: usize) -> MemoryStore {
        self.max_item_size = max_item_size;
        self
    }

    /// Counts TTLs on `clock` rather than the system clock: a test that runs its
    /// managers on a paused or mocked clock gives the store the same one, and items
    /// expire as that clock moves.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> MemoryStore {
        self.clock = clock;
        self
    }

    /// Reports every node as replicating itself ([`RemoteStore::replicates`]), as the
    /// nodes of a replicated deployment do: for tests of what the manager does with
    /// such nodes. The items are still kept once.
    pub fn with_replication(mut self, replicates: bool) -> MemoryStore {
        self.replicates = replicates;
        self
    }

    /// Switches `node` on or off. An off node fails every operation with
    /// [`StoreError::NodeDown`] and keeps its items (like a paused process); see
    /// [`clear_node`](MemoryStore::clear_node) for a restart that loses them. Returns
    /// `false` if there is no such node.
    pub fn set_node_up(&self, node: &NodeId, up: bool) -> bool {
        match self.node(node) {
            Ok(node) => {
                node.up.store(up, Ordering::SeqCst);
                true
            }
            Err(_) => false,
        }
    }

    /// Drops every item of `node`, as a restart would. Returns `false` if there is no
    /// such node.
    pub fn clear_node(&self, node: &NodeId) -> bool {
        match self.node(node) {
            Ok(node) => {
                node.items.lock().clear();
                true
            }
            Err(_) => false,
        }
    }

    /// The items of `node` as they are now, to put back later with
    /// [`fail_over`](MemoryStore::fail_over); `None` if there is no such node. Not an
    /// operation (not counted, works on a node that is off).
    pub fn snapshot(&self, node: &NodeId) -> Option<NodeSnapshot> {
        let found = self.node(node).ok()?;
        Some(NodeSnapshot {
            node: found.id.clone(),
            items: found.items.lock().clone(),
        })
    }

    /// Simulates a failover of `node` that lost the writes made since `snapshot` was
    /// taken (a promoted replica that lagged behind, or a restart from an older
    /// persistence file): the node's items become the snapshot's again, with their
    /// old CAS tokens and expiry times (items that expired meanwhile stay expired),
    /// and the node's [epoch](RemoteStore::node_epoch) goes up by one. Whether the
    /// node is up is left as it is. Returns `false`, changing nothing, if there is no
    /// such node or the snapshot is of another one.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// use tandem_core::{MemoryStore, NodeId, RemoteStore, StoreKey, Ttl};
    ///
    /// let n1 = NodeId::new("n1").unwrap();
    /// let store = MemoryStore::new([n1.clone()]);
    /// let key = StoreKey::new("k").unwrap();
    /// store.set(&n1, &key, b"old", Ttl::Never).await.unwrap();
    /// let snapshot = store.snapshot(&n1).unwrap();
    /// store.set(&n1, &key, b"new", Ttl::Never).await.unwrap();
    ///
    /// assert_eq!(store.node_epoch(&n1), 0);
    /// assert!(store.fail_over(&n1, &snapshot));
    /// assert_eq!(store.node_epoch(&n1), 1);
    /// assert_eq!(store.get(&n1, &key).await.unwrap().unwrap().value, b"old");
    /// # });
    /// ```
    pub fn fail_over(&self, node: &NodeId, snapshot: &NodeSnapshot) -> bool {
        match self.node(node) {
            Ok(found) if snapshot.node == *node => {
                let mut items = found.items.lock();
                *items = snapshot.items.clone();
                // Raised under the items' lock: whoever sees the older items can see
                // the new epoch.
                found.epoch.fetch_add(1, Ordering::SeqCst);
                true
            }
            _ => false,
        }
    }

    /// Number of live items on `node` (0 for an unknown node).
    pub fn item_count(&self, node: &NodeId) -> usize {
        let now = self.clock.now();
        self.node(node)
            .map(|node| {
                node.items
                    .lock()
                    .values()
                    .filter(|entry| entry.live(now))
                    .count()
            })
            .unwrap_or(0)
    }

    /// Number of operations attempted so far (including failed ones), across all
    /// nodes: what a network store would have sent.
    pub fn operations(&self) -> u64 {
        self.operations.load(Ordering::Relaxed)
    }

    fn node(&self, id: &NodeId) -> Result<&MemoryNode, StoreError> {
        self.nodes
            .iter()
            .find(|node| node.id == *id)
            .ok_or_else(|| StoreError::UnknownNode {
                node: id.to_string(),
            })
    }

    /// Counts the operation and runs `op` on the node's live items.
    fn with_items<T>(
        &self,
        id: &NodeId,
        op: impl FnOnce(&mut HashMap<StoreKey, Entry>, Instant) -> T,
    ) -> Result<T, StoreError> {
        self.operations.fetch_add(1, Ordering::Relaxed);
        let node = self.node(id)?;
        if !node.up.load(Ordering::SeqCst) {
            return Err(StoreError::NodeDown { node: id.clone() });
        }
        let mut items = node.items.lock();
        let now = self.clock.now();
        Ok(op(&mut items, now))
    }

    fn check_size(&self, value: &[u8]) -> Result<(), StoreError> {
        if value.len() > self.max_item_size {
            return Err(StoreError::TooLarge {
                size: value.len(),
                limit: self.max_item_size,
            });
        }
        Ok(())
    }

    fn entry(&self, value: &[u8], ttl: Ttl, now: Instant) -> Entry {
        Entry {
            value: value.to_vec(),
            cas: self.next_cas.fetch_add(1, Ordering::Relaxed),
            expires: expiry(ttl, now),
        }
    }
}

fn expiry(ttl: Ttl, now: Instant) -> Option<Instant> {
    // A lifetime past what an instant can hold never ends in practice.
    ttl.millis()
        .and_then(|millis| now.checked_add(Duration::from_millis(millis)))
}

/// The live entry under `key`, dropping it if it has expired.
fn live_entry<'a>(
    items: &'a mut HashMap<StoreKey, Entry>,
    key: &StoreKey,
    now: Instant,
) -> Option<&'a mut Entry> {
    if items.get(key).is_some_and(|entry| !entry.live(now)) {
        items.remove(key);
    }
    items.get_mut(key)
}

#[async_trait]
impl RemoteStore for MemoryStore {
    async fn get(&self, node: &NodeId, key: &StoreKey) -> Result<Option<Item>, StoreError> {
        self.with_items(node, |items, now| {
            live_entry(items, key, now).map(|entry| Item {
                value: entry.value.clone(),
                cas: CasToken(entry.cas),
            })
        })
    }

    async fn set(
        &self,
        node: &NodeId,
        key: &StoreKey,
        value: &[u8],
        ttl: Ttl,
    ) -> Result<(), StoreError> {
        self.check_size(value)?;
        self.with_items(node, |items, now| {
            items.insert(key.clone(), self.entry(value, ttl, now));
        })
    }

    async fn add(
        &self,
        node: &NodeId,
        key: &StoreKey,
        value: &[u8],
        ttl: Ttl,
    ) -> Result<AddOutcome, StoreError> {
        self.check_size(value)?;
        self.with_items(node, |items, now| {
            if live_entry(items, key, now).is_some() {
                return AddOutcome::Exists;
            }
            items.insert(key.clone(), self.entry(value, ttl, now));
            AddOutcome::Stored
        })
    }

    async fn cas(
        &self,
        node: &NodeId,
        key: &StoreKey,
        value: &[u8],
        ttl: Ttl,
        cas: CasToken,
    ) -> Result<CasOutcome, StoreError> {
        self.check_size(value)?;
        self.with_items(node, |items, now| match live_entry(items, key, now) {
            None => CasOutcome::NotFound,
            Some(entry) if entry.cas != cas.0 => CasOutcome::Conflict,
            Some(entry) => {
                *entry = self.entry(value, ttl, now);
                CasOutcome::Stored
            }
        })
    }

    async fn write(
        &self,
        node: &NodeId,
        key: &StoreKey,
        value: &[u8],
        ttl: Ttl,
        precondition: Precondition,
    ) -> Result<WriteOutcome, StoreError> {
        self.check_size(value)?;
        self.with_items(node, |items, now| {
            match (precondition, live_entry(items, key, now)) {
                (Precondition::Absent, Some(_)) => return WriteOutcome::Exists,
                (Precondition::Cas(_), None) => return WriteOutcome::NotFound,
                (Precondition::Cas(token), Some(entry)) if entry.cas != token.0 => {
                    return WriteOutcome::Conflict;
                }
                _ => {}
            }
            let entry = self.entry(value, ttl, now);
            let cas = CasToken(entry.cas);
            items.insert(key.clone(), entry);
            WriteOutcome::Stored(Some(cas))
        })
    }

    async fn delete_if(
        &self,
        node: &NodeId,
        key: &StoreKey,
        cas: CasToken,
    ) -> Result<CasOutcome, StoreError> {
        self.with_items(node, |items, now| match live_entry(items, key, now) {
            None => CasOutcome::NotFound,
            Some(entry) if entry.cas != cas.0 => CasOutcome::Conflict,
            Some(_) => {
                items.remove(key);
                CasOutcome::Stored
            }
        })
    }

    async fn append(
        &self,
        node: &NodeId,
        key: &StoreKey,
        value: &[u8],
        ttl: Ttl,
    ) -> Result<(), StoreError> {
        let limit = self.max_item_size;
        self.with_items(node, |items, now| match live_entry(items, key, now) {
            Some(entry) => {
                let size = entry.value.len() + value.len();
                if size > limit {
                    return Err(StoreError::TooLarge { size, limit });
                }
                entry.value.extend_from_slice(value);
                entry.cas = self.next_cas.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            None => {
                if value.len() > limit {
                    return Err(StoreError::TooLarge {
                        size: value.len(),
                        limit,
                    });
                }
                items.insert(key.clone(), self.entry(value, ttl, now));
                Ok(())
            }
        })?
    }

    async fn get_with_ttl(
        &self,
        node: &NodeId,
        key: &StoreKey,
    ) -> Result<Option<(Item, Ttl)>, StoreError> {
        self.with_items(node, |items, now| {
            live_entry(items, key, now).map(|entry| {
                let ttl = match entry.expires {
                    None => Ttl::Never,
                    Some(at) => Ttl::After(at.saturating_duration_since(now)),
                };
                let item = Item {
                    value: entry.value.clone(),
                    cas: CasToken(entry.cas),
                };
                (item, ttl)
            })
        })
    }

    async fn delete(&self, node: &NodeId, key: &StoreKey) -> Result<bool, StoreError> {
        self.with_items(node, |items, now| {
            let existed = live_entry(items, key, now).is_some();
            items.remove(key);
            existed
        })
    }

    async fn touch(&self, node: &NodeId, key: &StoreKey, ttl: Ttl) -> Result<bool, StoreError> {
        self.with_items(node, |items, now| match live_entry(items, key, now) {
            Some(entry) => {
                entry.expires = expiry(ttl, now);
                true
            }
            None => false,
        })
    }

    async fn get_and_touch(
        &self,
        node: &NodeId,
        key: &StoreKey,
        ttl: Ttl,
    ) -> Result<Option<Item>, StoreError> {
        self.with_items(node, |items, now| {
            live_entry(items, key, now).map(|entry| {
                entry.expires = expiry(ttl, now);
                Item {
                    value: entry.value.clone(),
                    cas: CasToken(entry.cas),
                }
            })
        })
    }

    fn nodes(&self) -> Vec<NodeId> {
        self.nodes.iter().map(|node| node.id.clone()).collect()
    }

    fn is_available(&self, node: &NodeId) -> bool {
        self.node(node)
            .is_ok_and(|node| node.up.load(Ordering::SeqCst))
    }

    fn max_item_size(&self) -> usize {
        self.max_item_size
    }

    fn replicates(&self, node: &NodeId) -> bool {
        self.replicates && self.node(node).is_ok()
    }

    fn node_epoch(&self, node: &NodeId) -> u64 {
        self.node(node)
            .map_or(0, |node| node.epoch.load(Ordering::SeqCst))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes() -> (NodeId, NodeId) {
        (NodeId::new("n1").unwrap(), NodeId::new("n2").unwrap())
    }

    fn key(text: &str) -> StoreKey {
        StoreKey::new(text).unwrap()
    }

    #[tokio::test]
    async fn every_attempted_operation_is_counted() {
        let (n1, n2) = nodes();
        let store = MemoryStore::new([n1.clone(), n2.clone()]);
        let (k, ttl) = (key("k"), Ttl::Never);
        store.set(&n1, &k, b"v", ttl).await.unwrap();
        let item = store.get(&n1, &k).await.unwrap().unwrap();
        store.add(&n1, &k, b"v", ttl).await.unwrap();
        store.cas(&n1, &k, b"w", ttl, item.cas).await.unwrap();
        store
            .write(&n1, &k, b"x", ttl, Precondition::None)
            .await
            .unwrap();
        store.append(&n1, &k, b"y", ttl).await.unwrap();
        store.get_with_ttl(&n1, &k).await.unwrap();
        store.touch(&n1, &k, ttl).await.unwrap();
        store.get_and_touch(&n1, &k, ttl).await.unwrap();
        store.delete_if(&n1, &k, item.cas).await.unwrap();
        store.delete(&n1, &k).await.unwrap();
        assert_eq!(store.operations(), 11);

        // Refused ones too (not values over the limit: those are never sent).
        store.set_node_up(&n2, false);
        assert!(store.get(&n2, &k).await.is_err());
        assert!(store.get(&NodeId::new("n9").unwrap(), &k).await.is_err());
        assert_eq!(store.operations(), 13);
    }

    #[tokio::test]
    async fn item_count_counts_live_items_only() {
        let (n1, _) = nodes();
        let store = MemoryStore::new([n1.clone()]);
        store
            .set(&n1, &key("short"), b"x", Ttl::After(Duration::from_secs(1)))
            .await
            .unwrap();
        store
            .set(&n1, &key("forever"), b"x", Ttl::Never)
            .await
            .unwrap();
        assert_eq!(store.item_count(&n1), 2);
        tokio::time::sleep(Duration::from_millis(1200)).await;
        assert_eq!(store.item_count(&n1), 1);
    }

    #[tokio::test]
    async fn down_nodes_fail_and_keep_their_items() {
        let (n1, n2) = nodes();
        let store = MemoryStore::new([n1.clone(), n2.clone()]);
        store.set(&n1, &key("k"), b"v", Ttl::Never).await.unwrap();
        assert!(store.set_node_up(&n1, false));
        assert!(!store.is_available(&n1));
        assert!(store.is_available(&n2));
        let error = store.get(&n1, &key("k")).await.unwrap_err();
        assert_eq!(error, StoreError::NodeDown { node: n1.clone() });
        assert!(error.is_node_failure());
        store.set_node_up(&n1, true);
        assert!(store.get(&n1, &key("k")).await.unwrap().is_some());
        assert!(store.clear_node(&n1));
        assert!(store.get(&n1, &key("k")).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn the_item_limit_is_configurable_and_unknown_nodes_cannot_be_switched() {
        let (n1, n2) = nodes();
        let store = MemoryStore::new([n1.clone()]).with_max_item_size(4);
        assert_eq!(store.max_item_size(), 4);
        store
            .set(&n1, &key("k"), b"1234", Ttl::Never)
            .await
            .unwrap();
        assert_eq!(
            store.set(&n1, &key("k"), b"12345", Ttl::Never).await,
            Err(StoreError::TooLarge { size: 5, limit: 4 })
        );
        assert!(!store.set_node_up(&n2, false));
        assert!(!store.clear_node(&n2));
        assert_eq!(store.item_count(&n2), 0);
        assert_eq!(store.nodes(), vec![n1]);
    }

    #[tokio::test]
    async fn a_fail_over_puts_the_snapshot_back_and_raises_the_epoch() {
        let (n1, n2) = nodes();
        let store = MemoryStore::new([n1.clone(), n2.clone()]);
        let (k, gone) = (key("k"), key("added-later"));
        store.set(&n1, &k, b"old", Ttl::Never).await.unwrap();
        let old_token = store.get(&n1, &k).await.unwrap().unwrap().cas;
        let snapshot = store.snapshot(&n1).unwrap();
        assert_eq!((snapshot.node(), snapshot.len()), (&n1, 1));
        let operations = store.operations();
        store.set(&n1, &k, b"new", Ttl::Never).await.unwrap();
        let lost_token = store.get(&n1, &k).await.unwrap().unwrap().cas;
        store.set(&n1, &gone, b"x", Ttl::Never).await.unwrap();
        store.set(&n2, &k, b"other node", Ttl::Never).await.unwrap();
        assert_eq!(store.operations(), operations + 4);

        assert_eq!((store.node_epoch(&n1), store.node_epoch(&n2)), (0, 0));
        assert!(store.fail_over(&n1, &snapshot));
        assert_eq!((store.node_epoch(&n1), store.node_epoch(&n2)), (1, 0));
        let item = store.get(&n1, &k).await.unwrap().unwrap();
        assert_eq!((item.value.as_slice(), item.cas), (&b"old"[..], old_token));
        assert!(store.get(&n1, &gone).await.unwrap().is_none());
        assert_eq!(
            store.get(&n2, &k).await.unwrap().unwrap().value,
            b"other node"
        );
        // The token of a lost write does not match the older item.
        assert_eq!(
            store.cas(&n1, &k, b"x", Ttl::Never, lost_token).await,
            Ok(CasOutcome::Conflict)
        );
        assert!(store.fail_over(&n1, &snapshot));
        assert_eq!(store.node_epoch(&n1), 2);
    }

    #[tokio::test]
    async fn fail_over_refuses_unknown_nodes_and_other_nodes_snapshots() {
        let (n1, n2) = nodes();
        let store = MemoryStore::new([n1.clone(), n2.clone()]);
        store.set(&n2, &key("k"), b"v", Ttl::Never).await.unwrap();
        let of_n1 = store.snapshot(&n1).unwrap();
        assert!(of_n1.is_empty());
        assert!(store.snapshot(&NodeId::new("n9").unwrap()).is_none());
        assert!(!store.fail_over(&n2, &of_n1));
        assert!(!store.fail_over(&NodeId::new("n9").unwrap(), &of_n1));
        assert_eq!(store.node_epoch(&n2), 0);
        assert_eq!(store.node_epoch(&NodeId::new("n9").unwrap()), 0);
        assert_eq!(store.item_count(&n2), 1);
        // A restart that loses everything is no epoch change: reads see the loss.
        assert!(store.clear_node(&n2));
        assert_eq!(store.node_epoch(&n2), 0);
    }

    #[tokio::test]
    async fn items_expired_since_the_snapshot_stay_expired() {
        let (n1, _) = nodes();
        let store = MemoryStore::new([n1.clone()]);
        store
            .set(
                &n1,
                &key("short"),
                b"x",
                Ttl::After(Duration::from_millis(50)),
            )
            .await
            .unwrap();
        let snapshot = store.snapshot(&n1).unwrap();
        tokio::time::sleep(Duration::from_millis(120)).await;
        assert!(store.fail_over(&n1, &snapshot));
        assert!(store.get(&n1, &key("short")).await.unwrap().is_none());
    }

    /// The value and CAS token stored under `k` on `node`, if any.
    async fn stored(store: &MemoryStore, node: &NodeId, k: &StoreKey) -> Option<(Vec<u8>, u64)> {
        let item = store.get(node, k).await.unwrap()?;
        Some((item.value, item.cas.0))
    }

    #[tokio::test]
    async fn appends_past_the_item_limit_are_refused_and_change_nothing() {
        let (n1, _) = nodes();
        let store = MemoryStore::new([n1.clone()]).with_max_item_size(8);
        let k = key("feed");
        store.append(&n1, &k, b"123456", Ttl::Never).await.unwrap();
        let before = stored(&store, &n1, &k).await;
        assert_eq!(
            store.append(&n1, &k, b"789", Ttl::Never).await,
            Err(StoreError::TooLarge { size: 9, limit: 8 })
        );
        assert_eq!(stored(&store, &n1, &k).await, before);
        assert_eq!(
            store
                .append(&n1, &key("new"), b"123456789", Ttl::Never)
                .await,
            Err(StoreError::TooLarge { size: 9, limit: 8 })
        );
        assert_eq!(store.get(&n1, &key("new")).await.unwrap(), None);
        store.append(&n1, &k, b"78", Ttl::Never).await.unwrap();
        assert_eq!(
            store.get(&n1, &k).await.unwrap().unwrap().value,
            b"12345678"
        );
    }
}
