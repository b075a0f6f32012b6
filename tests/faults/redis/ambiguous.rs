//! Regressions of the sticky engine found by the Redis fault matrix, reproduced
//! here without Redis, with one app server and no other writer: after a backup
//! write whose outcome is unknown (`StoreError::Unreplicated`, a timeout, a
//! connection lost at a kill), the owner checks the remote copy before its next
//! write (`own_copy` in `crates/tandem-manager/src/sticky/writes.rs`). It compared
//! the copy with two states only, the last one known written and the last one
//! attempted, and took any other copy for another server's: the owner dropped its
//! local primary (`ownership_lost`), and the next request reloaded the older copy.
//! It now remembers every write whose answer was lost since the copy was last known
//! (up to 16), and replaces a copy older than what it wrote.
//!
//! - [`an_earlier_ambiguous_write_is_taken_for_another_servers`]: with the durable
//!   setting every write near a failover can fail as `Unreplicated` although the
//!   master applied it; the replica promoted may hold an earlier such write rather
//!   than the last one attempted.
//! - [`an_older_copy_after_an_ambiguous_write_is_not_replaced`]: an older copy (a
//!   server restarted from an older snapshot) met after a write whose answer was
//!   lost.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tandem::model::{
    AddOutcome, CasOutcome, CasToken, Item, KeySpace, MemoryStore, NodeId, Precondition,
    RemoteStore, StoreError, StoreKey, Ttl, WriteOutcome,
};
use tandem::{BackupMode, SessionManager, SpeedyCodec};

use crate::common::{create, key, node, read_n, sticky_over, write_n};

/// How the next session write fails.
#[derive(Debug, Clone, Copy)]
enum Failure {
    /// Applied, then reported `Unreplicated` (the durable setting, replicas late).
    AppliedUnreplicated,
    /// Not applied, reported as a timeout (lost with a master that died).
    Lost,
}

/// A memory store whose next writes fail as told.
struct Ambiguous {
    inner: Arc<MemoryStore>,
    next: Mutex<VecDeque<Failure>>,
}

impl Ambiguous {
    fn fail_next(&self, failure: Failure) {
        self.next.lock().push_back(failure);
    }
}

#[async_trait::async_trait]
impl RemoteStore for Ambiguous {
    async fn get(&self, node: &NodeId, key: &StoreKey) -> Result<Option<Item>, StoreError> {
        self.inner.get(node, key).await
    }

    async fn set(
        &self,
        node: &NodeId,
        key: &StoreKey,
        value: &[u8],
        ttl: Ttl,
    ) -> Result<(), StoreError> {
        self.inner.set(node, key, value, ttl).await
    }

    async fn add(
        &self,
        node: &NodeId,
        key: &StoreKey,
        value: &[u8],
        ttl: Ttl,
    ) -> Result<AddOutcome, StoreError> {
        self.inner.add(node, key, value, ttl).await
    }

    async fn cas(
        &self,
        node: &NodeId,
        key: &StoreKey,
        value: &[u8],
        ttl: Ttl,
        cas: CasToken,
    ) -> Result<CasOutcome, StoreError> {
        self.inner.cas(node, key, value, ttl, cas).await
    }

    async fn write(
        &self,
        node: &NodeId,
        key: &StoreKey,
        value: &[u8],
        ttl: Ttl,
        precondition: Precondition,
    ) -> Result<WriteOutcome, StoreError> {
        let failure = self.next.lock().pop_front();
        match failure {
            None => self.inner.write(node, key, value, ttl, precondition).await,
            Some(Failure::AppliedUnreplicated) => {
                self.inner
                    .write(node, key, value, ttl, precondition)
                    .await?;
                Err(StoreError::Unreplicated {
                    node: node.clone(),
                    acknowledged: 0,
                    wanted: 1,
                })
            }
            Some(Failure::Lost) => Err(StoreError::Timeout {
                node: node.clone(),
                after: Duration::from_millis(250),
            }),
        }
    }

    async fn delete(&self, node: &NodeId, key: &StoreKey) -> Result<bool, StoreError> {
        self.inner.delete(node, key).await
    }

    async fn delete_if(
        &self,
        node: &NodeId,
        key: &StoreKey,
        cas: CasToken,
    ) -> Result<CasOutcome, StoreError> {
        self.inner.delete_if(node, key, cas).await
    }

    async fn append(
        &self,
        node: &NodeId,
        key: &StoreKey,
        value: &[u8],
        ttl: Ttl,
    ) -> Result<(), StoreError> {
        self.inner.append(node, key, value, ttl).await
    }

    async fn get_with_ttl(
        &self,
        node: &NodeId,
        key: &StoreKey,
    ) -> Result<Option<(Item, Ttl)>, StoreError> {
        self.inner.get_with_ttl(node, key).await
    }

