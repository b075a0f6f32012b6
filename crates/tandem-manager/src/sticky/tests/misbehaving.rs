//! The manager over a store that misbehaves on request (unanswered reads and writes,
//! dropped answers), and the tests that need one; with them, further white-box tests
//! of sticky mode: the backup queue's dirty set, `commit_now`, the local tier's
//! expiry steps and its expiry without a request, the takeover check's digests, the
//! bound on unsaved sessions, learned lock patterns, a request waiting for a replaced
//! copy, the ends written at shutdown. Store-agnostic behaviour lives in
//! `tandem-behaviour` (see the parent module).

use super::*;
use std::time::Instant;

/// The memory store, misbehaving on demand: reads never answer while `hang` is set,
/// conditional writes never answer while `hang_writes` is, and writes get no answer
/// while `drop_answers` is (`write_many` answers no item, a single `write` fails).
/// Once armed, the next read (`get`) or single `write` of one key waits until the test
/// releases it (`interleaved`'s tests pin a race down with it).
pub(super) struct Misbehaving {
    inner: Arc<MemoryStore>,
    hang: AtomicBool,
    drop_answers: AtomicBool,
    hang_writes: AtomicBool,
    held_read: parking_lot::Mutex<Option<StoreKey>>,
    held_write: parking_lot::Mutex<Option<StoreKey>>,
    /// Notified when the held operation has started.
    pub(super) reached: tokio::sync::Notify,
    /// Lets the held operation go on.
    pub(super) release: tokio::sync::Notify,
}

impl Misbehaving {
    pub(super) fn over(inner: &Arc<MemoryStore>) -> Arc<Misbehaving> {
        Arc::new(Misbehaving {
            inner: Arc::clone(inner),
            hang: AtomicBool::new(false),
            drop_answers: AtomicBool::new(false),
            hang_writes: AtomicBool::new(false),
            held_read: parking_lot::Mutex::new(None),
            held_write: parking_lot::Mutex::new(None),
            reached: tokio::sync::Notify::new(),
            release: tokio::sync::Notify::new(),
        })
    }

    /// The next `get` of `key` waits for [`release`](Self::release).
    pub(super) fn hold_next_read(&self, key: StoreKey) {
        *self.held_read.lock() = Some(key);
    }

    /// The next `write` of `key` waits for [`release`](Self::release).
    pub(super) fn hold_next_write(&self, key: StoreKey) {
        *self.held_write.lock() = Some(key);
    }

