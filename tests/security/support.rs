//! What the security tests share beyond `common`: soft checks that report every way a
//! scenario goes wrong at once, a fault-injecting store wrapper, and direct looks at
//! what memcached holds.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tandem::memcached::MemcachedStore;
use tandem::{
    CommitError, CommitOutcome, CookieUpdate, NodeId, RemoteStore, SessionId,
    model::{
        AddOutcome, CasOutcome, CasToken, Item, KeySpace, NodeStatus, Precondition, SetItem,
        StoreError, StoreKey, Ttl, WriteItem, WriteOutcome,
    },
};
use tandem_testkit::MemcachedCluster;

use crate::common::*;

/// Failed expectations of one scenario. A scenario goes on after a failed expectation
/// so that a run on a buggy tree shows every symptom, not only the first.
#[derive(Default)]
pub struct Checks(Vec<String>);

impl Checks {
    /// Records `failure` unless `ok`.
    pub fn check(&mut self, ok: bool, failure: impl FnOnce() -> String) {
        if !ok {
            self.0.push(failure());
        }
    }

    /// Fails the test with every recorded failure.
    #[track_caller]
    pub fn finish(self) {
        assert!(self.0.is_empty(), "{}", self.0.join(" | "));
    }
}

/// Whether `cookie` sets an id with the random part of `id` (the part that a cycled id
/// changes, and that an attacker needs).
pub fn names(cookie: &CookieUpdate, id: &SessionId) -> bool {
    matches!(cookie, CookieUpdate::Set { id: set, .. } if set.random() == id.random())
}

/// A commit result in a few words, for failure messages.
pub fn describe(result: &Result<CommitOutcome, CommitError>) -> String {
    match result {
        Ok(outcome) => format!("Ok({:?})", outcome.cookie),
        Err(error) => format!("Err({error:?})"),
    }
}

/// The victim logs in on a session that already exists: stores `user` and cycles
/// the id. Returns the new id.
pub async fn login(manager: &Manager, id: &SessionId) -> SessionId {
    let mut session = manager.load(Some(id.as_str())).await.unwrap();
    assert!(!session.is_new(), "the planted session {id} is gone");
    session.insert("user", &42u32).unwrap();
    session.cycle_id();
    let cycled = new_id(manager.commit(session).await.unwrap().cookie);
    assert_ne!(
        cycled.random(),
        id.random(),
        "cycle_id kept the random part"
    );
    cycled
}

/// Logs out: invalidates the session in a request of its own.
pub async fn logout(manager: &Manager, id: &SessionId) {
    let mut session = manager.load(Some(id.as_str())).await.unwrap();
    assert!(!session.is_new(), "session {id} is gone before the logout");
    session.invalidate();
    let outcome = manager.commit(session).await.unwrap();
    assert_eq!(outcome.cookie, CookieUpdate::Clear);
}

/// The node after `node` in ring order (configuration order, wrapping): where a
/// non-sticky session keeps its backup copy.
pub fn ring_successor(cluster: &MemcachedCluster, node: &str) -> String {
    let ids = cluster.ids();
    let at = ids.iter().position(|id| id == node).unwrap();
    ids[(at + 1) % ids.len()].clone()
}

/// The nodes that hold `id` under `space`, read with the store directly. A node that
/// cannot be read is listed too (with why): it cannot be shown not to hold it.
pub async fn holders(
    store: &MemcachedStore,
    cluster: &MemcachedCluster,
    space: KeySpace,
    id: &SessionId,
) -> Vec<String> {
    let mut found = Vec::new();
    for node_id in cluster.ids() {
        let item = store.get(&node(&node_id), &key(space, id)).await;
        match item {
            // A tombstone (what Tandem writes over an ended id) is not a copy.
            Ok(Some(item)) if item.value.starts_with(b"\xfftandem:ended:") => {}
            Ok(Some(_)) => found.push(node_id),
            Ok(None) => {}
            Err(error) => found.push(format!("{node_id} (unreadable: {error})")),
        }
    }
    found
}

