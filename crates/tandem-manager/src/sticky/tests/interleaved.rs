//! A request's commit interleaved with a backup of the same session that is still on
//! its way, pinned down with a store that holds one read until the test lets it go.

use super::*;
use tokio::sync::Notify;

/// The memory store, except that the next read of one key, once armed, waits until
/// the test releases it.
struct Gated {
    inner: Arc<MemoryStore>,
    held: parking_lot::Mutex<Option<StoreKey>>,
    /// Notified when the held read has started.
    reached: Notify,
    /// Lets the held read go on.
    release: Notify,
}

impl Gated {
    fn over(inner: &Arc<MemoryStore>) -> Arc<Gated> {
        Arc::new(Gated {
            inner: Arc::clone(inner),
            held: parking_lot::Mutex::new(None),
            reached: Notify::new(),
            release: Notify::new(),
        })
    }

    /// The next read of `key` waits for [`release`](Self::release).
    fn hold_next_read(&self, key: StoreKey) {
        *self.held.lock() = Some(key);
    }
}

#[async_trait::async_trait]
impl RemoteStore for Gated {
    async fn get(
        &self,
        node: &NodeId,
        key: &StoreKey,
    ) -> Result<Option<tandem_core::Item>, StoreError> {
        let hold = {
            let mut held = self.held.lock();
            let hold = held.as_ref() == Some(key);
            if hold {
                *held = None;
            }
            hold
        };
        if hold {
            self.reached.notify_one();
            self.release.notified().await;
        }
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
    ) -> Result<tandem_core::AddOutcome, StoreError> {
        self.inner.add(node, key, value, ttl).await
    }

    async fn cas(
        &self,
        node: &NodeId,
        key: &StoreKey,
        value: &[u8],
        ttl: Ttl,
        cas: tandem_core::CasToken,
    ) -> Result<tandem_core::CasOutcome, StoreError> {
        self.inner.cas(node, key, value, ttl, cas).await
    }

    async fn write(
        &self,
        node: &NodeId,
        key: &StoreKey,
        value: &[u8],
        ttl: Ttl,
        precondition: tandem_core::Precondition,
    ) -> Result<tandem_core::WriteOutcome, StoreError> {
        self.inner.write(node, key, value, ttl, precondition).await
    }

    async fn write_many(
        &self,
        node: &NodeId,
        items: &[tandem_core::WriteItem<'_>],
    ) -> Vec<Result<tandem_core::WriteOutcome, StoreError>> {
        self.inner.write_many(node, items).await
    }

    async fn delete(&self, node: &NodeId, key: &StoreKey) -> Result<bool, StoreError> {
        self.inner.delete(node, key).await
    }

    async fn delete_if(
        &self,
        node: &NodeId,
        key: &StoreKey,
        cas: tandem_core::CasToken,
    ) -> Result<tandem_core::CasOutcome, StoreError> {
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
    ) -> Result<Option<(tandem_core::Item, Ttl)>, StoreError> {
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
}

/// A login (`cycle_id`) committed while a backup of the old id, refused because
/// another server took the session over, reads the copy under the old id: what that
/// read finds there (the login's tombstone) says nothing of the session under its new
/// id. The session and the login's change survive, and the login's synchronous
/// backup reports them written. (The fault matrix's sticky `LoginUnderLoad` row lost
/// the victim's new session this way: the refused backup dropped the entry, already
/// re-keyed to the new id, as no longer this server's.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_during_a_refused_backup_of_the_old_id_keeps_the_session() {
    let memory = store(&["n1"]);
    let gated = Gated::over(&memory);
    let sync = BackupMode::Sync {
        timeout: Duration::from_secs(10),
    };
    let a1 = SessionManager::<TextCodec>::builder(Arc::clone(&gated) as Arc<dyn RemoteStore>)
        .route(Route::new("a1").unwrap())
        .backup(sync)
        .peer_feed_interval(None)
        .build()
        .unwrap();
    let a2 = builder(&memory)
        .route(Route::new("a2").unwrap())
        .backup(sync)
        .peer_feed_interval(None)
        .build()
        .unwrap();
    let x = create(&a1, &[("n", "1")]).await;
    let x_key = a1.sticky().common.store_key(&x);
    // Two requests of the session on a1: one that writes an attribute, and the login.
    let mut request = a1.load(Some(x.as_str())).await.unwrap();
    request.insert("cart", "1").unwrap();
    let mut login = a1.load(Some(x.as_str())).await.unwrap();
    // The other server takes the session over: a1's next write of X is refused.
    let taken = a2.load(Some(x.as_str())).await.unwrap();
    assert!(!taken.is_new());
    a2.commit(taken).await.unwrap();
    // The request's backup is refused; the read of the copy that follows waits.
    gated.hold_next_read(x_key.clone());
    let committing = {
        let a1 = a1.clone();
        tokio::spawn(async move { a1.commit(request).await })
    };
    gated.reached.notified().await;
    // Meanwhile the login cycles the id; its backup waits behind the one on its way.
    login.insert("user", "victim").unwrap();
    login.cycle_id();
    let logging_in = {
        let a1 = a1.clone();
        tokio::spawn(async move { a1.commit(login).await })
    };
    // The read goes on once the login's tombstone is over X.
    for _ in 0..5_000 {
        let stored = memory.get(&node("n1"), &x_key).await.unwrap();
        if stored.is_some_and(|item| ends::tombstone_reason(&item.value).is_some()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    gated.release.notify_one();
    committing.await.unwrap().unwrap();
    let outcome = logging_in.await.unwrap().unwrap();
    let y = match outcome.cookie {
        CookieUpdate::Set { id, .. } if id.random() != x.random() => id,
        other => panic!("the login answered {other:?}"),
    };
    assert!(
        matches!(outcome.backup, BackupStatus::Written),
        "the login's backup: {:?}",
        outcome.backup
    );
    assert_eq!(
        get(&a1, &y, "user").await.as_deref(),
        Some("victim"),
        "the session under its new id is lost"
    );
    let y_key = a1.sticky().common.store_key(&y);
    let stored = memory.get(&node("n1"), &y_key).await.unwrap();
    assert!(
        stored.is_some_and(|item| ends::tombstone_reason(&item.value).is_none()),
        "the new id has no copy in the remote tier"
    );
}
