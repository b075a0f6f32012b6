//! Sticky mode: loads, commits and ends dropped at every point.

use super::*;

/// How a sticky sweep's managers are configured.
#[derive(Clone, Copy, Debug)]
pub(super) struct Sticky {
    concurrency: Concurrency,
    backup: BackupMode,
    /// A one-slot backup queue and one writer, so that a changed commit waits for room.
    small_queue: bool,
    /// Writes whose caller is dropped still land, after the drop.
    on_the_wire: bool,
}

impl Sticky {
    fn label(self) -> String {
        let backup = match self.backup {
            BackupMode::Async if self.small_queue => "async, queue of 1",
            BackupMode::Async => "async",
            BackupMode::Sync { .. } => "sync",
        };
        let wire = if self.on_the_wire {
            ", writes land after drops"
        } else {
            ""
        };
        format!("sticky {:?}, {backup}{wire}", self.concurrency)
    }

    fn server(
        self,
        store: Arc<dyn RemoteStore>,
        route: &str,
    ) -> tandem::ManagerBuilder<SpeedyCodec> {
        let builder = sticky_over(store, route)
            .concurrency(self.concurrency)
            .lock_timeout(STICKY_LOCK_TIMEOUT, LockTimeoutPolicy::Fail)
            .backup(self.backup);
        if self.small_queue {
            builder.backup_queue(1).backup_concurrency(1)
        } else {
            builder
        }
    }
}

pub(super) const STICKY_MERGE: Sticky = Sticky {
    concurrency: Concurrency::Merge,
    backup: BackupMode::Async,
    small_queue: false,
    on_the_wire: false,
};
pub(super) const STICKY_LOCK: Sticky = Sticky {
    concurrency: Concurrency::Lock,
    backup: BackupMode::Async,
    small_queue: false,
    on_the_wire: false,
};
pub(super) const SYNC: BackupMode = BackupMode::Sync {
    timeout: Duration::from_secs(1),
};

/// (c) after the shutdown: a server that never held the session reads the newest
/// acknowledged state from memcached.
pub(super) async fn remote_holds(
    sweep: &mut Sweep,
    k: usize,
    store: &Arc<MemcachedStore>,
    id: &SessionId,
    expected: u32,
) {
    let reader = server(store, "c1").build().unwrap();
    let seen = match reader.load(Some(id.as_str())).await {
        Ok(session) => n_of(&session),
        Err(error) => {
            sweep.check(k, false, || {
                format!(
                    "another server cannot load the session: {error:?} (memcached: {})",
                    health(store)
                )
            });
            return;
        }
    };
    sweep.check(k, seen == Some(expected), || {
        format!("another server reads n = {seen:?} from memcached, not the acknowledged {expected}")
    });
}