/// Marks `node` down in `store` by an operation that cannot succeed (the node is
/// paused or killed), as the first request after a failure would.
pub async fn mark_down(store: &MemcachedStore, node_id: &str) {
    let probe = StoreKey::new("security-probe").unwrap();
    let _ = store.get(&node(node_id), &probe).await;
    assert!(
        !store.is_available(&node(node_id)),
        "{node_id} still counts as available"
    );
}

/// Waits until `store` uses `node` again and an operation on it succeeds (its pool
/// reconnected after a restart).
pub async fn wait_up(store: &MemcachedStore, node_id: &str) {
    let probe = StoreKey::new("security-probe").unwrap();
    let up = wait_until_async(Duration::from_secs(3), || async {
        store.is_available(&node(node_id)) && store.get(&node(node_id), &probe).await.is_ok()
    })
    .await;
    assert!(up.is_some(), "{node_id} did not come back");
}

/// A memcached store that can delay or drop chosen operations, to pin down the order
/// of a race. Every operation not singled out goes to the real store unchanged.
pub struct Faulty {
    inner: Arc<MemcachedStore>,
    /// Extra time before each write of a session (`set`, `set_many`, `write`,
    /// `write_many`) is sent, in milliseconds.
    write_delay_ms: AtomicU64,
    /// Extra time before each delete of a backup copy (`bak:` key), or write of the
    /// deletion marker beside it (`gone:` key), is sent.
    backup_delete_delay_ms: AtomicU64,
    /// Fail each delete of a backup copy, and each write of the deletion marker beside
    /// it, without sending it, as a partition of the backup's node would.
    fail_backup_deletes: AtomicBool,
    /// Fail `touch` without sending it, as a timed-out touch does.
    fail_touches: AtomicBool,
    /// Fail the renewals of session locks (compare-and-swap writes of `lock:` keys)
    /// without sending them, as a node that stops answering for a while would.
    fail_lock_renewals: AtomicBool,
    /// Extra time before each read (`get`, `get_with_ttl`, `get_and_touch`) is sent.
    read_delay_ms: AtomicU64,
    /// Extra time between an operation's answer and its return to the caller, for
    /// every operation: the operation has reached memcached (a write has landed), but
    /// the caller does not know it yet, as with a slow network on the way back. A
    /// caller dropped in that time has done something it never learns about.
    answer_delay_ms: AtomicU64,
    /// Send single writes (`set`, `write`, `add`) from a task of their own, after the
    /// write delay: a caller dropped meanwhile no longer stops them, and they land
    /// after it is gone, as a request already on the wire does.
    detach_writes: AtomicBool,
    /// Lose the answers of this many more `add`s of session locks (`lock:` keys):
    /// each lands, then fails as a timed-out operation does.
    lost_lock_adds: AtomicU64,
    writes_started: AtomicU64,
    touches_failed: AtomicU64,
}

impl Faulty {
    pub fn new(inner: &Arc<MemcachedStore>) -> Arc<Faulty> {
        Arc::new(Faulty {
            inner: Arc::clone(inner),
            write_delay_ms: AtomicU64::new(0),
            backup_delete_delay_ms: AtomicU64::new(0),
            fail_backup_deletes: AtomicBool::new(false),
            fail_touches: AtomicBool::new(false),
            fail_lock_renewals: AtomicBool::new(false),
            read_delay_ms: AtomicU64::new(0),
            answer_delay_ms: AtomicU64::new(0),
            detach_writes: AtomicBool::new(false),
            lost_lock_adds: AtomicU64::new(0),
            writes_started: AtomicU64::new(0),
            touches_failed: AtomicU64::new(0),
        })
    }