    async fn touch(&self, node: &NodeId, key: &StoreKey, ttl: Ttl) -> Result<bool, StoreError> {
        self.inner.touch(node, key, ttl).await
    }

    fn nodes(&self) -> Vec<NodeId> {
        self.inner.nodes()
    }

    fn is_available(&self, node: &NodeId) -> bool {
        self.inner.is_available(node)
    }

    fn replicates(&self, node: &NodeId) -> bool {
        self.inner.replicates(node)
    }
}

/// One sticky app server with synchronous backup over a replicating node `r1`, and
/// no background retry within the test (a retry would take the place of the next
/// request's write).
fn setup() -> (
    Arc<MemoryStore>,
    Arc<Ambiguous>,
    SessionManager<SpeedyCodec>,
) {
    let memory = Arc::new(MemoryStore::new([node("r1")]).with_replication(true));
    let store = Arc::new(Ambiguous {
        inner: Arc::clone(&memory),
        next: Mutex::new(VecDeque::new()),
    });
    let manager = sticky_over(Arc::clone(&store) as Arc<dyn RemoteStore>, "a1")
        .backup(BackupMode::Sync {
            timeout: Duration::from_secs(1),
        })
        .retry_interval(Duration::from_secs(600))
        .build()
        .unwrap();
    (memory, store, manager)
}

#[tokio::test]
async fn an_earlier_ambiguous_write_is_taken_for_another_servers() {
    let (_memory, store, manager) = setup();
    let id = create(&manager, 1).await;
    // The master applies 2, its replica gets it too late for WAIT.
    store.fail_next(Failure::AppliedUnreplicated);
    write_n(&manager, &id, 2).await;
    // 3 is lost with the master: the replica promoted holds 2.
    store.fail_next(Failure::Lost);
    write_n(&manager, &id, 3).await;
    write_n(&manager, &id, 4).await;
    assert_eq!(
        read_n(&manager, &id).await,
        Some(4),
        "the only server of the session dropped its primary for a copy it wrote itself"
    );
}

#[tokio::test]
async fn an_older_copy_after_an_ambiguous_write_is_not_replaced() {
    let (memory, store, manager) = setup();
    let r1 = node("r1");
    let id = create(&manager, 1).await;
    let snapshot = memory
        .get(&r1, &key(KeySpace::Session, &id))
        .await
        .unwrap()
        .unwrap();
    // A snapshot is older than what follows it: states a millisecond apart or more
    // (two in the same millisecond cannot be ordered by their last access).
    tokio::time::sleep(Duration::from_millis(3)).await;
    write_n(&manager, &id, 2).await;
    // The connection dies with the server: 3's outcome is unknown.
    store.fail_next(Failure::Lost);
    write_n(&manager, &id, 3).await;
    // The server restarts from the snapshot taken when the session held 1.
    memory
        .set(
            &r1,
            &key(KeySpace::Session, &id),
            &snapshot.value,
            Ttl::After(Duration::from_secs(1800)),
        )
        .await
        .unwrap();
    write_n(&manager, &id, 4).await;
    assert_eq!(
        read_n(&manager, &id).await,
        Some(4),
        "an older copy made the only server of the session drop its primary"
    );
}

/// The same under concurrency, as users produce it: 16 requests of one session at
/// the same time, each adding an attribute of its own, while the store answers
/// every other backup write ambiguously (applied but unreplicated, or lost). The
/// only server of the session must keep every change (merged), and never take its
/// own unanswered writes for another server's.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_requests_with_unanswered_writes_lose_nothing() {
    let (_memory, store, manager) = setup();
    let manager = Arc::new(manager);
    let id = create(&manager, 1).await;
    for round in 0..8 {
        store.fail_next(if round % 2 == 0 {
            Failure::AppliedUnreplicated
        } else {
            Failure::Lost
        });
    }
    let requests: Vec<_> = (0..16)
        .map(|index| {
            let (manager, id) = (Arc::clone(&manager), id.clone());
            tokio::spawn(async move {
                let mut session = manager.load(Some(id.as_str())).await.unwrap();
                assert!(!session.is_new(), "request {index} lost the session");
                session.insert(&format!("k{index}"), &index).unwrap();
                manager.commit(session).await.unwrap();
            })
        })
        .collect();
    for request in requests {
        request.await.unwrap();
    }
    let session = manager.load(Some(id.as_str())).await.unwrap();
    assert!(!session.is_new());
    let missing: Vec<u32> = (0..16u32)
        .filter(|index| session.get::<u32>(&format!("k{index}")).unwrap() != Some(*index))
        .collect();
    assert!(missing.is_empty(), "changes lost: {missing:?}");
    assert_eq!(manager.stats().ownership_lost, 0);
    manager.commit(session).await.unwrap();
}
