//! Expiry and keep-alive on tokio's paused time ([`TokioClock`]): half an hour passes
//! in no time, and exactly as long as the test says, so the bounds below are exact
//! instead of margins on a shared machine's clock. Paused time cannot drive a real
//! server, so these stay on the in-process store; `tandem-behaviour` checks expiry
//! and keep-alive over every store on real time, with margins.

use std::time::Duration;

use super::*;

/// A store and a manager builder on one paused clock.
fn paused(nodes: &[&str]) -> (Arc<MemoryStore>, ManagerBuilder<TextCodec>) {
    let clock: Arc<dyn tandem_core::Clock> = Arc::new(TokioClock::new());
    let store =
        Arc::new(MemoryStore::new(nodes.iter().map(|id| node(id))).with_clock(Arc::clone(&clock)));
    let builder = builder(&store).clock(clock);
    (store, builder)
}

const INTERVAL: Duration = Duration::from_secs(30 * 60);
/// How far from a deadline the tests step. Paused time is exact, but `settle` polls
/// with sleeps, which move it by a few milliseconds.
const MARGIN: Duration = Duration::from_secs(1);

/// A session read just before its interval runs out stays, and its interval counts
/// again from that read; left alone for its whole interval, it is expired when a
/// request finds it, not a second before, and its remote copy is ended.
#[tokio::test(start_paused = true)]
async fn a_session_expires_its_interval_after_its_last_request() {
    let (store, builder) = paused(&["n1"]);
    let manager = builder.max_inactive(Some(INTERVAL)).build().unwrap();
    let id = create(&manager, &[("user", "ann")]).await;
    settle(&manager).await;

    tokio::time::advance(INTERVAL - MARGIN).await;
    assert_eq!(get(&manager, &id, "user").await.as_deref(), Some("ann"));
    tokio::time::advance(INTERVAL - MARGIN).await;
    assert_eq!(get(&manager, &id, "user").await.as_deref(), Some("ann"));
    assert_eq!(manager.stats().expired, 0);

    tokio::time::advance(INTERVAL).await;
    let session = manager.load(Some(id.as_str())).await.unwrap();
    assert!(session.is_new(), "expired after its interval");
    assert_ne!(session.id(), &id);
    drop(session);
    settle(&manager).await;
    assert_eq!(manager.stats().expired, 1);
    // The remote copy was replaced by a tombstone: another server does not load it.
    let other = builder_on(&store)
        .max_inactive(Some(INTERVAL))
        .build()
        .unwrap();
    assert!(other.load(Some(id.as_str())).await.unwrap().is_new());
    // Every request after that gets a new session, and the expiry is handled once.
    assert!(manager.load(Some(id.as_str())).await.unwrap().is_new());
    settle(&manager).await;
    assert_eq!(manager.stats().expired, 1);
}

/// A manager on the same store and clock as `paused` gave, standing in for another
/// app server.
fn builder_on(store: &Arc<MemoryStore>) -> ManagerBuilder<TextCodec> {
    builder(store)
        .route(Route::new("other").unwrap())
        .clock(Arc::new(TokioClock::new()))
}

/// A shorter interval set by a request takes effect from the next read, not one old
/// interval later.
#[tokio::test(start_paused = true)]
async fn a_shortened_interval_takes_effect_at_the_next_read() {
    let (_store, builder) = paused(&["n1"]);
    let manager = builder.max_inactive(Some(INTERVAL)).build().unwrap();
    let id = create(&manager, &[("user", "ann")]).await;
    let mut session = manager.load(Some(id.as_str())).await.unwrap();
    let short = Duration::from_secs(60);
    session.set_max_inactive(Some(short));
    manager.commit(session).await.unwrap();
    assert_eq!(get(&manager, &id, "user").await.as_deref(), Some("ann"));
    tokio::time::advance(short - MARGIN).await;
    assert_eq!(get(&manager, &id, "user").await.as_deref(), Some("ann"));
    tokio::time::advance(short).await;
    assert!(manager.load(Some(id.as_str())).await.unwrap().is_new());
}

/// Unchanged reads extend the remote copy's expiry once per half of the keep-alive
/// slack, not on every request: the first read after that much time touches it, the
/// reads before do not.
#[tokio::test(start_paused = true)]
async fn unchanged_reads_touch_the_remote_copy_once_per_half_slack() {
    let (_store, builder) = paused(&["n1"]);
    let manager = builder.max_inactive(Some(INTERVAL)).build().unwrap();
    let id = create(&manager, &[("user", "ann")]).await;
    settle(&manager).await;
    let half_slack = keepalive_slack(INTERVAL) / 2;

    tokio::time::advance(half_slack - MARGIN).await;
    let session = manager.load(Some(id.as_str())).await.unwrap();
    assert!(manager.commit_now(session).is_ok(), "not due yet");
    settle(&manager).await;
    assert_eq!(manager.stats().touches, 0);

    tokio::time::advance(2 * MARGIN).await;
    let session = manager.load(Some(id.as_str())).await.unwrap();
    let session = manager.commit_now(session).unwrap_err();
    manager.commit(session).await.unwrap();
    settle(&manager).await;
    assert_eq!(manager.stats().touches, 1);
    // Refreshed by that touch: the next read is not due again.
    assert_eq!(get(&manager, &id, "user").await.as_deref(), Some("ann"));
    settle(&manager).await;
    assert_eq!(manager.stats().touches, 1);
}