    pub fn delay_writes(&self, delay: Duration) {
        self.write_delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    pub fn delay_reads(&self, delay: Duration) {
        self.read_delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    pub fn delay_answers(&self, delay: Duration) {
        self.answer_delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    pub fn detach_writes(&self, detach: bool) {
        self.detach_writes.store(detach, Ordering::SeqCst);
    }

    pub fn delay_backup_deletes(&self, delay: Duration) {
        self.backup_delete_delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    pub fn fail_backup_deletes(&self, fail: bool) {
        self.fail_backup_deletes.store(fail, Ordering::SeqCst);
    }

    pub fn fail_lock_renewals(&self, fail: bool) {
        self.fail_lock_renewals.store(fail, Ordering::SeqCst);
    }

    /// The next `count` adds of session locks land, but their callers get a node
    /// failure instead of the answer.
    pub fn lose_lock_add_answers(&self, count: u64) {
        self.lost_lock_adds.store(count, Ordering::SeqCst);
    }

    pub fn fail_touches(&self, fail: bool) {
        self.fail_touches.store(fail, Ordering::SeqCst);
    }

    /// Writes of sessions begun so far (delayed or not).
    pub fn writes_started(&self) -> u64 {
        self.writes_started.load(Ordering::SeqCst)
    }

    pub fn touches_failed(&self) -> u64 {
        self.touches_failed.load(Ordering::SeqCst)
    }

    async fn before_read(&self) {
        let delay = self.read_delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
    }

    /// Hands an operation's result back after the answer delay.
    async fn answer<T>(&self, result: T) -> T {
        let delay = self.answer_delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        result
    }

    async fn before_write(&self) {
        self.writes_started.fetch_add(1, Ordering::SeqCst);
        let delay = self.write_delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
    }

    /// Sends a single write: here (after the write delay if `delayed`), or, with
    /// writes detached, from a task of its own after the write delay.
    async fn send<T: Send + 'static>(
        &self,
        delayed: bool,
        write: impl Future<Output = T> + Send + 'static,
    ) -> T {
        if self.detach_writes.load(Ordering::SeqCst) {
            self.writes_started.fetch_add(1, Ordering::SeqCst);
            let delay = Duration::from_millis(self.write_delay_ms.load(Ordering::SeqCst));
            return tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                write.await
            })
            .await
            .expect("a detached write panicked");
        }
        if delayed {
            self.before_write().await;
        }
        write.await
    }
}

impl Faulty {
    /// Whether a write or delete of `key` ends a backup copy (its delete, or the
    /// deletion marker beside it), which a partition of the backup's node fails.
    fn ends_a_backup(key: &StoreKey) -> bool {
        key.as_str().contains("bak:") || key.as_str().contains("gone:")
    }

