//! M3: session ids are credentials. No log line shows a whole one, and with a storage
//! key secret nothing memcached holds (keys, feed) gives one away.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tandem::{CookieUpdate, KeySecret, RemoteStore, SessionId};
use tandem_testkit::MemcachedCluster;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};

use crate::common::*;
use crate::support::*;

/// Every event and span field logged by any test of this binary, at every level,
/// formatted as a log line would show it.
static LINES: OnceLock<Arc<Mutex<Vec<String>>>> = OnceLock::new();

/// A subscriber that keeps every line (a global one: the manager logs from tasks on
/// every worker thread).
struct Capture(Arc<Mutex<Vec<String>>>);

struct Line(String);

impl Visit for Line {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.push_str(&format!(" {}={value:?}", field.name()));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.push_str(&format!(" {}={value}", field.name()));
    }
}

impl Subscriber for Capture {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }

    fn new_span(&self, span: &Attributes<'_>) -> Id {
        let mut line = Line(span.metadata().name().to_owned());
        span.record(&mut line);
        self.0.lock().unwrap().push(line.0);
        Id::from_u64(1)
    }

    fn record(&self, _: &Id, values: &Record<'_>) {
        let mut line = Line(String::new());
        values.record(&mut line);
        self.0.lock().unwrap().push(line.0);
    }

    fn record_follows_from(&self, _: &Id, _: &Id) {}

    fn event(&self, event: &Event<'_>) {
        let mut line = Line(event.metadata().level().to_string());
        event.record(&mut line);
        self.0.lock().unwrap().push(line.0);
    }

    fn enter(&self, _: &Id) {}

    fn exit(&self, _: &Id) {}
}

fn captured() -> Arc<Mutex<Vec<String>>> {
    Arc::clone(LINES.get_or_init(|| {
        let lines = Arc::new(Mutex::new(Vec::new()));
        tracing::subscriber::set_global_default(Capture(Arc::clone(&lines)))
            .expect("no other subscriber in this test binary");
        lines
    }))
}

/// M3: a tour of the paths that log a session (creation, remote loads, takeover,
/// backup failures and retries, relocation off a down node, id cycling, logout, lock
/// waits, expiry), both modes, every level: no captured line holds a whole id's random
/// part, and the redacted form does show up (the paths did log). Today the manager logs
/// `storage_id()`, the whole id but its route.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn m3_logs_never_show_a_whole_session_id() {
    let lines = captured();
    let cluster = MemcachedCluster::start(2);
    let store = connect(&cluster).await;
    let mut ids: Vec<SessionId> = Vec::new();

    // Sticky: create, take over, change, cycle, log out, expire.
    let a1 = server(&store, "a1")
        .max_inactive(Some(Duration::from_secs(1)))
        .build()
        .unwrap();
    let a2 = server(&store, "a2").build().unwrap();
    let x = create(&a1, 1).await;
    settle(&a1).await;
    ids.push(x.clone());
    assert_eq!(read_n(&a2, &x).await, Some(1), "taken over");
    let y = login(&a2, &x.with_route(Some(&tandem::Route::new("a2").unwrap()))).await;
    ids.push(y.clone());
    logout(&a2, &y).await;
    let expiring = create(&a1, 2).await;
    ids.push(expiring.clone());
    settle(&a1).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    a1.run_pending_tasks().await;
    assert_eq!(read_n(&a1, &expiring).await, None, "expired");

    // Non-sticky: create, relocate off a killed node, log out.
    let b1 = non_sticky(&store).build().unwrap();
    let moving = create_on(&b1, "n1", 3).await;
    ids.push(moving.clone());
    settle(&b1).await;
    cluster.node("n1").kill();
    mark_down(&store, "n1").await;
    let mut session = b1.load(Some(moving.as_str())).await.unwrap();
    session.insert("n", &4u32).unwrap();
    let moved = match b1.commit(session).await.unwrap().cookie {
        CookieUpdate::Set { id, .. } => id,
        other => panic!("precondition: the session moved, got {other:?}"),
    };
    ids.push(moved.clone());
    logout(&b1, &moved).await;
    settle(&b1).await;

    let lines = lines.lock().unwrap().clone();
    for id in &ids {
        let leaks: Vec<&String> = lines
            .iter()
            .filter(|line| line.contains(id.random()))
            .collect();
        assert!(leaks.is_empty(), "whole id {id:?} in the log: {leaks:#?}");
    }
    assert!(
        lines
            .iter()
            .any(|line| line.contains(&moving.redacted().to_string())),
        "the relocation was not logged at all"
    );
}

/// M3: with a storage key secret, the keys memcached holds (as anyone who can reach
/// it lists them) and the peer feed's items contain no session id, two servers with
/// the same secret share sessions (a takeover, an id change, a logout), and a server
/// with another secret finds none of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn m3_a_storage_key_secret_keeps_ids_out_of_memcached() {
    let cluster = MemcachedCluster::start(2);
    let store = connect(&cluster).await;
    let secret = || KeySecret::new(&[7; 32]).unwrap();
    let a1 = server(&store, "a1")
        .storage_key_secret(secret())
        .build()
        .unwrap();
    let a2 = server(&store, "a2")
        .storage_key_secret(secret())
        .build()
        .unwrap();
    let stranger = server(&store, "a3")
        .storage_key_secret(KeySecret::new(&[8; 32]).unwrap())
        .build()
        .unwrap();
    let b = non_sticky(&store)
        .storage_key_secret(secret())
        .build()
        .unwrap();

    let x = create(&a1, 1).await;
    settle(&a1).await;
    assert_eq!(read_n(&stranger, &x).await, None, "another secret finds it");
    assert_eq!(read_n(&a2, &x).await, Some(1), "taken over with the secret");
    let y = login(&a2, &x.with_route(Some(&tandem::Route::new("a2").unwrap()))).await;
    let ended = create(&b, 2).await;
    settle(&b).await;
    logout(&b, &ended).await;
    let kept = create(&b, 3).await;
    settle(&a1).await;
    settle(&a2).await;
    settle(&b).await;
    assert_eq!(read_n(&b, &kept).await, Some(3));
    assert_eq!(read_n(&b, &ended).await, None);

    let ids = [&x, &y, &ended, &kept];
    let mut keys = Vec::new();
    for process in cluster.processes() {
        keys.extend(process.keys());
    }
    assert!(
        keys.iter().any(|key| key.starts_with("tandem:feed:")),
        "precondition: the takeover was announced in the feed: {keys:?}"
    );
    let mut values = Vec::new();
    for key in &keys {
        for node_id in cluster.ids() {
            let key = tandem::model::StoreKey::new(key).unwrap();
            if let Ok(Some(item)) = store.get(&node(&node_id), &key).await {
                values.push(item.value);
            }
        }
    }
    for id in ids {
        assert!(
            keys.iter().all(|key| !key.contains(id.random())),
            "{id:?} in a key: {keys:?}"
        );
        let random = id.random().as_bytes();
        assert!(
            values
                .iter()
                .all(|value| !value.windows(random.len()).any(|window| window == random)),
            "{id:?} in a stored value"
        );
    }
}
