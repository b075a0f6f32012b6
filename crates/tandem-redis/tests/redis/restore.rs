//! A Redis restarted from its snapshot (RDB persistence) hands back older copies of
//! sessions, not misses: what the session manager can tell, it does not obey.

use std::sync::Arc;
use std::time::Duration;

use tandem_codec::SpeedyCodec;
use tandem_core::{RemoteStore, Route};
use tandem_manager::{CookieUpdate, SessionManager};
use tandem_testkit::{RedisOptions, RedisProcess, wait_until};

use crate::common::{COMEBACK, config, connect, node};

type Manager = SessionManager<SpeedyCodec>;

fn server(store: &Arc<tandem_redis::RedisStore>, route: &str) -> Manager {
    Manager::builder(Arc::clone(store) as Arc<dyn RemoteStore>)
        .route(Route::new(route).unwrap())
        .retry_interval(Duration::from_millis(50))
        .build()
        .unwrap()
}

async fn settle(manager: &Manager) {
    let done = wait_until(Duration::from_secs(10), || manager.pending_backups() == 0).await;
    assert!(
        done.is_some(),
        "{} backups pending",
        manager.pending_backups()
    );
}

async fn set_n(manager: &Manager, id: &str, n: u32) {
    // Every change a few milliseconds after the one before: a later last access.
    tokio::time::sleep(Duration::from_millis(5)).await;
    let mut session = manager.load(Some(id)).await.unwrap();
    assert!(!session.is_new(), "{id} is gone");
    session.insert("n", &n).unwrap();
    manager.commit(session).await.unwrap();
    settle(manager).await;
}

async fn read_n(manager: &Manager, id: &str) -> Option<u32> {
    let session = manager.load(Some(id)).await.unwrap();
    let n = session.get::<u32>("n").unwrap();
    manager.commit(session).await.unwrap();
    n
}

/// Sticky mode: the owner's next write after the restart finds a copy older than
/// the one it wrote, replaces it with its newer state, and counts it; the session is
/// never taken for another server's, and the next server to load it gets the newest
/// state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sticky_owner_replaces_the_older_copy_a_restart_brings_back() {
    let redis = RedisProcess::start_with(RedisOptions::default().persistence());
    let store = Arc::new(connect(&redis.url(), config()).await);
    let a1 = server(&store, "a1");
    let mut session = a1.load(None).await.unwrap();
    session.insert("n", &1u32).unwrap();
    let CookieUpdate::Set { id, .. } = a1.commit(session).await.unwrap().cookie else {
        panic!("a new session sets its cookie");
    };
    let id = id.as_str().to_owned();
    settle(&a1).await;
    redis.save(); // the snapshot holds n = 1
    set_n(&a1, &id, 2).await;
    redis.restart(); // back to n = 1, under a new token
    let r1 = node("r1");
    let up = wait_until(COMEBACK, || store.is_available(&r1)).await;
    assert!(up.is_some(), "r1 did not come back");
    set_n(&a1, &id, 3).await;
    let stats = a1.stats();
    assert_eq!(stats.stale_copies_replaced, 1, "{stats:?}");
    assert_eq!(stats.ownership_lost, 0, "{stats:?}");
    assert_eq!(read_n(&a1, &id).await, Some(3));
    // Another server taking the session over loads the newest state.
    let a2 = server(&store, "a2");
    assert_eq!(read_n(&a2, &id).await, Some(3));
}