    async fn before_backup_end(&self, node: &NodeId, key: &StoreKey) -> Result<(), StoreError> {
        if !Self::ends_a_backup(key) {
            return Ok(());
        }
        if self.fail_backup_deletes.load(Ordering::SeqCst) {
            return Err(StoreError::Unreachable {
                node: node.clone(),
                message: "partitioned by the test".into(),
            });
        }
        let delay = self.backup_delete_delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl RemoteStore for Faulty {
    async fn get(&self, node: &NodeId, key: &StoreKey) -> Result<Option<Item>, StoreError> {
        self.before_read().await;
        self.answer(self.inner.get(node, key).await).await
    }

    async fn set(
        &self,
        node: &NodeId,
        key: &StoreKey,
        value: &[u8],
        ttl: Ttl,
    ) -> Result<(), StoreError> {
        let (inner, node, key, value) = (
            Arc::clone(&self.inner),
            node.clone(),
            key.clone(),
            value.to_vec(),
        );
        let set = async move { inner.set(&node, &key, &value, ttl).await };
        self.answer(self.send(true, set).await).await
    }

    async fn set_many(&self, node: &NodeId, items: &[SetItem<'_>]) -> Vec<Result<(), StoreError>> {
        self.before_write().await;
        self.answer(self.inner.set_many(node, items).await).await
    }

    async fn write(
        &self,
        node: &NodeId,
        key: &StoreKey,
        value: &[u8],
        ttl: Ttl,
        precondition: Precondition,
    ) -> Result<WriteOutcome, StoreError> {
        if key.as_str().contains("lock:")
            && matches!(precondition, Precondition::Cas(_))
            && self.fail_lock_renewals.load(Ordering::SeqCst)
        {
            return Err(StoreError::Timeout {
                node: node.clone(),
                after: TIMEOUT,
            });
        }
        self.before_backup_end(node, key).await?;
        let delayed = !Self::ends_a_backup(key);
        let (inner, node, key, value) = (
            Arc::clone(&self.inner),
            node.clone(),
            key.clone(),
            value.to_vec(),
        );
        let write = async move { inner.write(&node, &key, &value, ttl, precondition).await };
        self.answer(self.send(delayed, write).await).await
    }

    async fn write_many(
        &self,
        node: &NodeId,
        items: &[WriteItem<'_>],
    ) -> Vec<Result<WriteOutcome, StoreError>> {
        self.before_write().await;
        self.answer(self.inner.write_many(node, items).await).await
    }

    async fn add(
        &self,
        node: &NodeId,
        key: &StoreKey,
        value: &[u8],
        ttl: Ttl,
    ) -> Result<AddOutcome, StoreError> {
        let node_id = node.clone();
        let (inner, node, key, value) = (
            Arc::clone(&self.inner),
            node.clone(),
            key.clone(),
            value.to_vec(),
        );
        let lock = key.as_str().contains("lock:");
        let add = async move { inner.add(&node, &key, &value, ttl).await };
        let added = self.send(false, add).await;
        let lost = lock
            && self
                .lost_lock_adds
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| {
                    left.checked_sub(1)
                })
                .is_ok();
        if lost {
            return Err(StoreError::Unreachable {
                node: node_id.clone(),
                message: "the answer was lost (the test)".into(),
            });
        }
        self.answer(added).await
    }

    async fn cas(
        &self,
        node: &NodeId,
        key: &StoreKey,
        value: &[u8],
        ttl: Ttl,
        cas: CasToken,
    ) -> Result<CasOutcome, StoreError> {
        self.answer(self.inner.cas(node, key, value, ttl, cas).await)
            .await
    }

    async fn delete(&self, node: &NodeId, key: &StoreKey) -> Result<bool, StoreError> {
        self.before_backup_end(node, key).await?;
        self.answer(self.inner.delete(node, key).await).await
    }

    async fn delete_if(
        &self,
        node: &NodeId,
        key: &StoreKey,
        cas: CasToken,
    ) -> Result<CasOutcome, StoreError> {
        self.answer(self.inner.delete_if(node, key, cas).await)
            .await
    }

    async fn append(
        &self,
        node: &NodeId,
        key: &StoreKey,
        value: &[u8],
        ttl: Ttl,
    ) -> Result<(), StoreError> {
        self.answer(self.inner.append(node, key, value, ttl).await)
            .await
    }

    async fn get_with_ttl(
        &self,
        node: &NodeId,
        key: &StoreKey,
    ) -> Result<Option<(Item, Ttl)>, StoreError> {
        self.before_read().await;
        self.answer(self.inner.get_with_ttl(node, key).await).await
    }

    async fn touch(&self, node: &NodeId, key: &StoreKey, ttl: Ttl) -> Result<bool, StoreError> {
        if self.fail_touches.load(Ordering::SeqCst) {
            self.touches_failed.fetch_add(1, Ordering::SeqCst);
            return Err(StoreError::Timeout {
                node: node.clone(),
                after: TIMEOUT,
            });
        }
        self.answer(self.inner.touch(node, key, ttl).await).await
    }

    async fn get_and_touch(
        &self,
        node: &NodeId,
        key: &StoreKey,
        ttl: Ttl,
    ) -> Result<Option<Item>, StoreError> {
        self.before_read().await;
        self.answer(self.inner.get_and_touch(node, key, ttl).await)
            .await
    }

    fn nodes(&self) -> Vec<NodeId> {
        self.inner.nodes()
    }

    fn is_available(&self, node: &NodeId) -> bool {
        self.inner.is_available(node)
    }

    fn node_status(&self) -> Vec<NodeStatus> {
        self.inner.node_status()
    }

    fn max_item_size(&self) -> usize {
        self.inner.max_item_size()
    }
}
