//! [`MemoryStore`]: an in-process [`RemoteStore`] with several named nodes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use parking_lot::Mutex;

use crate::id::NodeId;
use crate::key::StoreKey;
use crate::store::{
    AddOutcome, CasOutcome, CasToken, DEFAULT_MAX_ITEM_SIZE, Item, Precondition, RemoteStore,
    StoreError, Ttl, WriteOutcome,
};

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
}

/// An in-process remote store: a map per named node, with memcached's semantics (TTL in
/// whole seconds, CAS tokens, add, touch, an item size limit).
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
                })
                .collect(),
            max_item_size: DEFAULT_MAX_ITEM_SIZE,
            next_cas: AtomicU64::new(1),
            operations: AtomicU64::new(0),
        }
    }

    /// Sets the largest accepted value, in bytes.
    pub fn with_max_item_size(mut self, max_item_size: usize) -> MemoryStore {
        self.max_item_size = max_item_size;
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

    /// Number of live items on `node` (0 for an unknown node).
    pub fn item_count(&self, node: &NodeId) -> usize {
        let now = Instant::now();
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
        let now = Instant::now();
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
    ttl.whole_seconds()
        .map(|seconds| now + Duration::from_secs(u64::from(seconds)))
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
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::store::WriteItem;

    fn nodes() -> (NodeId, NodeId) {
        (NodeId::new("n1").unwrap(), NodeId::new("n2").unwrap())
    }

    fn key(text: &str) -> StoreKey {
        StoreKey::new(text).unwrap()
    }

    #[tokio::test]
    async fn operations_follow_memcached_semantics() {
        let (n1, n2) = nodes();
        let store = MemoryStore::new([n1.clone(), n2.clone()]);
        let k = key("k");

        assert_eq!(
            store.add(&n1, &k, b"a", Ttl::Never).await.unwrap(),
            AddOutcome::Stored
        );
        assert_eq!(
            store.add(&n1, &k, b"b", Ttl::Never).await.unwrap(),
            AddOutcome::Exists
        );
        let item = store.get(&n1, &k).await.unwrap().unwrap();
        assert_eq!(item.value, b"a");

        store.set(&n1, &k, b"c", Ttl::Never).await.unwrap();
        assert_eq!(
            store
                .cas(&n1, &k, b"d", Ttl::Never, item.cas)
                .await
                .unwrap(),
            CasOutcome::Conflict
        );
        let item = store.get(&n1, &k).await.unwrap().unwrap();
        assert_eq!(
            store
                .cas(&n1, &k, b"d", Ttl::Never, item.cas)
                .await
                .unwrap(),
            CasOutcome::Stored
        );
        assert_eq!(store.get(&n1, &k).await.unwrap().unwrap().value, b"d");
        assert_eq!(
            store
                .cas(&n2, &k, b"e", Ttl::Never, item.cas)
                .await
                .unwrap(),
            CasOutcome::NotFound
        );

        assert!(
            store
                .touch(&n1, &k, Ttl::After(Duration::from_secs(5)))
                .await
                .unwrap()
        );
        assert!(!store.touch(&n2, &k, Ttl::Never).await.unwrap());
        assert!(store.delete(&n1, &k).await.unwrap());
        assert!(!store.delete(&n1, &k).await.unwrap());
        assert_eq!(store.get(&n1, &k).await.unwrap(), None);
        assert_eq!(store.operations(), 14);
    }

    #[tokio::test]
    async fn items_expire_and_touch_extends_them() {
        let (n1, _) = nodes();
        let store = MemoryStore::new([n1.clone()]);
        let one_second = Ttl::After(Duration::from_secs(1));
        store
            .set(&n1, &key("short"), b"x", one_second)
            .await
            .unwrap();
        store
            .set(&n1, &key("touched"), b"x", one_second)
            .await
            .unwrap();
        store
            .set(&n1, &key("forever"), b"x", Ttl::Never)
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert!(
            store
                .touch(&n1, &key("touched"), Ttl::After(Duration::from_secs(2)))
                .await
                .unwrap()
        );
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert_eq!(store.get(&n1, &key("short")).await.unwrap(), None);
        assert!(store.get(&n1, &key("touched")).await.unwrap().is_some());
        assert!(store.get(&n1, &key("forever")).await.unwrap().is_some());
        assert_eq!(store.item_count(&n1), 2);
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
    async fn unknown_nodes_and_oversized_values_are_refused() {
        let (n1, n2) = nodes();
        let store = MemoryStore::new([n1.clone()]).with_max_item_size(4);
        assert!(matches!(
            store.get(&n2, &key("k")).await,
            Err(StoreError::UnknownNode { .. })
        ));
        assert!(!store.set_node_up(&n2, false));
        assert!(!store.is_available(&n2));
        store
            .set(&n1, &key("k"), b"1234", Ttl::Never)
            .await
            .unwrap();
        assert_eq!(
            store.set(&n1, &key("k"), b"12345", Ttl::Never).await,
            Err(StoreError::TooLarge { size: 5, limit: 4 })
        );
        // The previous value is intact.
        assert_eq!(
            store.get(&n1, &key("k")).await.unwrap().unwrap().value,
            b"1234"
        );
        assert_eq!(store.nodes(), vec![n1]);
    }

    /// The value and CAS token stored under `k` on `node`, if any.
    async fn stored(store: &MemoryStore, node: &NodeId, k: &StoreKey) -> Option<(Vec<u8>, u64)> {
        let item = store.get(node, k).await.unwrap()?;
        Some((item.value, item.cas.0))
    }

    /// The token of a `Stored(Some(_))` outcome; panics on anything else.
    fn token_of(outcome: WriteOutcome) -> CasToken {
        match outcome {
            WriteOutcome::Stored(Some(token)) => token,
            other => panic!("expected Stored with a token, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn write_applies_each_precondition_and_returns_the_new_token() {
        let (n1, _) = nodes();
        let store = MemoryStore::new([n1.clone()]);
        let (k, ttl) = (key("k"), Ttl::Never);

        let absent = store
            .write(&n1, &k, b"first", ttl, Precondition::Absent)
            .await
            .unwrap();
        let first = token_of(absent);
        assert_eq!(
            stored(&store, &n1, &k).await,
            Some((b"first".to_vec(), first.0))
        );
        assert_eq!(
            store
                .write(&n1, &k, b"second", ttl, Precondition::Absent)
                .await
                .unwrap(),
            WriteOutcome::Exists
        );
        assert_eq!(
            stored(&store, &n1, &k).await,
            Some((b"first".to_vec(), first.0))
        );

        let overwritten = token_of(
            store
                .write(&n1, &k, b"plain", ttl, Precondition::None)
                .await
                .unwrap(),
        );
        assert_ne!(overwritten, first);
        assert_eq!(
            stored(&store, &n1, &k).await,
            Some((b"plain".to_vec(), overwritten.0))
        );

        assert_eq!(
            store
                .write(&n1, &k, b"stale", ttl, Precondition::Cas(first))
                .await
                .unwrap(),
            WriteOutcome::Conflict
        );
        let current = store.get(&n1, &k).await.unwrap().unwrap().cas;
        let swapped = token_of(
            store
                .write(&n1, &k, b"swapped", ttl, Precondition::Cas(current))
                .await
                .unwrap(),
        );
        assert_eq!(
            stored(&store, &n1, &k).await,
            Some((b"swapped".to_vec(), swapped.0))
        );

        assert!(store.delete(&n1, &k).await.unwrap());
        assert_eq!(
            store
                .write(&n1, &k, b"gone", ttl, Precondition::Cas(swapped))
                .await
                .unwrap(),
            WriteOutcome::NotFound
        );
        assert_eq!(store.get(&n1, &k).await.unwrap(), None);
    }

    #[tokio::test]
    async fn tokens_returned_by_writes_chain_without_reads() {
        let (n1, _) = nodes();
        let store = MemoryStore::new([n1.clone()]);
        let (k, ttl) = (key("chain"), Ttl::After(Duration::from_secs(60)));

        let operations = store.operations();
        let t1 = token_of(
            store
                .write(&n1, &k, b"v1", ttl, Precondition::None)
                .await
                .unwrap(),
        );
        let t2 = token_of(
            store
                .write(&n1, &k, b"v2", ttl, Precondition::Cas(t1))
                .await
                .unwrap(),
        );
        let t3 = token_of(
            store
                .write(&n1, &k, b"v3", ttl, Precondition::Cas(t2))
                .await
                .unwrap(),
        );
        assert_eq!(store.operations(), operations + 3);
        assert!(t1 != t2 && t2 != t3 && t1 != t3);
        assert_eq!(stored(&store, &n1, &k).await, Some((b"v3".to_vec(), t3.0)));
        assert_eq!(
            store
                .write(&n1, &k, b"late", ttl, Precondition::Cas(t2))
                .await
                .unwrap(),
            WriteOutcome::Conflict
        );
    }

    #[tokio::test]
    async fn oversized_writes_are_refused_and_leave_the_old_value() {
        let (n1, _) = nodes();
        let store = MemoryStore::new([n1.clone()]).with_max_item_size(4);
        let k = key("k");
        let token = token_of(
            store
                .write(&n1, &k, b"1234", Ttl::Never, Precondition::None)
                .await
                .unwrap(),
        );
        for precondition in [
            Precondition::None,
            Precondition::Absent,
            Precondition::Cas(token),
        ] {
            assert_eq!(
                store
                    .write(&n1, &k, b"12345", Ttl::Never, precondition)
                    .await,
                Err(StoreError::TooLarge { size: 5, limit: 4 }),
                "{precondition:?}"
            );
        }
        assert_eq!(
            stored(&store, &n1, &k).await,
            Some((b"1234".to_vec(), token.0))
        );
    }

    #[tokio::test]
    async fn write_many_answers_every_item_in_order() {
        let (n1, n2) = nodes();
        let store = MemoryStore::new([n1.clone(), n2.clone()]).with_max_item_size(8);
        let ttl = Ttl::Never;
        let (existing, fresh, plain, stale, missing, big) = (
            key("existing"),
            key("fresh"),
            key("plain"),
            key("stale"),
            key("missing"),
            key("big"),
        );
        store.set(&n1, &existing, b"kept", ttl).await.unwrap();
        store.set(&n1, &stale, b"old", ttl).await.unwrap();
        let old_token = store.get(&n1, &stale).await.unwrap().unwrap().cas;
        store.set(&n1, &stale, b"newer", ttl).await.unwrap();
        store.set(&n1, &big, b"small", ttl).await.unwrap();

        let item = |key, value, precondition| WriteItem {
            key,
            value,
            ttl,
            precondition,
        };
        let items = [
            item(&existing, b"lost", Precondition::Absent),
            item(&fresh, b"new", Precondition::Absent),
            item(&plain, b"plain", Precondition::None),
            item(&stale, b"lost", Precondition::Cas(old_token)),
            item(&missing, b"lost", Precondition::Cas(old_token)),
            item(&big, b"123456789", Precondition::None),
        ];
        let results = store.write_many(&n1, &items).await;
        assert_eq!(results.len(), items.len());
        assert_eq!(results[0], Ok(WriteOutcome::Exists));
        let fresh_token = token_of(results[1].clone().unwrap());
        let plain_token = token_of(results[2].clone().unwrap());
        assert_eq!(results[3], Ok(WriteOutcome::Conflict));
        assert_eq!(results[4], Ok(WriteOutcome::NotFound));
        assert_eq!(results[5], Err(StoreError::TooLarge { size: 9, limit: 8 }));

        assert_eq!(
            stored(&store, &n1, &fresh).await,
            Some((b"new".to_vec(), fresh_token.0))
        );
        assert_eq!(
            stored(&store, &n1, &plain).await,
            Some((b"plain".to_vec(), plain_token.0))
        );
        assert_eq!(
            store.get(&n1, &existing).await.unwrap().unwrap().value,
            b"kept"
        );
        assert_eq!(
            store.get(&n1, &stale).await.unwrap().unwrap().value,
            b"newer"
        );
        assert_eq!(store.get(&n1, &missing).await.unwrap(), None);
        assert_eq!(store.get(&n1, &big).await.unwrap().unwrap().value, b"small");

        store.set_node_up(&n2, false);
        let results = store.write_many(&n2, &items[..3]).await;
        assert_eq!(results.len(), 3);
        assert!(
            results
                .iter()
                .all(|result| *result == Err(StoreError::NodeDown { node: n2.clone() }))
        );
    }

    #[tokio::test]
    async fn delete_if_removes_only_an_item_with_the_given_token() {
        let (n1, _) = nodes();
        let store = MemoryStore::new([n1.clone()]);
        let k = key("lock");
        let mine = token_of(
            store
                .write(&n1, &k, b"mine", Ttl::Never, Precondition::Absent)
                .await
                .unwrap(),
        );
        store.set(&n1, &k, b"theirs", Ttl::Never).await.unwrap();
        assert_eq!(
            store.delete_if(&n1, &k, mine).await.unwrap(),
            CasOutcome::Conflict
        );
        assert_eq!(store.get(&n1, &k).await.unwrap().unwrap().value, b"theirs");

        let theirs = store.get(&n1, &k).await.unwrap().unwrap().cas;
        assert_eq!(
            store.delete_if(&n1, &k, theirs).await.unwrap(),
            CasOutcome::Stored
        );
        assert_eq!(store.get(&n1, &k).await.unwrap(), None);
        assert_eq!(
            store.delete_if(&n1, &k, theirs).await.unwrap(),
            CasOutcome::NotFound
        );
    }

    #[tokio::test]
    async fn append_creates_with_the_ttl_then_appends_keeping_it() {
        let (n1, _) = nodes();
        let store = MemoryStore::new([n1.clone()]);
        let (feed, forever) = (key("feed"), key("forever"));

        store
            .append(&n1, &feed, b"a", Ttl::After(Duration::from_secs(60)))
            .await
            .unwrap();
        let (item, ttl) = store.get_with_ttl(&n1, &feed).await.unwrap().unwrap();
        assert_eq!(item.value, b"a");
        assert!(
            matches!(ttl, Ttl::After(left) if left > Duration::from_secs(59) && left <= Duration::from_secs(60)),
            "{ttl:?}"
        );

        store
            .append(&n1, &feed, b"b", Ttl::After(Duration::from_secs(600)))
            .await
            .unwrap();
        let (appended, ttl) = store.get_with_ttl(&n1, &feed).await.unwrap().unwrap();
        assert_eq!(appended.value, b"ab");
        assert_ne!(appended.cas, item.cas, "an append changes the token");
        assert!(
            matches!(ttl, Ttl::After(left) if left <= Duration::from_secs(60)),
            "the append changed the TTL: {ttl:?}"
        );

        store.set(&n1, &forever, b"x", Ttl::Never).await.unwrap();
        store
            .append(&n1, &forever, b"y", Ttl::After(Duration::from_secs(60)))
            .await
            .unwrap();
        let (item, ttl) = store.get_with_ttl(&n1, &forever).await.unwrap().unwrap();
        assert_eq!((item.value.as_slice(), ttl), (&b"xy"[..], Ttl::Never));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_appends_all_land() {
        let (n1, _) = nodes();
        let store = Arc::new(MemoryStore::new([n1.clone()]));
        let records: Vec<Vec<u8>> = (0..20).map(|i| format!("rec{i:05}").into_bytes()).collect();
        let mut appends = tokio::task::JoinSet::new();
        for record in records.clone() {
            let (store, n1) = (Arc::clone(&store), n1.clone());
            appends
                .spawn(async move { store.append(&n1, &key("feed"), &record, Ttl::Never).await });
        }
        while let Some(joined) = appends.join_next().await {
            joined.unwrap().unwrap();
        }
        let value = store.get(&n1, &key("feed")).await.unwrap().unwrap().value;
        assert_eq!(value.len(), 160);
        let mut landed: Vec<Vec<u8>> = value.chunks(8).map(<[u8]>::to_vec).collect();
        landed.sort();
        assert_eq!(landed, records);
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

    #[tokio::test]
    async fn get_with_ttl_reports_the_remaining_lifetime() {
        let (n1, _) = nodes();
        let store = MemoryStore::new([n1.clone()]);
        let (forever, timed) = (key("forever"), key("timed"));
        store.set(&n1, &forever, b"f", Ttl::Never).await.unwrap();
        store
            .set(&n1, &timed, b"t", Ttl::After(Duration::from_secs(60)))
            .await
            .unwrap();

        let (item, ttl) = store.get_with_ttl(&n1, &forever).await.unwrap().unwrap();
        assert_eq!((item.value.as_slice(), ttl), (&b"f"[..], Ttl::Never));
        let (item, ttl) = store.get_with_ttl(&n1, &timed).await.unwrap().unwrap();
        assert_eq!(item, store.get(&n1, &timed).await.unwrap().unwrap());
        let remaining = |ttl| match ttl {
            Ttl::After(left) => left,
            Ttl::Never => panic!("a timed item reported no expiry"),
        };
        let left = remaining(ttl);
        assert!(
            left > Duration::from_secs(59) && left <= Duration::from_secs(60),
            "{left:?}"
        );
        assert_eq!(store.get_with_ttl(&n1, &key("absent")).await.unwrap(), None);

        assert!(
            store
                .touch(&n1, &timed, Ttl::After(Duration::from_secs(600)))
                .await
                .unwrap()
        );
        let (_, ttl) = store.get_with_ttl(&n1, &timed).await.unwrap().unwrap();
        assert!(remaining(ttl) > Duration::from_secs(599), "{ttl:?}");
        assert!(store.touch(&n1, &timed, Ttl::Never).await.unwrap());
        let (_, ttl) = store.get_with_ttl(&n1, &timed).await.unwrap().unwrap();
        assert_eq!(ttl, Ttl::Never);
    }
}