    /// Waits for release if `key` is the one armed in `held`, and disarms it.
    async fn pass(&self, held: &parking_lot::Mutex<Option<StoreKey>>, key: &StoreKey) {
        let hold = {
            let mut held = held.lock();
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
    }
}

#[async_trait::async_trait]
impl RemoteStore for Misbehaving {
    async fn get(
        &self,
        node: &NodeId,
        key: &StoreKey,
    ) -> Result<Option<tandem_core::Item>, StoreError> {
        if self.hang.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        self.pass(&self.held_read, key).await;
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

    async fn set_many(
        &self,
        node: &NodeId,
        items: &[tandem_core::SetItem<'_>],
    ) -> Vec<Result<(), StoreError>> {
        if self.drop_answers.load(Ordering::SeqCst) {
            return Vec::new();
        }
        self.inner.set_many(node, items).await
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

    async fn delete(&self, node: &NodeId, key: &StoreKey) -> Result<bool, StoreError> {
        self.inner.delete(node, key).await
    }

    async fn touch(&self, node: &NodeId, key: &StoreKey, ttl: Ttl) -> Result<bool, StoreError> {
        self.inner.touch(node, key, ttl).await
    }

    async fn write(
        &self,
        node: &NodeId,
        key: &StoreKey,
        value: &[u8],
        ttl: Ttl,
        precondition: tandem_core::Precondition,
    ) -> Result<tandem_core::WriteOutcome, StoreError> {
        if self.hang_writes.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        self.pass(&self.held_write, key).await;
        if self.drop_answers.load(Ordering::SeqCst) {
            return Err(StoreError::Server {
                node: node.clone(),
                message: "no answer".into(),
            });
        }
        self.inner.write(node, key, value, ttl, precondition).await
    }

    async fn write_many(
        &self,
        node: &NodeId,
        items: &[tandem_core::WriteItem<'_>],
    ) -> Vec<Result<tandem_core::WriteOutcome, StoreError>> {
        if self.drop_answers.load(Ordering::SeqCst) {
            return Vec::new();
        }
        self.inner.write_many(node, items).await
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
        if self.hang.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        self.inner.get_with_ttl(node, key).await
    }

    fn nodes(&self) -> Vec<NodeId> {
        self.inner.nodes()
    }

    fn is_available(&self, node: &NodeId) -> bool {
        self.inner.is_available(node)
    }
}

#[tokio::test]
async fn a_remote_load_abandoned_by_every_request_leaves_nothing_behind() {
    let memory = store(&["n1"]);
    let hanging = Misbehaving::over(&memory);
    // a1 restarted as a2 (same route) holds nothing: a load reads the remote tier.
    let a1 = builder(&memory)
        .route(Route::new("a1").unwrap())
        .build()
        .unwrap();
    let id = create(&a1, &[("user", "ann")]).await;
    settle(&a1).await;
    let a2 = SessionManager::<TextCodec>::builder(Arc::clone(&hanging) as Arc<dyn RemoteStore>)
        .route(Route::new("a1").unwrap())
        .build()
        .unwrap();
    hanging.hang.store(true, Ordering::SeqCst);
    // Two requests share the hung load; both go away (the client hung up).
    let first = tokio::time::timeout(Duration::from_millis(20), a2.load(Some(id.as_str())));
    let second = tokio::time::timeout(Duration::from_millis(20), a2.load(Some(id.as_str())));
    let (first, second) = tokio::join!(first, second);
    assert!(
        first.is_err() && second.is_err(),
        "the loads should have hung"
    );
    assert_eq!(
        a2.sticky().loading.lock().len(),
        0,
        "an abandoned load stayed in the map"
    );
    // The next request loads the session for real.
    hanging.hang.store(false, Ordering::SeqCst);
    let session = a2.load(Some(id.as_str())).await.unwrap();
    assert_eq!(
        session.get::<String>("user").unwrap().as_deref(),
        Some("ann")
    );
    a2.commit(session).await.unwrap();
    assert_eq!(a2.sticky().loading.lock().len(), 0);
}

#[tokio::test]
async fn backups_a_store_leaves_unanswered_fail_and_are_retried() {
    let memory = store(&["n1"]);
    let misbehaving = Misbehaving::over(&memory);
    misbehaving.drop_answers.store(true, Ordering::SeqCst);
    // A long linger: the five backups go out as one batch.
    let manager =
        SessionManager::<TextCodec>::builder(Arc::clone(&misbehaving) as Arc<dyn RemoteStore>)
            .retry_interval(Duration::from_millis(50))
            .backup_linger(Duration::from_millis(100))
            .build()
            .unwrap();
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(create(&manager, &[("n", &i.to_string())]).await);
    }
    let n1 = node("n1");
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(manager.stats().backups_failed >= 5, "{:?}", manager.stats());
    assert_eq!(manager.stats().backups_written, 0);
    assert_eq!(memory.item_count(&n1), 0);
    assert!(manager.pending_backups() >= 5, "the sessions stay dirty");

    // Once the store answers again, the retries write every session.
    misbehaving.drop_answers.store(false, Ordering::SeqCst);
    for _ in 0..100 {
        if manager.pending_backups() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(manager.pending_backups(), 0);
    assert_eq!(memory.item_count(&n1), ids.len());
}

/// A commit marks its entry dirty after raising the revision, so a writer that sent
/// that revision meanwhile can clean the entry before the commit marks it: the entry
/// is then in the dirty set with nothing left to send. The next backup job (the
/// commit's own, or a sweep's retry) must take it out, not leave it counted as
/// unsaved for the rest of its life.
#[tokio::test]
async fn an_entry_marked_dirty_after_its_backup_landed_is_cleaned_by_the_next_job() {
    let store = store(&["n1"]);
    let manager = new_manager(&store);
    let id = create(&manager, &[("user", "ann")]).await;
    settle(&manager).await;
    let entry = manager.sticky().local.get(&local_key(&id)).unwrap();
    // The race's outcome: backed up, yet marked dirty again.
    manager.sticky().backups.mark_dirty(&entry);
    assert_eq!(manager.unsaved_sessions(), 1);
    let written = manager.stats().backups_written;
    settle(&manager).await;
    assert_eq!(manager.unsaved_sessions(), 0);
    assert!(!entry.in_dirty.load(Ordering::Acquire));
    assert_eq!(
        manager.stats().backups_written,
        written,
        "nothing newer to send: no write"
    );
}

/// `commit_now` does the commits that need nothing to wait for exactly as `commit`
/// would, and hands every other request back untouched.
#[tokio::test]
async fn commit_now_does_unchanged_local_commits_and_hands_back_the_rest() {
    let store = store(&["n1"]);
    let manager = builder(&store)
        .max_inactive(Some(Duration::from_secs(2)))
        .build()
        .unwrap();
    // A new session has to be stored.
    let mut session = manager.load(None).await.unwrap();
    session.insert("user", "ann").unwrap();
    let session = manager.commit_now(session).unwrap_err();
    assert_eq!(
        session.get::<String>("user").unwrap().as_deref(),
        Some("ann")
    );
    let CookieUpdate::Set { id, .. } = manager.commit(session).await.unwrap().cookie else {
        panic!("a new session gets a cookie");
    };
    settle(&manager).await;
    let before = manager.stats();
    // Unchanged: done here and now.
    let session = manager.load(Some(id.as_str())).await.unwrap();
    assert_eq!(
        manager.commit_now(session).unwrap(),
        CommitOutcome {
            cookie: CookieUpdate::Keep,
            backup: BackupStatus::NotNeeded,
        }
    );
    let after = manager.stats();
    assert_eq!(after.commits, before.commits + 1);
    assert_eq!(
        after.backups_skipped_unchanged,
        before.backups_skipped_unchanged + 1
    );
    // Changed, cycled or invalidated: handed back with the change, for `commit`.
    let mut session = manager.load(Some(id.as_str())).await.unwrap();
    session.insert("user", "bob").unwrap();
    let session = manager.commit_now(session).unwrap_err();
    assert_eq!(
        session.get::<String>("user").unwrap().as_deref(),
        Some("bob")
    );
    manager.commit(session).await.unwrap();
    settle(&manager).await;
    assert_eq!(get(&manager, &id, "user").await.as_deref(), Some("bob"));
    let mut session = manager.load(Some(id.as_str())).await.unwrap();
    session.cycle_id();
    let session = manager.commit_now(session).unwrap_err();
    let CookieUpdate::Set { id, .. } = manager.commit(session).await.unwrap().cookie else {
        panic!("a cycled id gets a cookie");
    };
    settle(&manager).await;
    let mut session = manager.load(Some(id.as_str())).await.unwrap();
    session.invalidate();
    let session = manager.commit_now(session).unwrap_err();
    assert_eq!(
        manager.commit(session).await.unwrap().cookie,
        CookieUpdate::Clear
    );
}

/// The local tier's expiry slides in steps (see `SessionExpiry`): a read leaves an
/// expiry of between the interval and the interval plus one step where it is, and
/// sets any other (less than the interval left, or more than a slide gives after the
/// interval was shortened) to the interval plus one step.
#[test]
fn the_local_expiry_slides_in_steps() {
    use moka::Expiry;

    use super::super::entry::SessionExpiry;

    let interval = Duration::from_secs(1600);
    let step = slide_step(interval);
    assert_eq!(step, Duration::from_secs(30), "a sixteenth, at most 30 s");
    let id = SessionId::generate(&node("n1"), None);
    let session = tandem_core::Session::<TextCodec>::new(
        id.clone(),
        std::time::SystemTime::now(),
        Some(interval),
    );
    let entry = Arc::new(LocalEntry::new(session, RemoteCopy::Absent, false, 0));
    let key = local_key(&id);
    let now = Instant::now();
    let read = |remaining: Duration| {
        SessionExpiry.expire_after_read(&key, &entry, now, Some(remaining), now)
    };
    let slid = Some(interval + step);
    assert_eq!(SessionExpiry.expire_after_create(&key, &entry, now), slid);
    assert_eq!(
        read(interval),
        Some(interval),
        "kept: the whole interval left"
    );
    assert_eq!(read(interval + step), slid, "kept: a full slide left");
    assert_eq!(read(interval - Duration::from_millis(1)), slid, "slid");
    assert_eq!(read(Duration::ZERO), slid, "slid");
    assert_eq!(
        read(interval + step + Duration::from_millis(1)),
        slid,
        "shortened"
    );
    assert_eq!(
        SessionExpiry.expire_after_update(&key, &entry, now, Some(Duration::ZERO)),
        slid
    );
}

/// A session nobody asks for again leaves the local tier by itself once the tier's
/// own clock passes its interval, and its expiry is handled (counted, its remote copy
/// ended). On real time: the tier's clock cannot be paused; the bound is generous.
#[tokio::test]
async fn a_session_left_alone_expires_in_the_tier_without_a_request() {
    let store = store(&["n1"]);
    let manager = builder(&store)
        .max_inactive(Some(Duration::from_millis(300)))
        .build()
        .unwrap();
    let id = create(&manager, &[("user", "ann")]).await;
    settle(&manager).await;
    let mut expired = false;
    for _ in 0..500 {
        manager.run_pending_tasks().await;
        if manager.stats().expired == 1 {
            expired = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(expired, "not expired within 10 s: {:?}", manager.stats());
    assert!(!manager.sticky().local.contains_key(id.storage_id()));
    settle(&manager).await;
    assert!(manager.load(Some(id.as_str())).await.unwrap().is_new());
}

/// The takeover check compares digests of stored bytes: equal bytes must give equal
/// digests, a change anywhere (here one byte of a session-sized value) a different
/// one, and no digest may be 0, which stands for "no known remote copy".
#[test]
fn digests_tell_stored_bytes_apart() {
    let stored: Vec<u8> = (0..500u32).map(|i| (i * 7 % 251) as u8).collect();
    assert_eq!(digest(&stored), digest(&stored.clone()));
    for position in [0, 1, 250, 499] {
        let mut changed = stored.clone();
        changed[position] ^= 1;
        assert_ne!(digest(&stored), digest(&changed), "byte {position}");
    }
    assert_ne!(digest(&stored[..499]), digest(&stored));
    for bytes in [&b""[..], b"x", &stored] {
        assert_ne!(digest(bytes), 0);
    }
}

/// L2: while the remote tier is unreachable, changed sessions wait in memory; past
/// `max_unsaved_bytes` a commit that would add another is refused (and counted), one
/// that changes a session already waiting goes on, and once the node is back and the
/// backups land, new sessions are taken again.
#[tokio::test]
async fn unsaved_sessions_are_bounded_while_the_remote_tier_is_down() {
    let store = store(&["n1"]);
    let manager = builder(&store).max_unsaved_bytes(4096).build().unwrap();
    let waiting = create(&manager, &[("a", "1")]).await;
    settle(&manager).await;
    store.set_node_up(&node("n1"), false);
    let mut refused = None;
    for _ in 0..100 {
        let mut session = manager.load(None).await.unwrap();
        session.insert("payload", &"x".repeat(200)).unwrap();
        match manager.commit(session).await {
            Ok(_) => {}
            Err(error) => {
                refused = Some(error);
                break;
            }
        }
    }
    assert!(
        matches!(refused, Some(CommitError::Unavailable { .. })),
        "{refused:?}"
    );
    assert_eq!(manager.stats().unsaved_limit_hits, 1);
    assert!(manager.unsaved_sessions() < 100);
    // A session already waiting may keep changing; one not waiting may not.
    let mut session = manager.load(None).await.unwrap();
    session.insert("a", "new").unwrap();
    assert!(manager.commit(session).await.is_err());
    let mut first_unsaved = manager.load(Some(waiting.as_str())).await.unwrap();
    first_unsaved.insert("a", "2").unwrap();
    assert!(
        manager.commit(first_unsaved).await.is_err(),
        "a saved session becoming unsaved is one more"
    );

    store.set_node_up(&node("n1"), true);
    settle(&manager).await;
    assert_eq!(manager.unsaved_sessions(), 0);
    let fresh = create(&manager, &[("a", "3")]).await;
    assert_eq!(get(&manager, &fresh, "a").await.as_deref(), Some("3"));
}

/// M5: `LockScope::Auto` learns per request pattern; a client that sends many long
/// distinct paths evicts patterns (counted) instead of growing the cache, and the
/// learned part of a path is capped.
#[tokio::test]
async fn learned_lock_patterns_are_bounded_in_bytes() {
    let store = store(&["n1"]);
    let manager = builder(&store)
        .mode(Mode::NonSticky)
        .concurrency(Concurrency::Lock)
        .lock_scope(LockScope::Auto)
        .build()
        .unwrap();
    let id = create(&manager, &[("a", "1")]).await;
    // Requests with long paths learn capped patterns.
    let long = "p".repeat(100_000);
    for n in 0..3 {
        let path = format!("/{n}/{long}");
        let request = RequestInfo {
            method: "GET",
            path: &path,
        };
        let session = manager
            .load_for(Some(id.as_str()), Some(&request))
            .await
            .unwrap();
        manager.commit(session).await.unwrap();
    }
    let patterns = &manager.nonsticky().read_only_streaks;
    patterns.run_pending_tasks();
    assert_eq!(patterns.entry_count(), 3);
    assert!(
        patterns.iter().all(|(pattern, _)| pattern.len() <= 4 + 256),
        "a pattern longer than its cap"
    );
    // Many more distinct patterns (as many requests would learn) stay within the
    // cache's bytes, the rest evicted and counted.
    for n in 0..20_000 {
        patterns.insert(format!("GET /{n}/{}", &long[..250]).into(), 1);
    }
    patterns.run_pending_tasks();
    assert!(
        patterns.weighted_size() <= nonsticky::MAX_PATTERN_BYTES,
        "{} bytes of patterns",
        patterns.weighted_size()
    );
    assert!(manager.stats().lock_patterns_evicted > 0);
}

/// L7: a commit waits for the earlier commits of its session in this process at most
/// the lock timeout (here they hang on a node that does not answer), then fails with
/// `CommitError::LockTimeout`.
/// On paused time: the wait is the lock timeout, exactly, however busy the machine.
#[tokio::test(start_paused = true)]
async fn a_commit_waits_for_earlier_commits_at_most_the_lock_timeout() {
    let memory = store(&["n1"]);
    let misbehaving = Misbehaving::over(&memory);
    let manager =
        SessionManager::<TextCodec>::builder(Arc::clone(&misbehaving) as Arc<dyn RemoteStore>)
            .mode(Mode::NonSticky)
            .lock_timeout(Duration::from_millis(200), LockTimeoutPolicy::Fail)
            .clock(Arc::new(TokioClock::new()))
            .build()
            .unwrap();
    let id = create(&manager, &[("a", "1")]).await;
    let mut first = manager.load(Some(id.as_str())).await.unwrap();
    let mut second = manager.load(Some(id.as_str())).await.unwrap();
    first.insert("a", "2").unwrap();
    second.insert("b", "3").unwrap();
    misbehaving.hang_writes.store(true, Ordering::SeqCst);
    let hanging = {
        let manager = manager.clone();
        tokio::spawn(async move { manager.commit(first).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    let started = tokio::time::Instant::now();
    let waited = manager.commit(second).await;
    assert!(
        matches!(waited, Err(CommitError::LockTimeout { waited }) if waited == Duration::from_millis(200)),
        "{waited:?}"
    );
    assert_eq!(started.elapsed(), Duration::from_millis(200));
    hanging.abort();
}

/// L6: a request that waited for its session's lock (`Concurrency::Lock`) while the copy
/// it found was replaced by a newer one (a takeover check) gets the newer copy, not a
/// new session with its cookie cleared.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_waiting_for_a_replaced_copy_gets_the_new_copy() {
    let store = store(&["n1"]);
    let manager = builder(&store)
        .route(Route::new("a1").unwrap())
        .concurrency(Concurrency::Lock)
        .build()
        .unwrap();
    let id = create(&manager, &[("a", "1")]).await;
    let first = manager.load(Some(id.as_str())).await.unwrap();
    let waiting = {
        let (manager, id) = (manager.clone(), id.clone());
        tokio::spawn(async move { manager.load(Some(id.as_str())).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    // What a takeover check does when the remote copy changed: a new entry under the
    // key, the old one retired.
    let key = local_key(&id);
    let old = manager.sticky().local.get(&key).unwrap();
    let mut session = old.state.lock().session.session();
    session
        .apply(
            "a",
            Some(AttributeValue::new(TextCodec::ID, b"2".as_slice())),
        )
        .unwrap();
    session.mark_unchanged();
    let newer = Arc::new(LocalEntry::new(
        session,
        RemoteCopy::Absent,
        true,
        manager.sticky().common.now_ms(),
    ));
    manager.sticky().local.insert(key.clone(), newer);
    manager.sticky().discard(&key, &old);
    drop(first);
    let waited = waiting.await.unwrap().unwrap();
    assert!(!waited.is_new(), "the waiting request lost its session");
    assert_eq!(waited.get::<String>("a").unwrap().as_deref(), Some("2"));
}

/// L8: at shutdown, ends that waited for their node (a logout while the node was down)
/// are written once it answers, within the deadline.
#[tokio::test]
async fn shutdown_writes_the_ends_that_waited_for_their_node() {
    let store = store(&["n1"]);
    let manager = builder(&store)
        .retry_interval(Duration::from_secs(3600))
        .build()
        .unwrap();
    let id = create(&manager, &[("a", "1")]).await;
    settle(&manager).await;
    store.set_node_up(&node("n1"), false);
    let mut session = manager.load(Some(id.as_str())).await.unwrap();
    session.invalidate();
    assert_eq!(
        manager.commit(session).await.unwrap().cookie,
        CookieUpdate::Clear
    );
    assert_eq!(manager.pending_ends(), 1);
    store.set_node_up(&node("n1"), true);
    let report = manager.shutdown(Duration::from_secs(2)).await;
    assert_eq!(report.ends_unwritten, 0);
    assert_eq!(manager.pending_ends(), 0);
    let stored = store
        .get(&node("n1"), &manager.engine.common().store_key(&id))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        ends::tombstone_reason(&stored.value),
        Some(ends::EndReason::Ended)
    );
}
