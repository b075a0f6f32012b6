//! The request lifecycle: backups (asynchronous, coalesced, synchronous), shutdown,
//! invalidation and id changes.

use std::time::{Duration, Instant};

use tandem_manager::{BackupMode, BackupStatus, CookieUpdate};
use tandem_store_conformance::StoreFixture;

use crate::support::*;

/// A changed session is backed up once per change (its commit queues the backup); a
/// commit that writes a value equal to the stored one is not a change and needs no
/// backup, so it rewrites nothing (the remote copy keeps its CAS token, which every
/// write changes). Another server loads what was backed up.
pub async fn a_changed_session_is_backed_up_and_an_unchanged_one_is_not_rewritten<
    F: StoreFixture,
>() {
    let started = start::<F>(1).await;
    let a1 = sticky(&started.store, "a1").build().unwrap();
    let id = create(&a1, 1).await;
    settle(&a1).await;
    let first = started.stored(&id).await.expect("the first backup");

    // The same value: not a change.
    let mut session = a1.load(Some(id.as_str())).await.unwrap();
    session.insert("n", &1u32).unwrap();
    assert!(!session.is_modified(), "equal bytes made a change");
    let outcome = a1.commit(session).await.unwrap();
    assert_eq!(outcome.backup, BackupStatus::NotNeeded);
    settle(&a1).await;
    let unchanged = started.stored(&id).await.expect("the backup");
    assert_eq!(
        unchanged.cas, first.cas,
        "an unchanged session was rewritten"
    );
    assert_eq!(a1.stats().backups_written, 1);

    assert_eq!(write_n(&a1, &id, 2).await.backup, BackupStatus::Queued);
    settle(&a1).await;
    assert_eq!(a1.stats().backups_written, 2);
    let changed = started.stored(&id).await.expect("the backup");
    assert_ne!(changed.cas, first.cas, "the change was not written");

    let a2 = sticky(&started.store, "a2").build().unwrap();
    assert_eq!(read_n(&a2, &id).await, Some(2));
    assert_eq!(a2.stats().loaded_remote, 1);
}

/// While a node is unavailable, commits neither wait for the backup in progress nor
/// queue a write each: they coalesce into the newest state, which is written once the
/// node is back.
pub async fn commits_while_a_backup_is_pending_coalesce_into_the_newest_state<F: StoreFixture>() {
    let case = "commits_while_a_backup_is_pending_coalesce_into_the_newest_state";
    let started = start::<F>(1).await;
    let node = started.node(0).clone();
    let a1 = sticky(&started.store, "a1")
        .backup_concurrency(1)
        .build()
        .unwrap();
    let id = create(&a1, 0).await;
    settle(&a1).await;

    // A hung node holds the first write (a switched-off one fails it at once).
    if !started.make_unavailable(&node, case).await {
        return;
    }
    for n in 1..=20 {
        // Queued, not written: the commit returned without waiting for the store.
        let outcome = write_n(&a1, &id, n).await;
        assert_eq!(outcome.backup, BackupStatus::Queued, "commit {n}");
    }
    let coalesced = a1.stats().backups_coalesced;
    assert!(coalesced >= 18, "only {coalesced} of 20 commits coalesced");

    // The held write fails, which marks the node down; the newest state waits.
    let limit = started.operation_timeout() + SLACK;
    let failed = wait_until(limit, || a1.stats().backups_failed >= 1).await;
    assert!(
        failed.is_some(),
        "the write to the unavailable node did not fail"
    );
    assert!(a1.pending_backups() >= 1, "the newest state is not pending");

    started.make_available(&node).await;
    started.settle_after_recovery(&a1).await;
    let a2 = sticky(&started.store, "a2").build().unwrap();
    assert_eq!(read_n(&a2, &id).await, Some(20));
}

/// A synchronous backup is in the store when the commit returns. With the node
/// unavailable, the commit reports the failure after at most its timeout (the bound
/// allows seconds of slack for a busy machine: it proves no hang, not the exact
/// cost), and the backup is retried once the node is back.
pub async fn sync_backup_writes_before_returning_and_a_hung_node_costs_one_timeout<
    F: StoreFixture,
