//! Nodes becoming unavailable under non-sticky sessions.

use std::time::Instant;

use tandem_manager::{CommitError, CookieUpdate, LoadError};
use tandem_store_conformance::StoreFixture;

use crate::recorder::Recorder;
use crate::support::*;

/// Thirty sessions, changed in six rounds over two servers, lose nothing when the
/// first node becomes unavailable after round two: the sessions it held are served
/// from their backup copies and move (new ids, counted as relocated) off it, and
/// every later change lands.
pub async fn losing_the_primary_mid_run_loses_no_session<F: StoreFixture>() {
    let case = "losing_the_primary_mid_run_loses_no_session";
    let started = start::<F>(3).await;
    let lost = started.node(0).clone();
    let servers = [
        non_sticky(&started.store).build().unwrap(),
        non_sticky(&started.store).build().unwrap(),
    ];
    let mut sessions = Vec::new();
    for n in 0..30 {
        sessions.push((create(&servers[n % 2], 0).await, 0u32));
    }
    for round in 1..=6u32 {
        if round == 3 {
            // The backup copies of round 2 are written in the background: until one
            // lands, its change lives on the primary only (as documented). Waited for,
            // so that the case checks the failover rather than that window.
            for server in &servers {
                settle(server).await;
            }
            if !started.make_unavailable(&lost, case).await {
                return;
            }
        }
        for (i, (id, expected)) in sessions.iter_mut().enumerate() {
            let server = &servers[(i + round as usize) % 2];
            let mut session = server.load(Some(id.as_str())).await.unwrap();
            assert!(!session.is_new(), "session {i} lost in round {round}");
            assert_eq!(
                session.get::<u32>("n").unwrap(),
                Some(*expected),
                "session {i}"
            );
            session.insert("n", &round).unwrap();
            match server.commit(session).await.unwrap().cookie {
                CookieUpdate::Keep => {}
                CookieUpdate::Set { id: moved, .. } => *id = moved,
                CookieUpdate::Clear => panic!("session {i} cleared"),
            }
            *expected = round;
        }
    }
    let relocated: u64 = servers.iter().map(|server| server.stats().relocated).sum();
    assert!(relocated > 0, "no session lived on the lost node");
    assert!(sessions.iter().all(|(id, _)| id.node() != lost.as_str()));
}

/// A session whose primary node is unavailable is served from its backup copy (on the
/// next node), at the cost of at most one operation timeout, and moves to the backup's
/// node: only the id's node part changes, the move is counted, the client is told.
/// Later requests of it wait for no timeout at all, and the move wrote a fresh backup
/// copy on the node after that, which serves the session when its new primary becomes
/// unavailable too.
pub async fn an_unavailable_primary_costs_one_timeout_then_the_backup_serves<F: StoreFixture>() {
    let case = "an_unavailable_primary_costs_one_timeout_then_the_backup_serves";
    let started = start::<F>(3).await;
    let (primary, other) = (started.node(0).clone(), started.node(1).clone());
    let recorder = Recorder::wrap(&started.store);
    let a1 = non_sticky(&recorder.store()).build().unwrap();
    let id = create_on(&a1, &primary, 7).await;
    settle(&a1).await;
    if !started.make_unavailable(&primary, case).await {
        return;
    }

    let a2 = non_sticky(&recorder.store()).build().unwrap();
    let began = Instant::now();
    let session = a2.load(Some(id.as_str())).await.unwrap();
    let took = began.elapsed();
    assert!(
        took < started.operation_timeout() + SLACK,
        "the load took {took:?}"
    );
    let waited = recorder.timeouts_within(began, Instant::now());
    assert!(waited.len() <= 1, "the load waited for {waited:?}");
    assert_eq!(session.get::<u32>("n").unwrap(), Some(7));
    assert_eq!(session.id().node(), other.as_str());
    let moved = new_id(a2.commit(session).await.unwrap().cookie);
    assert_eq!(moved, id.with_node(&other), "only the node part changes");
    assert_eq!(a2.stats().relocated, 1);

    // Later requests do not wait for the unavailable node.
    let began = Instant::now();
    assert_eq!(read_n(&a1, &moved).await, Some(7));
    let waited = recorder.timeouts_within(began, Instant::now());
    assert!(waited.is_empty(), "a later request waited for {waited:?}");

    // The new primary fails too: the fresh backup copy serves.
    settle(&a2).await;
    if !started.make_unavailable(&other, case).await {
        return;
    }
    assert_eq!(read_n(&a1, &moved).await, Some(7));
    assert_eq!(a2.stats().relocated, 1);
    started.make_available(&primary).await;
    started.make_available(&other).await;
}

/// With every node unavailable a load fails with [`LoadError::Unavailable`], the
/// error an application maps to 503, in bounded time (the bound allows seconds of
/// slack beyond two operation timeouts: it proves no hang, not the exact cost), and
/// so does the commit of a new session, with [`CommitError::Unavailable`]; both are
/// counted.
pub async fn with_every_node_down_requests_fail_with_a_clear_error<F: StoreFixture>() {
    let case = "with_every_node_down_requests_fail_with_a_clear_error";
    let started = start::<F>(2).await;
    let a1 = non_sticky(&started.store).build().unwrap();
    let id = create(&a1, 1).await;
    settle(&a1).await;
    for index in 0..2 {
        if !started.make_unavailable(started.node(index), case).await {
            return;
        }
    }
    let began = Instant::now();
    let error = a1.load(Some(id.as_str())).await.unwrap_err();
    let took = began.elapsed();
    assert_eq!(error, LoadError::Unavailable);
    assert!(
        took < started.operation_timeout() * 2 + SLACK,
        "the load took {took:?}"
    );
    let mut session = a1.load(None).await.unwrap();
    session.insert("n", &2u32).unwrap();
    let error = a1.commit(session).await.unwrap_err();
    assert!(
        matches!(error, CommitError::Unavailable { .. }),
        "{error:?}"
    );
    assert_eq!(a1.stats().unavailable, 2);
}

/// With the primary and the backup node both hung, a load costs one operation
/// timeout, not two: the reads of the two copies wait at the same time. (Checked on
/// the operations the store timed out; a store whose unavailable nodes fail at once
/// has no waits to overlap, and the case then checks only the error.)
pub async fn hung_primary_and_backup_cost_one_timeout_not_two<F: StoreFixture>() {
    let case = "hung_primary_and_backup_cost_one_timeout_not_two";
    let started = start::<F>(2).await;
    let recorder = Recorder::wrap(&started.store);
    let a1 = non_sticky(&recorder.store()).build().unwrap();
    let id = create(&a1, 1).await;
    settle(&a1).await;
    for index in 0..2 {
        if !started.make_unavailable(started.node(index), case).await {
            return;
        }
    }
    let began = Instant::now();
    let error = a1.load(Some(id.as_str())).await.unwrap_err();
    let waited = recorder.timeouts_within(began, Instant::now());
    assert_eq!(error, LoadError::Unavailable);
    for (index, first) in waited.iter().enumerate() {
        for second in &waited[index + 1..] {
            if first.node != second.node {
                assert!(
                    first.overlaps(second),
                    "the load waited for one node, then the other: {first:?}, {second:?}"
                );
            }
        }
    }
    for index in 0..2 {
        started.make_available(started.node(index)).await;
    }
}