/// A backup that fails is retried every retry interval, no sooner, until it lands.
#[tokio::test(start_paused = true)]
async fn a_failed_backup_is_retried_after_the_retry_interval() {
    let (store, builder) = paused(&["n1"]);
    let retry = Duration::from_secs(10);
    let manager = builder.retry_interval(retry).build().unwrap();
    let n1 = node("n1");
    store.set_node_up(&n1, false);
    create(&manager, &[("user", "ann")]).await;
    tokio::time::sleep(retry / 2).await;
    let failed = manager.stats().backups_failed;
    assert!(failed >= 1, "{:?}", manager.stats());
    assert_eq!(manager.pending_backups(), 1);

    store.set_node_up(&n1, true);
    // Not before the retry interval has passed since the failure.
    tokio::time::sleep(retry / 4).await;
    assert_eq!(manager.stats().backups_written, 0);
    tokio::time::sleep(retry).await;
    assert_eq!(manager.stats().backups_written, 1);
    assert_eq!(manager.pending_backups(), 0);
    assert_eq!(store.item_count(&n1), 1);
}

/// Sets attribute `name` in a request of its own.
async fn set(manager: &SessionManager<TextCodec>, id: &SessionId, name: &str, value: &str) {
    let mut session = manager.load(Some(id.as_str())).await.unwrap();
    assert!(!session.is_new(), "{id} is gone");
    session.insert(name, value).unwrap();
    manager.commit(session).await.unwrap();
}

/// A store that went back in time (a Redis restarted from its snapshot) hands the
/// owner an older copy of its session under a new token. The owner's next write is
/// refused, finds a copy older than what it wrote, and replaces it, instead of
/// taking it for another server's and dropping its own newer state. A copy another
/// server derived from the owner's (a takeover) is never older, and still wins.
#[tokio::test(start_paused = true)]
async fn an_older_copy_from_a_restored_store_is_replaced_not_obeyed() {
    let (store, builder) = paused(&["n1"]);
    // No peer feed: the other server's announcement of its takeover would make this
    // one drop its copy before its write is refused, or not, depending on when the
    // feed's task runs.
    let manager = builder
        .max_inactive(Some(INTERVAL))
        .peer_feed_interval(None)
        .build()
        .unwrap();
    let n1 = node("n1");
    let id = create(&manager, &[("n", "1")]).await;
    settle(&manager).await;
    let key = manager.sticky().common.store_key(&id);
    let snapshot = store.get(&n1, &key).await.unwrap().unwrap().value;
    for n in ["2", "3"] {
        tokio::time::advance(MARGIN).await;
        set(&manager, &id, "n", n).await;
        settle(&manager).await;
    }
    // The store restarts from its snapshot: the first copy is back, with a new token.
    store
        .set(&n1, &key, &snapshot, Ttl::After(INTERVAL))
        .await
        .unwrap();
    tokio::time::advance(MARGIN).await;
    set(&manager, &id, "n", "4").await;
    settle(&manager).await;
    assert_eq!(manager.stats().stale_copies_replaced, 1);
    assert_eq!(manager.stats().ownership_lost, 0);
    assert_eq!(get(&manager, &id, "n").await.as_deref(), Some("4"));
    let other = builder_on(&store)
        .max_inactive(Some(INTERVAL))
        .build()
        .unwrap();
    assert_eq!(get(&other, &id, "n").await.as_deref(), Some("4"));

    // That server took the session over and wrote it (a later access, derived from
    // the owner's copy): the owner's next write is refused for good.
    tokio::time::advance(MARGIN).await;
    set(&other, &id, "n", "5").await;
    settle(&other).await;
    tokio::time::advance(MARGIN).await;
    let mut session = manager.load(Some(id.as_str())).await.unwrap();
    session.insert("n", "6").unwrap();
    let _ = manager.commit(session).await;
    settle(&manager).await;
    assert_eq!(manager.stats().ownership_lost, 1);
    assert_eq!(manager.stats().stale_copies_replaced, 1);
    assert_eq!(get(&other, &id, "n").await.as_deref(), Some("5"));
}

