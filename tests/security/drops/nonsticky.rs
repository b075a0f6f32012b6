//! Non-sticky mode: loads, commits and ends dropped at every point.

use super::sticky::{Ending, SYNC};
use super::*;

/// How a non-sticky sweep's managers are configured.
#[derive(Clone, Copy, Debug)]
pub(super) struct NonSticky {
    concurrency: Concurrency,
    backup: BackupMode,
    /// Writes whose caller is dropped still land, after the drop.
    on_the_wire: bool,
}

impl NonSticky {
    fn label(self) -> String {
        let backup = match self.backup {
            BackupMode::Async => "async",
            BackupMode::Sync { .. } => "sync",
        };
        let wire = if self.on_the_wire {
            ", writes land after drops"
        } else {
            ""
        };
        format!("non-sticky {:?}, {backup}{wire}", self.concurrency)
    }

    fn server(self, store: Arc<dyn RemoteStore>) -> Manager {
        non_sticky_over(store)
            .concurrency(self.concurrency)
            .lock_scope(LockScope::All)
            .lock_ttl(LOCK_TTL)
            .lock_timeout(NS_LOCK_TIMEOUT, LockTimeoutPolicy::Fail)
            .backup(self.backup)
            .build()
            .unwrap()
    }
}

/// The bytes memcached holds for `id` in `space` on `node_id`.
pub(super) async fn stored(
    store: &MemcachedStore,
    node_id: &str,
    space: KeySpace,
    id: &SessionId,
) -> Option<Vec<u8>> {
    store
        .get(&node(node_id), &key(space, id))
        .await
        .ok()
        .flatten()
        .map(|item| item.value)
}

/// The backup copy holds what the primary holds, within [`DRAIN_BOUND`] (a copy that
/// a dropped commit left behind is repaired by then): a primary lost now would not
/// take a state that requests already read with it.
pub(super) async fn copies_agree(
    sweep: &mut Sweep,
    k: usize,
    cluster: &MemcachedCluster,
    store: &MemcachedStore,
    id: &SessionId,
) {
    let primary_node = id.node().to_owned();
    let backup_node = ring_successor(cluster, &primary_node);
    let copies = || async {
        (
            stored(store, &primary_node, KeySpace::Session, id).await,
            stored(store, &backup_node, KeySpace::Backup, id).await,
        )
    };
    let agree = wait_until_async(DRAIN_BOUND, || async {
        let (primary, backup) = copies().await;
        primary.is_some() && primary == backup
    })
    .await;
    if agree.is_none() {
        let (primary, backup) = copies().await;
        sweep.check(k, false, || {
            format!(
                "the backup copy ({} bytes) differs from the primary ({} bytes) after {DRAIN_BOUND:?}",
                backup.map_or(0, |bytes| bytes.len()),
                primary.map_or(0, |bytes| bytes.len()),
            )
        });
    }
}

/// A read-only request on `manager`: gets in at once; its `n`.
pub(super) async fn ns_read(
    sweep: &mut Sweep,
    k: usize,
    manager: &Manager,
    id: &SessionId,
    what: &str,
) -> Option<u32> {
    let session = next_request(sweep, k, manager, id, what).await?;
    let n = n_of(&session);
    let outcome = manager.commit(session).await;
    sweep.check(k, outcome.is_ok(), || {
        format!("a read-only commit on {what}: {}", describe(&outcome))
    });
    n
}

/// What a non-sticky sweep drops.
#[derive(Clone, Copy, Debug)]
pub(super) enum NsDrop {
    Load,
    Commit,
}

