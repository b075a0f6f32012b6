//! Nodes that replicate themselves: whether sessions on them keep a backup copy of
//! their own ([`ReplicatedCopies`]), and what reads do after such a node (or the
//! node of a backup copy) failed over to an older state.

use super::*;
use crate::{BackupRefresh, ReplicatedCopies};

fn replicated(nodes: &[&str]) -> Arc<MemoryStore> {
    Arc::new(MemoryStore::new(nodes.iter().map(|id| node(id))).with_replication(true))
}

/// Operations a load and an unchanged commit of `id` send, background work included.
async fn read_costs(store: &MemoryStore, manager: &Manager, id: &SessionId) -> u64 {
    let before = store.operations();
    assert_eq!(read(manager, id, "a").await.as_deref(), Some("1"));
    settle(manager).await;
    store.operations() - before
}

/// Operations a changed commit of `id` sends, background work included, and what it
/// reports of the backup copy.
async fn write_costs(
    store: &MemoryStore,
    manager: &Manager,
    id: &SessionId,
) -> (u64, BackupStatus) {
    let before = store.operations();
    let mut session = manager.load(Some(id.as_str())).await.unwrap();
    session.insert("b", "2").unwrap();
    let backup = manager.commit(session).await.unwrap().backup;
    settle(manager).await;
    (store.operations() - before, backup)
}

/// By default a session on a node that replicates itself still gets a backup copy on
/// the next node: written with each change, touched with each unchanged request.
#[tokio::test]
async fn replicated_nodes_keep_their_backup_copies_by_default() {
    let store = replicated(&["n1", "n2"]);
    // Every read touches the copy, so that a read shows whether there is one.
    let a1 = builder(&store)
        .backup_refresh(BackupRefresh::EveryRead)
        .build()
        .unwrap();
    let id = create(&a1, "a", "1").await;
    settle(&a1).await;
    assert_eq!(
        store.item_count(&node("n1")) + store.item_count(&node("n2")),
        2
    );
    assert_eq!(
        read_costs(&store, &a1, &id).await,
        2,
        "get-and-touch, touch"
    );
    let (operations, backup) = write_costs(&store, &a1, &id).await;
    assert_eq!(
        operations, 3,
        "get-and-touch, compare-and-swap, backup write"
    );
    assert_eq!(backup, BackupStatus::Queued);
}

/// With `ReplicatedCopies::Skip`, a session on a node that replicates itself has one
/// copy: no backup write, touch or read, and its commits say no backup was needed.
/// While its node is down it cannot be read, and its next change moves it.
#[tokio::test]
async fn skip_keeps_one_copy_of_sessions_on_replicated_nodes() {
    let store = replicated(&["n1", "n2"]);
    let a1 = builder(&store)
        .copies_for_replicated_nodes(ReplicatedCopies::Skip)
        .build()
        .unwrap();
    let mut session = a1.load(None).await.unwrap();
    session.insert("a", "1").unwrap();
    let outcome = a1.commit(session).await.unwrap();
    assert_eq!(outcome.backup, BackupStatus::NotNeeded);
    let CookieUpdate::Set { id, .. } = outcome.cookie else {
        panic!("no cookie: {outcome:?}");
    };
    settle(&a1).await;
    assert_eq!(
        store.item_count(&node("n1")) + store.item_count(&node("n2")),
        1
    );
    assert_eq!(read_costs(&store, &a1, &id).await, 1, "get-and-touch only");
    let (operations, backup) = write_costs(&store, &a1, &id).await;
    assert_eq!(operations, 2, "get-and-touch, compare-and-swap");
    assert_eq!(backup, BackupStatus::NotNeeded);
    assert_eq!(a1.stats().backups_written, 0);
    assert_eq!(a1.nonsticky().copy_repairs.pending(), 0);

    let primary = node(id.node());
    store.set_node_up(&primary, false);
    assert!(matches!(
        a1.load(Some(id.as_str())).await,
        Err(LoadError::Unavailable)
    ));
    store.set_node_up(&primary, true);
    assert_eq!(read(&a1, &id, "b").await.as_deref(), Some("2"));
}

/// `Skip` concerns only nodes that replicate themselves: sessions on other nodes
/// keep their backup copy.
#[tokio::test]
async fn skip_leaves_nodes_that_do_not_replicate_alone() {
    let store = store(&["n1", "n2"]);
    let a1 = builder(&store)
        .backup_refresh(BackupRefresh::EveryRead)
        .copies_for_replicated_nodes(ReplicatedCopies::Skip)
        .build()
        .unwrap();
    let id = create(&a1, "a", "1").await;
    settle(&a1).await;
    assert_eq!(
        store.item_count(&node("n1")) + store.item_count(&node("n2")),
        2
    );
    assert_eq!(
        read_costs(&store, &a1, &id).await,
        2,
        "get-and-touch, touch"
    );
    let (_, backup) = write_costs(&store, &a1, &id).await;
    assert_eq!(backup, BackupStatus::Queued);
}