/// A failover of the session's node that lost its last backup puts an older copy
/// back, under the newer local state. Only reads follow, so nothing changes: the first
/// keep-alive due after the failover writes the whole current state instead of
/// touching (a touch would keep the older copy alive), and the older copy is replaced
/// rather than taken for another server's.
#[tokio::test(start_paused = true)]
async fn a_keepalive_after_a_failover_rewrites_the_older_copy() {
    let (store, builder) = paused(&["n1"]);
    let manager = builder
        .max_inactive(Some(INTERVAL))
        .peer_feed_interval(None)
        .build()
        .unwrap();
    let n1 = node("n1");
    let id = create(&manager, &[("n", "1")]).await;
    settle(&manager).await;
    let snapshot = store.snapshot(&n1).unwrap();
    tokio::time::advance(MARGIN).await;
    set(&manager, &id, "n", "2").await;
    settle(&manager).await;
    assert!(store.fail_over(&n1, &snapshot));
    let half_slack = keepalive_slack(INTERVAL) / 2;

    // Reads within the keep-alive period send nothing.
    let operations = store.operations();
    tokio::time::advance(half_slack - 2 * MARGIN).await;
    assert_eq!(get(&manager, &id, "n").await.as_deref(), Some("2"));
    settle(&manager).await;
    assert_eq!(store.operations(), operations);

    // The first one due rewrites the copy.
    tokio::time::advance(2 * MARGIN).await;
    assert_eq!(get(&manager, &id, "n").await.as_deref(), Some("2"));
    settle(&manager).await;
    let stats = manager.stats();
    assert_eq!(stats.backups_rewritten_after_epoch_change, 1, "{stats:?}");
    assert_eq!(stats.stale_copies_replaced, 1, "{stats:?}");
    assert_eq!((stats.touches, stats.ownership_lost), (0, 0), "{stats:?}");
    let other = builder_on(&store)
        .max_inactive(Some(INTERVAL))
        .build()
        .unwrap();
    assert_eq!(get(&other, &id, "n").await.as_deref(), Some("2"));
}

/// The rewrite records the new epoch: the keep-alives after it are touches again.
/// And without any epoch change, keep-alives are only ever touches, one operation
/// each.
#[tokio::test(start_paused = true)]
async fn keepalives_are_touches_while_the_epoch_stays() {
    let (store, builder) = paused(&["n1"]);
    // No peer feed: its reads would be counted among the operations.
    let manager = builder
        .max_inactive(Some(INTERVAL))
        .peer_feed_interval(None)
        .build()
        .unwrap();
    let n1 = node("n1");
    let id = create(&manager, &[("n", "1")]).await;
    settle(&manager).await;
    let half_slack = keepalive_slack(INTERVAL) / 2;
    let operations = store.operations();
    for _ in 0..3 {
        tokio::time::advance(half_slack + MARGIN).await;
        assert_eq!(get(&manager, &id, "n").await.as_deref(), Some("1"));
        settle(&manager).await;
    }
    let stats = manager.stats();
    assert_eq!(store.operations() - operations, 3);
    assert_eq!((stats.touches, stats.backups_written), (3, 1), "{stats:?}");
    assert_eq!(stats.backups_rewritten_after_epoch_change, 0);

    // A failover that lost nothing: one rewrite (its condition still holds), then
    // touches again.
    assert!(store.fail_over(&n1, &store.snapshot(&n1).unwrap()));
    for _ in 0..2 {
        tokio::time::advance(half_slack + MARGIN).await;
        assert_eq!(get(&manager, &id, "n").await.as_deref(), Some("1"));
        settle(&manager).await;
    }
    let stats = manager.stats();
    assert_eq!(stats.backups_rewritten_after_epoch_change, 1, "{stats:?}");
    assert_eq!((stats.touches, stats.backups_written), (4, 2), "{stats:?}");
    assert_eq!(stats.stale_copies_replaced, 0, "{stats:?}");
}

/// After a failover, a server that took the session over wrote a copy derived from
/// the owner's newest state: it is not older, so the owner's rewrite is refused and
/// the owner gives the session up instead of overwriting it.
#[tokio::test(start_paused = true)]
async fn a_rewrite_after_a_failover_never_replaces_a_takeovers_copy() {
    let (store, builder) = paused(&["n1"]);
    let manager = builder
        .max_inactive(Some(INTERVAL))
        .peer_feed_interval(None)
        .build()
        .unwrap();
    let n1 = node("n1");
    let id = create(&manager, &[("n", "1")]).await;
    settle(&manager).await;
    tokio::time::advance(MARGIN).await;
    set(&manager, &id, "n", "2").await;
    settle(&manager).await;
    // A failover that lost nothing; then another server takes the session over.
    assert!(store.fail_over(&n1, &store.snapshot(&n1).unwrap()));
    let other = builder_on(&store)
        .max_inactive(Some(INTERVAL))
        .peer_feed_interval(None)
        .build()
        .unwrap();
    tokio::time::advance(MARGIN).await;
    set(&other, &id, "n", "3").await;
    settle(&other).await;

    tokio::time::advance(keepalive_slack(INTERVAL) / 2).await;
    assert_eq!(get(&manager, &id, "n").await.as_deref(), Some("2"));
    settle(&manager).await;
    let stats = manager.stats();
    assert_eq!(stats.backups_rewritten_after_epoch_change, 1, "{stats:?}");
    assert_eq!(stats.stale_copies_replaced, 0, "{stats:?}");
    assert_eq!(stats.ownership_lost, 1, "{stats:?}");
    assert_eq!(get(&other, &id, "n").await.as_deref(), Some("3"));
}