/// A non-sticky `load` (under Lock: the local lock, the remote lock, the read) or
/// commit of a change (the remote lock check, the compare-and-swap write, the backup
/// copy) dropped at every point on server A. After each drop the next request on
/// another server B, then on A, gets in at once (no lock left until its TTL); both
/// read the same state; the backup copy agrees with the primary; an acknowledged
/// change on A is what B then reads; A's background work drains, and its shutdown
/// returns at once.
pub(super) async fn ns_sweep(
    cluster: &MemcachedCluster,
    store: &Arc<MemcachedStore>,
    setup: NonSticky,
    dropping: NsDrop,
    failures: &mut Vec<String>,
) {
    let what = match dropping {
        NsDrop::Load => "load",
        NsDrop::Commit => "commit of a change",
    };
    let mut sweep = Sweep::new(format!("{}: {what}", setup.label()));
    for k in 0.. {
        let faulty = Faulty::new(store);
        let a = setup.server(faulty.clone());
        let b = setup.server(store.clone());
        let x = create(&a, 1).await;
        settle(&a).await;
        delay_everything(&faulty, setup.on_the_wire);
        let completed = match dropping {
            NsDrop::Load => {
                let loaded = poll_then_drop(a.load(Some(x.as_str())), k).await;
                if let Some(loaded) = &loaded {
                    let n = loaded.as_ref().ok().and_then(n_of);
                    sweep.check(k, n == Some(1), || {
                        format!("the load completed with n = {n:?}")
                    });
                }
                loaded.is_some()
            }
            NsDrop::Commit => {
                let mut request = a.load(Some(x.as_str())).await.unwrap();
                request.insert("n", &2u32).unwrap();
                let committed = poll_then_drop(a.commit(request), k).await;
                if let Some(committed) = &committed {
                    sweep.check(k, committed.is_ok(), || {
                        format!("the commit completed with {}", describe(committed))
                    });
                }
                committed.is_some()
            }
        };
        delay_nothing(&faulty);
        let on_b = ns_read(&mut sweep, k, &b, &x, "another server").await;
        let possible: &[u32] = match dropping {
            NsDrop::Load => &[1],
            NsDrop::Commit if completed => &[2],
            NsDrop::Commit => &[1, 2],
        };
        sweep.check(k, on_b.is_some_and(|n| possible.contains(&n)), || {
            format!("another server reads n = {on_b:?}, expected one of {possible:?}")
        });
        // Not necessarily what B read: a write that was on the wire when its commit
        // was dropped may land in between (nothing can call it back). But once B saw
        // the change, nobody may see the state before it.
        let on_a = ns_read(&mut sweep, k, &a, &x, "the same server").await;
        sweep.check(
            k,
            on_a.is_some_and(|n| possible.contains(&n) && Some(n) >= on_b),
            || format!("the same server reads n = {on_a:?} after another one read {on_b:?}"),
        );
        drained(&mut sweep, k, &a).await;
        copies_agree(&mut sweep, k, cluster, store, &x).await;
        acknowledged_write(&mut sweep, k, &a, &x, 3, "the same server").await;
        let after = ns_read(&mut sweep, k, &b, &x, "another server").await;
        sweep.check(k, after == Some(3), || {
            format!("another server reads n = {after:?} after the acknowledged 3")
        });
        drained(&mut sweep, k, &a).await;
        drained(&mut sweep, k, &b).await;
        copies_agree(&mut sweep, k, cluster, store, &x).await;
        shuts_down(&mut sweep, k, &a).await;
        sweep.outcome(k, ran(completed));
        if sweep.over(k, completed) {
            break;
        }
    }
    sweep.finish(failures);
}

