//! The shutdown flush while commits are dropped.

use super::nonsticky::stored;
use super::*;

/// How many commits a burst runs: half change existing sessions, half create new ones.
pub(super) const BURST: u32 = 48;

/// What a burst of commits left: the acknowledged sessions with their committed `n`,
/// the existing sessions whose commit was dropped, and what the shutdown reported.
pub(super) struct Burst {
    acknowledged: Vec<(SessionId, u32)>,
    dropped: Vec<SessionId>,
    pending_at_shutdown: usize,
    took: Duration,
    report: tandem::manager::ShutdownReport,
}

/// Runs a burst of [`BURST`] concurrent commits on `manager` (whose writes `faulty`
/// delays 10 ms): every third is dropped after 1 to 7 polls, so mostly while it waits
/// for room in the backup queue or for its writes; then, with backups still queued or
/// running, shuts `manager` down.
pub(super) async fn burst_then_shutdown(manager: &Manager, faulty: &Faulty) -> Burst {
    let mut existing = Vec::new();
    for _ in 0..BURST / 2 {
        existing.push(create(manager, 0).await);
    }
    settle(manager).await;
    faulty.delay_writes(Duration::from_millis(10));
    faulty.delay_answers(Duration::from_millis(1));
    let mut tasks = Vec::new();
    for i in 0..BURST {
        let manager = manager.clone();
        let id = existing.get(i as usize).cloned();
        tasks.push(tokio::spawn(async move {
            let mut session = manager
                .load(id.as_ref().map(SessionId::as_str))
                .await
                .unwrap();
            session.insert("n", &(100 + i)).unwrap();
            let committed = if i % 3 == 0 {
                poll_then_drop(manager.commit(session), 1 + (i as usize / 3) % 7).await
            } else {
                Some(manager.commit(session).await)
            };
            (i, id, committed)
        }));
    }
    let mut acknowledged = Vec::new();
    let mut dropped = Vec::new();
    for task in tasks {
        let (i, id, committed) = task.await.unwrap();
        match committed {
            Some(Ok(outcome)) => {
                let id = match (id, outcome.cookie) {
                    (Some(id), _) => id,
                    (None, cookie) => new_id(cookie),
                };
                acknowledged.push((id, 100 + i));
            }
            Some(Err(error)) => panic!("commit {i} failed: {error:?}"),
            // A dropped commit of a new session leaves an id nobody knows.
            None => dropped.extend(id),
        }
    }
    assert!(
        dropped.len() >= 3,
        "precondition: only {} commits of existing sessions were dropped mid-way",
        dropped.len()
    );
    let pending_at_shutdown = manager.pending_backups();
    let started = Instant::now();
    let report = manager.shutdown(SHUTDOWN_DEADLINE).await;
    let took = started.elapsed();
    delay_nothing(faulty);
    Burst {
        acknowledged,
        dropped,
        pending_at_shutdown,
        took,
        report,
    }
}

impl Burst {
    /// What every burst must show: nothing unsaved, before the deadline.
    fn check_shutdown(&self, checks: &mut Checks) {
        checks.check(
            self.report.unsaved == 0 && self.report.ends_unwritten == 0,
            || {
                format!(
                    "shutdown left {:?} ({} backups were pending)",
                    self.report, self.pending_at_shutdown
                )
            },
        );
        checks.check(self.took < SHUTDOWN_DEADLINE, || {
            format!(
                "shutdown took {:?}, past its {SHUTDOWN_DEADLINE:?}",
                self.took
            )
        });
    }

    fn print(&self, mode: &str) {
        eprintln!(
            "[drops] {mode} shutdown flush: {} acknowledged, {} changes dropped, {} backups pending at shutdown, shutdown took {:.1?}, {:?}",
            self.acknowledged.len(),
            self.dropped.len(),
            self.pending_at_shutdown,
            self.took,
            self.report
        );
    }
}