/// The store's view of its nodes, for failure messages.
pub(super) fn health(store: &MemcachedStore) -> String {
    store
        .health()
        .iter()
        .map(|node| {
            format!(
                "{} up={} marked_down={} last_error={:?}",
                node.id, node.up, node.marked_down, node.last_error
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// No server wrote the session but the one under test: it must never conclude that
/// another one did, and drop its own copy (with whatever it held that memcached had
/// not).
pub(super) fn kept_ownership(sweep: &mut Sweep, k: usize, manager: &Manager) {
    let lost = manager.stats().ownership_lost;
    sweep.check(k, lost == 0, || {
        format!("the server dropped its own copy {lost} time(s) as written by another server")
    });
}

/// A sticky `load` dropped at every point: a server that does not hold the session
/// takes it over (a remote read, then a write back under its ownership). After each
/// drop that server's next request of the session gets in at once and changes it,
/// its backups drain, its shutdown saves everything, and memcached holds the change.
pub(super) async fn sticky_takeover_load(
    store: &Arc<MemcachedStore>,
    setup: Sticky,
    failures: &mut Vec<String>,
) {
    let mut sweep = Sweep::new(format!("{}: takeover load", setup.label()));
    for k in 0.. {
        let faulty = Faulty::new(store);
        let a = setup.server(store.clone(), "a1").build().unwrap();
        let x = create(&a, 1).await;
        settle(&a).await;
        let b = setup.server(faulty.clone(), "b1").build().unwrap();
        delay_everything(&faulty, setup.on_the_wire);
        let loaded = poll_then_drop(b.load(Some(x.as_str())), k).await;
        delay_nothing(&faulty);
        let completed = loaded.is_some();
        if let Some(loaded) = loaded {
            let n = loaded.as_ref().ok().and_then(n_of);
            sweep.check(k, n == Some(1), || {
                format!("the load completed with n = {n:?}")
            });
        }
        acknowledged_write(&mut sweep, k, &b, &x, 2, "the taking-over server").await;
        drained(&mut sweep, k, &b).await;
        shuts_down(&mut sweep, k, &b).await;
        kept_ownership(&mut sweep, k, &b);
        remote_holds(&mut sweep, k, store, &x, 2).await;
        sweep.outcome(k, ran(completed));
        if sweep.over(k, completed) {
            break;
        }
    }
    sweep.finish(failures);
}

/// Sticky `Concurrency::Lock`: a `load` dropped at every point while it waits for the
/// session's lock (another request holds it for 15 ms, then commits). The next
/// request gets the lock at once.
pub(super) async fn sticky_lock_wait_load(store: &Arc<MemcachedStore>, failures: &mut Vec<String>) {
    let setup = STICKY_LOCK;
    let mut sweep = Sweep::new(format!("{}: load waiting for the lock", setup.label()));
    for k in 0.. {
        let a = setup.server(store.clone(), "a1").build().unwrap();
        let x = create(&a, 1).await;
        settle(&a).await;
        let mut holder = a.load(Some(x.as_str())).await.unwrap();
        holder.insert("n", &2u32).unwrap();
        let holder = tokio::spawn({
            let a = a.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(15)).await;
                a.commit(holder).await
            }
        });
        let loaded = poll_then_drop(a.load(Some(x.as_str())), k).await;
        let completed = loaded.is_some();
        if let Some(loaded) = loaded {
            let n = loaded.as_ref().ok().and_then(n_of);
            sweep.check(k, n == Some(2), || {
                format!("the waiting load completed with n = {n:?}, not the holder's 2")
            });
        }
        let held = holder.await.unwrap();
        sweep.check(k, held.is_ok(), || {
            format!("the lock holder's commit: {}", describe(&held))
        });
        acknowledged_write(&mut sweep, k, &a, &x, 3, "the same server").await;
        drained(&mut sweep, k, &a).await;
        shuts_down(&mut sweep, k, &a).await;
        remote_holds(&mut sweep, k, store, &x, 3).await;
        sweep.outcome(k, ran(completed));
        if sweep.over(k, completed) {
            break;
        }
    }
    sweep.finish(failures);
}

/// A sticky commit of a change dropped at every point. With the one-slot queue, other
/// sessions' backups (their writes delayed 20 ms) first fill the writer, the
/// dispatcher's hand and the queue, so that the commit waits for room; with `Sync` it
/// waits for its own write.
/// After each drop: the next request gets in at once and changes the session again
/// (the newest acknowledged state), backups drain, shutdown saves everything, and
/// memcached holds that state.
pub(super) async fn sticky_commit(
    store: &Arc<MemcachedStore>,
    setup: Sticky,
    failures: &mut Vec<String>,
) {
    let mut sweep = Sweep::new(format!("{}: commit of a change", setup.label()));
    for k in 0.. {
        let faulty = Faulty::new(store);
        let a = setup.server(faulty.clone(), "a1").build().unwrap();
        let x = create(&a, 1).await;
        let mut fillers = Vec::new();
        if setup.small_queue {
            for n in 0..8 {
                fillers.push(create(&a, n).await);
            }
        }
        settle(&a).await;
        delay_everything(&faulty, setup.on_the_wire);
        let mut request = a.load(Some(x.as_str())).await.unwrap();
        request.insert("n", &2u32).unwrap();
        // The fillers changed, whose backups must land too.
        let mut changed = Vec::new();
        if setup.small_queue {
            faulty.delay_writes(Duration::from_millis(20));
            // Changes until one cannot queue its backup within five polls: the
            // queue is then stuck behind the slow writer, not just full for the
            // dispatcher's linger (that commit is dropped there, its change applied).
            let mut full = false;
            for filler in &fillers {
                let mut session = a.load(Some(filler.as_str())).await.unwrap();
                session.insert("n", &10u32).unwrap();
                changed.push(filler.clone());
                if poll_then_drop(a.commit(session), 5).await.is_none() {
                    full = true;
                    break;
                }
            }
            assert!(full, "precondition: the backup queue never filled");
        }
        let committed = poll_then_drop(a.commit(request), k).await;
        delay_nothing(&faulty);
        let completed = committed.is_some();
        if let Some(committed) = &committed {
            sweep.check(k, committed.is_ok(), || {
                format!("the commit completed with {}", describe(committed))
            });
        }
        acknowledged_write(&mut sweep, k, &a, &x, 3, "the same server").await;
        drained(&mut sweep, k, &a).await;
        shuts_down(&mut sweep, k, &a).await;
        kept_ownership(&mut sweep, k, &a);
        remote_holds(&mut sweep, k, store, &x, 3).await;
        for filler in &changed {
            remote_holds(&mut sweep, k, store, filler, 10).await;
        }
        sweep.outcome(k, ran(completed));
        if sweep.over(k, completed) {
            break;
        }
    }
    if setup.small_queue {
        // Without a wait for room the sweep would end at k = 1 and prove nothing
        // about the queue; a wait of one poll could be the dispatcher's linger.
        sweep.check(0, sweep.outcomes.len() > 3, || {
            "precondition: the commit never waited for room in the queue".into()
        });
    }
    sweep.finish(failures);
}

/// How a request ends its session id.
#[derive(Clone, Copy, Debug)]
pub(super) enum Ending {
    Invalidate,
    Cycle,
}

/// A sticky logout or id change on server A dropped at every point. Before it, server
/// B took the session over (its copy stays on A, which reads the peer feed only every
/// 30 s), so that B holds a copy of its own under its route, which only the peer feed
/// makes it drop. After each drop the old id is either still valid on A and on a third
/// server C, or ended on A, on C (it finds the tombstone) and on B (which reads the
/// feed every 100 ms) within [`END_BOUND`]: never ended on one server and loadable on
/// another.
pub(super) async fn sticky_end(
    store: &Arc<MemcachedStore>,
    setup: Sticky,
    ending: Ending,
    failures: &mut Vec<String>,
) {
    let mut sweep = Sweep::new(format!("{}: {ending:?} commit", setup.label()));
    for k in 0.. {
        let faulty = Faulty::new(store);
        let a = setup
            .server(faulty.clone(), "a1")
            .peer_feed_interval(Some(Duration::from_secs(30)))
            .build()
            .unwrap();
        let b = setup
            .server(store.clone(), "b1")
            .peer_feed_interval(Some(Duration::from_millis(100)))
            .build()
            .unwrap();
        let x = create(&a, 1).await;
        settle(&a).await;
        let taken = b.load(Some(x.as_str())).await.unwrap();
        assert!(!taken.is_new(), "precondition: B takes the session over");
        let x_on_b = new_id(b.commit(taken).await.unwrap().cookie);
        settle(&b).await;

        delay_everything(&faulty, setup.on_the_wire);
        let mut request = a.load(Some(x.as_str())).await.unwrap();
        assert!(!request.is_new(), "precondition: A still holds its copy");
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

        // A's view decides which outcome this k had; everyone else must agree.
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
        drop(on_a);
        if ended {
            // B's own copy under its route: dropped once the feed tells it.
            let b_agrees = wait_until_async(END_BOUND, || async {
                let session = b.load(Some(x_on_b.as_str())).await;
                session.is_ok_and(|session| session.is_new())
            })
            .await;
            sweep.check(k, b_agrees.is_some(), || {
                format!("ended on A, but B still serves its copy after {END_BOUND:?}")
            });
        }
        // A third server reads memcached.
        let c = setup.server(store.clone(), "c1").build().unwrap();
        let c_agrees = wait_until_async(END_BOUND, || async {
            let session = c.load(Some(x.as_str())).await;
            session.is_ok_and(|session| session.is_new() == ended)
        })
        .await;
        sweep.check(k, c_agrees.is_some(), || {
            format!(
                "{} on A, but not on a third server after {END_BOUND:?}",
                if ended { "ended" } else { "valid" }
            )
        });
        drained(&mut sweep, k, &a).await;
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

/// Scenario 1, loads: a takeover load dropped at every point (Merge with asynchronous
/// and synchronous backups, Lock), and, under Lock, a load dropped while it waits for
/// the session's lock.
#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn sticky_loads_dropped_at_every_point_leave_nothing_taken() {
    let cluster = MemcachedCluster::start(1);
    let store = connect(&cluster).await;
    let mut failures = Vec::new();
    sticky_takeover_load(&store, STICKY_MERGE, &mut failures).await;
    // The write back of a takeover is then part of the load.
    let sync = Sticky {
        backup: SYNC,
        ..STICKY_MERGE
    };
    sticky_takeover_load(&store, sync, &mut failures).await;
    let sync_on_the_wire = Sticky {
        on_the_wire: true,
        ..sync
    };
    sticky_takeover_load(&store, sync_on_the_wire, &mut failures).await;
    sticky_takeover_load(&store, STICKY_LOCK, &mut failures).await;
    sticky_lock_wait_load(&store, &mut failures).await;
    assert_none(failures);
}

/// Scenario 1, commits of a change: asynchronous backups through a one-slot queue, and
/// synchronous backups, under Merge and Lock.
#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn sticky_commits_dropped_at_every_point_leave_nothing_taken() {
    let cluster = MemcachedCluster::start(1);
    let store = connect(&cluster).await;
    let mut failures = Vec::new();
    for concurrency in [Concurrency::Merge, Concurrency::Lock] {
        for (backup, small_queue) in [(BackupMode::Async, true), (SYNC, false)] {
            let setup = Sticky {
                concurrency,
                backup,
                small_queue,
                on_the_wire: false,
            };
            sticky_commit(&store, setup, &mut failures).await;
        }
        // A synchronous backup write dropped on its way lands after the drop.
        let setup = Sticky {
            concurrency,
            backup: SYNC,
            small_queue: false,
            on_the_wire: true,
        };
        sticky_commit(&store, setup, &mut failures).await;
    }
    assert_none(failures);
}

/// Scenario 1 (d): logouts and id changes dropped at every point, under Merge and Lock,
/// with asynchronous and synchronous backups (the id change writes the session under
/// its new id).
#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn sticky_ends_dropped_at_every_point_end_everywhere_or_nowhere() {
    let cluster = MemcachedCluster::start(1);
    let store = connect(&cluster).await;
    let mut failures = Vec::new();
    for setup in [STICKY_MERGE, STICKY_LOCK] {
        for backup in [BackupMode::Async, SYNC] {
            for ending in [Ending::Invalidate, Ending::Cycle] {
                let setup = Sticky { backup, ..setup };
                sticky_end(&store, setup, ending, &mut failures).await;
            }
        }
    }
    // The write of the session under its new id, dropped on its way, lands after the
    // drop.
    let setup = Sticky {
        backup: SYNC,
        on_the_wire: true,
        ..STICKY_MERGE
    };
    sticky_end(&store, setup, Ending::Cycle, &mut failures).await;
    assert_none(failures);
}