/// A non-sticky logout or id change dropped at every point on server A. After each
/// drop the old id is either valid on A and on another server B (holding its state),
/// or ended on both, with no copy of it left on any node; the next request gets in at
/// once either way.
pub(super) async fn ns_end(
    cluster: &MemcachedCluster,
    store: &Arc<MemcachedStore>,
    setup: NonSticky,
    ending: Ending,
    failures: &mut Vec<String>,
) {
    let mut sweep = Sweep::new(format!("{}: {ending:?} commit", setup.label()));
    for k in 0.. {
        let faulty = Faulty::new(store);
        let a = setup.server(faulty.clone());
        let b = setup.server(store.clone());
        let x = create(&a, 1).await;
        settle(&a).await;
        delay_everything(&faulty, setup.on_the_wire);
        let mut request = a.load(Some(x.as_str())).await.unwrap();
        match ending {
            Ending::Invalidate => request.invalidate(),
            Ending::Cycle => {
                request.insert("user", &42u32).unwrap();
                request.cycle_id();
            }
        }
        let committed = poll_then_drop(a.commit(request), k).await;
        delay_nothing(&faulty);
        let completed = committed.is_some();
        if let Some(committed) = &committed {
            let expected = match (ending, committed) {
                (Ending::Invalidate, Ok(outcome)) => outcome.cookie == CookieUpdate::Clear,
                (Ending::Cycle, Ok(outcome)) => {
                    matches!(&outcome.cookie, CookieUpdate::Set { id, .. } if id.random() != x.random())
                }
                (_, Err(_)) => false,
            };
            sweep.check(k, expected, || {
                format!("the commit completed with {}", describe(committed))
            });
        }
        let Some(on_a) = next_request(&mut sweep, k, &a, &x, "A").await else {
            sweep.outcome(k, format!("A failed ({})", ran(completed)));
            if sweep.over(k, completed) {
                break;
            }
            continue;
        };
        let ended = on_a.is_new();
        if !ended {
            let n = n_of(&on_a);
            sweep.check(k, n == Some(1), || {
                format!("the old id is still valid on A but holds n = {n:?}, not 1")
            });
        }
        sweep.check(k, ended || !completed, || {
            "the commit completed but the old id is still valid on A".into()
        });
        let outcome = a.commit(on_a).await;
        sweep.check(k, outcome.is_ok(), || {
            format!("A's read-only commit: {}", describe(&outcome))
        });
        let b_agrees = wait_until_async(END_BOUND, || async {
            match timed_load(&b, &x).await {
                (Ok(session), took) if took < NEXT_REQUEST_BOUND => {
                    let agrees = session.is_new() == ended;
                    b.commit(session).await.is_ok() && agrees
                }
                _ => false,
            }
        })
        .await;
        sweep.check(k, b_agrees.is_some(), || {
            format!(
                "{} on A, but not on another server (or it did not get in at once) after {END_BOUND:?}",
                if ended { "ended" } else { "valid" }
            )
        });
        drained(&mut sweep, k, &a).await;
        drained(&mut sweep, k, &b).await;
        if ended {
            for (space, copy) in [(KeySpace::Session, "primary"), (KeySpace::Backup, "backup")] {
                let left = holders(store, cluster, space, &x).await;
                sweep.check(k, left.is_empty(), || {
                    format!("ended, but a {copy} copy of the old id is on {left:?}")
                });
            }
        }
        shuts_down(&mut sweep, k, &a).await;
        sweep.outcome(
            k,
            format!(
                "{} ({})",
                if ended { "ended" } else { "valid" },
                ran(completed)
            ),
        );
        if sweep.over(k, completed) {
            break;
        }
    }
    sweep.finish(failures);
}

pub(super) const NS_MERGE: NonSticky = NonSticky {
    concurrency: Concurrency::Merge,
    backup: BackupMode::Async,
    on_the_wire: false,
};
pub(super) const NS_LOCK: NonSticky = NonSticky {
    concurrency: Concurrency::Lock,
    backup: BackupMode::Async,
    on_the_wire: false,
};

/// Scenario 2, loads and commits of a change, under Merge and Lock (`LockScope::All`,
/// a 5 s lock TTL), commits with asynchronous and synchronous backup copies.
#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn non_sticky_loads_and_commits_dropped_at_every_point_leave_no_lock() {
    let cluster = MemcachedCluster::start(2);
    let store = connect(&cluster).await;
    let mut failures = Vec::new();
    for setup in [NS_MERGE, NS_LOCK] {
        ns_sweep(&cluster, &store, setup, NsDrop::Load, &mut failures).await;
        for backup in [BackupMode::Async, SYNC] {
            let setup = NonSticky { backup, ..setup };
            ns_sweep(&cluster, &store, setup, NsDrop::Commit, &mut failures).await;
        }
    }
    // Lock adds, primary writes and backup copies dropped on their way land after the
    // drop.
    let on_the_wire = NonSticky {
        on_the_wire: true,
        ..NS_LOCK
    };
    ns_sweep(&cluster, &store, on_the_wire, NsDrop::Load, &mut failures).await;
    for backup in [BackupMode::Async, SYNC] {
        let setup = NonSticky {
            backup,
            ..on_the_wire
        };
        ns_sweep(&cluster, &store, setup, NsDrop::Commit, &mut failures).await;
    }
    assert_none(failures);
}

/// Scenario 2 (d): non-sticky logouts and id changes dropped at every point (id
/// changes with asynchronous and synchronous backup copies of the new id).
#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn non_sticky_ends_dropped_at_every_point_end_everywhere_or_nowhere() {
    let cluster = MemcachedCluster::start(2);
    let store = connect(&cluster).await;
    let mut failures = Vec::new();
    for setup in [NS_MERGE, NS_LOCK] {
        ns_end(&cluster, &store, setup, Ending::Invalidate, &mut failures).await;
        for backup in [BackupMode::Async, SYNC] {
            let setup = NonSticky { backup, ..setup };
            ns_end(&cluster, &store, setup, Ending::Cycle, &mut failures).await;
        }
    }
    // The write under the new id, dropped on its way, lands after the drop.
    let setup = NonSticky {
        on_the_wire: true,
        ..NS_LOCK
    };
    ns_end(&cluster, &store, setup, Ending::Cycle, &mut failures).await;
    assert_none(failures);
}