>() {
    let case = "sync_backup_writes_before_returning_and_a_hung_node_costs_one_timeout";
    let started = start::<F>(1).await;
    let node = started.node(0).clone();
    let timeout = Duration::from_millis(300);
    let a1 = sticky(&started.store, "a1")
        .backup(BackupMode::Sync { timeout })
        .build()
        .unwrap();
    let mut session = a1.load(None).await.unwrap();
    session.insert("n", &1u32).unwrap();
    let outcome = a1.commit(session).await.unwrap();
    assert_eq!(outcome.backup, BackupStatus::Written);
    let id = new_id(outcome.cookie);
    // Written already: the copy is in the store without waiting. (Read directly: a
    // request on another server would take the session over.)
    assert!(started.stored(&id).await.is_some(), "no copy in the store");

    let mut session = a1.load(Some(id.as_str())).await.unwrap();
    session.insert("n", &2u32).unwrap();
    if !started.make_unavailable(&node, case).await {
        return;
    }
    let began = Instant::now();
    let outcome = a1.commit(session).await.unwrap();
    let took = began.elapsed();
    assert!(
        matches!(outcome.backup, BackupStatus::Failed(_)),
        "{outcome:?}"
    );
    assert!(took < timeout + SLACK, "the commit took {took:?}");

    // The failed backup is retried once the node is back.
    started.make_available(&node).await;
    started.settle_after_recovery(&a1).await;
    let a3 = sticky(&started.store, "a3").build().unwrap();
    assert_eq!(read_n(&a3, &id.with_route(None)).await, Some(2));
}

/// A graceful shutdown writes every pending backup: a restarted server loads every
/// session from the store.
pub async fn graceful_shutdown_flushes_every_pending_backup<F: StoreFixture>() {
    let started = start::<F>(2).await;
    let a1 = sticky(&started.store, "a1").build().unwrap();
    let mut ids = Vec::new();
    for n in 0..100 {
        ids.push(create(&a1, n).await);
    }
    let report = a1.shutdown(Duration::from_secs(10)).await;
    assert_eq!(report.unsaved, 0);
    drop(a1);

    let restarted = sticky(&started.store, "a1").build().unwrap();
    for (n, id) in (0..).zip(&ids) {
        assert_eq!(read_n(&restarted, id).await, Some(n), "session {id}");
    }
    assert_eq!(restarted.stats().loaded_remote, 100);
}

/// An id change gives a new random id, and it and an invalidation each end the old
/// id's remote copy with a tombstone, written before the commit returns: no server
/// (the one that changed it included) loads the old id again, while the new id loads
/// everywhere.
pub async fn invalidation_and_cycle_id_end_the_old_remote_copy<F: StoreFixture>() {
    let started = start::<F>(1).await;
    let a1 = sticky(&started.store, "a1").build().unwrap();
    let id = create(&a1, 7).await;
    settle(&a1).await;

    let mut session = a1.load(Some(id.as_str())).await.unwrap();
    session.cycle_id();
    let cycled = new_id(a1.commit(session).await.unwrap().cookie);
    assert_ne!(
        cycled.random(),
        id.random(),
        "the id's secret did not change"
    );
    // The commit waited for the old copy's tombstone.
    let old = started.stored(&id).await.expect("a tombstone").value;
    assert!(old.starts_with(TOMBSTONE), "{old:?}");
    assert_eq!(a1.stats().tombstones_written, 1);
    settle(&a1).await;
    assert_eq!(read_n(&a1, &id).await, None, "the old id still loads here");
    assert_eq!(read_n(&a1, &cycled).await, Some(7));
    let a2 = sticky(&started.store, "a2").build().unwrap();
    assert_eq!(read_n(&a2, &id).await, None, "the old id still loads");
    assert_eq!(read_n(&a2, &cycled).await, Some(7));

    let mut session = a1.load(Some(cycled.as_str())).await.unwrap();
    session.invalidate();
    assert_eq!(
        a1.commit(session).await.unwrap().cookie,
        CookieUpdate::Clear
    );
    let ended = started.stored(&cycled).await.expect("a tombstone").value;
    assert!(ended.starts_with(TOMBSTONE), "{ended:?}");
    let a3 = sticky(&started.store, "a3").build().unwrap();
    assert_eq!(read_n(&a3, &cycled).await, None, "the invalidated id loads");
    assert_eq!(read_n(&a2, &cycled).await, None, "the invalidated id loads");
}
