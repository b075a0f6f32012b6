//! H3: a sticky commit dropped while it waits for room in the backup queue (a client
//! that gave up, a timeout layer) must leave the backup bookkeeping as it was.

use std::time::{Duration, Instant};

use tandem_testkit::MemcachedCluster;

use crate::common::*;
use crate::support::*;

/// H3: with a one-slot backup queue and one writer, a write that hangs (held 2 s by a
/// wrapper store, so that no operation timeout frees the writer early on a loaded
/// machine) makes a commit wait for room in the queue; that commit is dropped (a 50
/// ms timeout around it). Once writes go through again: a later change of that
/// session reaches memcached (another server loads it), `pending_backups()` reaches 0
/// within 5 s, and `shutdown(3 s)` reports nothing unsaved, well before its deadline. Today the dropped commit leaves
/// the session marked as queued and a job counted in flight for good: its backups
/// never run again, the pending count never reaches 0, and shutdown sleeps its whole
/// deadline and then writes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn h3_a_commit_dropped_at_the_full_backup_queue_leaves_backups_working() {
    let cluster = MemcachedCluster::start(1);
    let store = connect(&cluster).await;
    let faulty = Faulty::new(&store);
    let a = sticky_over(faulty.clone(), "a1")
        .backup_queue(1)
        .backup_concurrency(1)
        .build()
        .unwrap();
    let mut ids = Vec::new();
    // More sessions than the writer, the dispatcher and the queue can hold together,
    // so that one commit has to wait however the writer batches them.
    for n in 0..32 {
        ids.push(create(&a, n).await);
    }
    settle(&a).await;
    faulty.delay_writes(Duration::from_secs(2));
    // The first write hangs and holds the only writer;
    // the next commits fill the dispatcher's hand and the queue; one then waits for
    // room and is given up.
    let mut dropped = None;
    for (i, id) in ids.iter().enumerate() {
        let mut session = a.load(Some(id.as_str())).await.unwrap();
        session.insert("n", &100u32).unwrap();
        let commit = tokio::time::timeout(Duration::from_millis(50), a.commit(session)).await;
        if commit.is_err() {
            dropped = Some(i);
            break;
        }
    }
    let dropped = dropped.expect("precondition: no commit had to wait for room in the queue");
    let victim = ids[dropped].clone();
    faulty.delay_writes(Duration::ZERO);

    let mut checks = Checks::default();
    write_n(&a, &victim, 3).await;
    let drained = wait_until(Duration::from_secs(5), || a.pending_backups() == 0).await;
    checks.check(drained.is_some(), || {
        format!(
            "pending_backups() stuck at {} ({} unsaved) after the node came back",
            a.pending_backups(),
            a.unsaved_sessions()
        )
    });
    let b = server(&store, "b1").build().unwrap();
    let seen = read_n(&b, &victim).await;
    checks.check(seen == Some(3), || {
        format!("another server loads n = {seen:?} for the session whose commit was dropped, not 3")
    });
    let started = Instant::now();
    let report = a.shutdown(Duration::from_secs(3)).await;
    let took = started.elapsed();
    checks.check(report.unsaved == 0, || {
        format!("shutdown left {} sessions unsaved", report.unsaved)
    });
    checks.check(took < Duration::from_secs(2), || {
        format!("shutdown took {took:?} of its 3 s deadline")
    });
    checks.finish();
}