/// Scenario 3, sticky: a burst of 48 commits (24 changes of existing sessions, 24 new
/// sessions) through a two-slot backup queue with one writer, every write delayed
/// 10 ms; every third commit dropped after 1 to 7 polls; then, with backups still
/// queued, `shutdown`. It reports nothing unsaved, before its deadline; every session
/// whose commit returned Ok is in memcached with its committed state (read by a server
/// that never held it), and every dropped change is in memcached as this server holds
/// it (applied or not, never lost on the way).
#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn sticky_shutdown_saves_every_acknowledged_commit_while_others_are_dropped() {
    let cluster = MemcachedCluster::start(1);
    let store = connect(&cluster).await;
    let faulty = Faulty::new(&store);
    let a = sticky_over(faulty.clone(), "a1")
        .backup_queue(2)
        .backup_concurrency(1)
        .build()
        .unwrap();
    let burst = burst_then_shutdown(&a, &faulty).await;
    let mut checks = Checks::default();
    burst.check_shutdown(&mut checks);
    checks.check(a.stats().ownership_lost == 0, || {
        "the server dropped its own copies as another server's".into()
    });
    // What this server holds of the dropped changes, before another server takes
    // them over.
    let mut held = Vec::new();
    for id in &burst.dropped {
        held.push(read_n(&a, id).await);
    }
    let reader = server(&store, "c1").build().unwrap();
    for (id, n) in &burst.acknowledged {
        let seen = read_n(&reader, id).await;
        checks.check(seen == Some(*n), || {
            format!("acknowledged session {id} holds n = {seen:?} in memcached, not {n}")
        });
    }
    for (id, here) in burst.dropped.iter().zip(held) {
        let seen = read_n(&reader, id).await;
        checks.check(seen == here, || {
            format!("dropped commit's session {id}: memcached holds {seen:?}, the server {here:?}")
        });
    }
    burst.print("sticky");
    checks.finish();
}

/// Scenario 3, non-sticky (asynchronous backup copies): the same burst over two nodes,
/// then `shutdown`. Right after it returns, every session whose commit returned Ok is
/// read with its committed state by another server, and for it and for every session
/// whose change was dropped mid-way the backup copy holds exactly what the primary
/// holds: the shutdown wrote the copies still on their way, and repaired those that a
/// dropped commit left behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn non_sticky_shutdown_writes_every_copy_while_commits_are_dropped() {
    let cluster = MemcachedCluster::start(2);
    let store = connect(&cluster).await;
    let faulty = Faulty::new(&store);
    let a = non_sticky_over(faulty.clone()).build().unwrap();
    let burst = burst_then_shutdown(&a, &faulty).await;
    let mut checks = Checks::default();
    burst.check_shutdown(&mut checks);
    let b = non_sticky(&store).build().unwrap();
    let copies = |id: &SessionId| {
        let (store, cluster, id) = (&store, &cluster, id.clone());
        async move {
            let primary_node = id.node().to_owned();
            let backup_node = ring_successor(cluster, &primary_node);
            (
                stored(store, &primary_node, KeySpace::Session, &id).await,
                stored(store, &backup_node, KeySpace::Backup, &id).await,
            )
        }
    };
    for (id, _) in &burst.acknowledged {
        let (primary, backup) = copies(id).await;
        checks.check(primary.is_some() && primary == backup, || {
            format!("acknowledged session {id}: the backup copy differs from the primary after the shutdown")
        });
    }
    for id in &burst.dropped {
        let (primary, backup) = copies(id).await;
        checks.check(primary.is_some() && primary == backup, || {
            format!("dropped commit's session {id}: the backup copy differs from the primary after the shutdown")
        });
    }
    for (id, n) in &burst.acknowledged {
        let seen = read_n(&b, id).await;
        checks.check(seen == Some(*n), || {
            format!("acknowledged session {id}: another server reads n = {seen:?}, not {n}")
        });
    }
    burst.print("non-sticky");
    checks.finish();
}
