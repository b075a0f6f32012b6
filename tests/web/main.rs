//! The web integrations' contract: one suite, run over `tandem-tower`'s layer (under
//! axum) and over `tandem-actix`'s middleware (under actix-web), in process, against
//! real memcached processes. Each test runs once per integration: `tower_layer::NAME`
//! and `actix_middleware::NAME`.

mod apps;
#[path = "../common/mod.rs"]
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use http::StatusCode;
use regex::Regex;
use tandem::SpeedyCodec;
use tandem::manager::{CommitError, Concurrency, LockScope};
use tandem::memcached::MemcachedStore;
use tandem::tower::{
    CookieSigner, Failure, MaxAge, SameSite, SessionSettings, SettingsBuilder,
    default_error_response,
};
use tandem::{Mode, RemoteStore, Route};
use tandem_testkit::{MemcachedCluster, wait_until_quiet};

use apps::{App, Reply, Web, app};
use common::{Manager, connect, operations};

/// Runs each named test once per integration.
macro_rules! for_each_integration {
    ($($name:ident),* $(,)?) => {
        mod tower_layer {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(super::Web::Tower).await
                }
            )*
        }
        mod actix_middleware {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(super::Web::Actix).await
                }
            )*
        }
    };
}

for_each_integration!(
    new_session_cookie_has_the_secure_defaults,
    cookie_settings_are_applied,
    a_handler_that_does_not_use_its_session_costs_no_store_call,
    the_commit_waits_for_a_task_that_still_holds_the_session,
    ignored_paths_get_no_session,
    a_tampered_signed_cookie_is_refused_without_a_store_call,
    malformed_and_oversized_cookies_are_no_session,
    cycle_id_sets_a_new_cookie_and_the_old_id_no_longer_loads,
    invalidate_clears_the_cookie,
    a_conflicting_commit_answers_409_and_changes_nothing,
    error_responses_are_configurable,
    no_reachable_node_answers_503_in_non_sticky_mode,
    the_lock_scope_sees_the_request_path,
    the_cookie_is_renewed_while_the_session_is_in_use,
    a_non_sticky_cookie_is_renewed_once_per_window_after_it_was_issued,
    a_handler_needing_a_session_on_an_ignored_path_answers_500,
    a_request_dropped_mid_way_leaves_its_session_free,
);

const KEY: [u8; 32] = [0x5a; 32];

/// Waits until the manager's background work is done and memcached sees no more
/// operations, then returns the operation count.
async fn quiet(manager: &Manager, store: &MemcachedStore) -> u64 {
    // Far beyond what a loaded machine needs: only a store that never goes quiet
    // reaches it.
    wait_until_quiet(
        Duration::from_secs(60),
        || manager.pending_backups() == 0,
        || operations(store),
    )
    .await
    .expect("memcached never went quiet")
}

fn manager(store: &Arc<MemcachedStore>, mode: Mode) -> Manager {
    let builder = Manager::builder(Arc::clone(store) as Arc<dyn RemoteStore>)
        .mode(mode)
        .retry_interval(Duration::from_millis(50));
    match mode {
        Mode::Sticky => builder.route(Route::new("a1").unwrap()),
        Mode::NonSticky => builder,
    }
    .build()
    .unwrap()
}

/// The default settings.
fn settings(manager: Manager) -> Arc<SessionSettings<SpeedyCodec>> {
    SessionSettings::builder(manager).build().unwrap()
}

/// Settings that ignore `/static/`.
fn builder(manager: Manager) -> SettingsBuilder<SpeedyCodec, Arc<SessionSettings<SpeedyCodec>>> {
    SessionSettings::builder(manager).ignore(Regex::new("^/static/").unwrap())
}

/// Sends a request with the session cookie `cookie` (if any).
async fn call(app: &App, method: &str, uri: &str, cookie: Option<&str>, body: &str) -> Reply {
    let cookie = cookie.map(|value| format!("tandem_session={value}"));
    app.send(method, uri, cookie, body).await
}

/// Creates a session with `n` and returns its cookie value.
async fn create(app: &App, n: u32) -> String {
    let reply = call(app, "POST", "/n", None, &n.to_string()).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    reply.value()
}

async fn new_session_cookie_has_the_secure_defaults(web: Web) {
    let cluster = MemcachedCluster::start(1);
    let store = connect(&cluster).await;
    let app = app(web, settings(manager(&store, Mode::Sticky))).await;

    let reply = call(&app, "POST", "/n", None, "7").await;
    let cookie = reply.cookie();
    let value = reply.value();
    assert!(value.ends_with("-n1.a1"), "{value}");
    assert_eq!(
        cookie,
        format!("tandem_session={value}; Path=/; Max-Age=1800; Secure; HttpOnly; SameSite=Lax")
    );

    // Reading and writing the same session again sets no cookie.
    let reply = call(&app, "GET", "/n", Some(&value), "").await;
    assert_eq!(reply.body, "Some(7)");
    assert!(reply.set_cookie.is_empty(), "{:?}", reply.set_cookie);
    let reply = call(&app, "POST", "/n", Some(&value), "8").await;
    assert!(reply.set_cookie.is_empty(), "{:?}", reply.set_cookie);
    assert_eq!(
        call(&app, "GET", "/n", Some(&value), "").await.body,
        "Some(8)"
    );

    // A handler that reads no session and stores nothing creates none.
    let reply = call(&app, "GET", "/n", None, "").await;
    assert_eq!((reply.body.as_str(), reply.set_cookie.len()), ("None", 0));
}

async fn cookie_settings_are_applied(web: Web) {
    let cluster = MemcachedCluster::start(1);
    let store = connect(&cluster).await;
    let layer = builder(manager(&store, Mode::Sticky))
        .cookie_name("shop")
        .cookie_path("/app")
        .cookie_domain("example.com")
        .secure(false)
        .http_only(false)
        .same_site(SameSite::Strict)
        .max_age(MaxAge::BrowserSession)
        .build()
        .unwrap();
    let app = app(web, layer).await;
    let reply = call(&app, "POST", "/n", None, "1").await;
    let cookie = reply.cookie();
    let value = reply.value();
    assert_eq!(
        cookie,
        format!("shop={value}; Path=/app; Domain=example.com; SameSite=Strict")
    );

    // Invalid settings are refused when the layer is built.
    let refused = SessionSettings::builder(manager(&store, Mode::Sticky))
        .cookie_name("bad name")
        .build();
    assert!(refused.is_err());
    let refused = SessionSettings::builder(manager(&store, Mode::Sticky))
        .same_site(SameSite::None)
        .secure(false)
        .build();
    assert!(refused.is_err());
}

async fn a_handler_that_does_not_use_its_session_costs_no_store_call(web: Web) {
    let cluster = MemcachedCluster::start(2);
    let store = connect(&cluster).await;
    let manager = manager(&store, Mode::NonSticky);
    let app = app(web, settings(manager.clone())).await;
    let value = create(&app, 1).await;
    let (before, loads) = (quiet(&manager, &store).await, manager.stats().loads);
    for path in ["/untouched", "/maybe"] {
        let reply = call(&app, "GET", path, Some(&value), "").await;
        assert_eq!(reply.status, StatusCode::OK);
        assert!(reply.set_cookie.is_empty());
    }
    assert_eq!(operations(&store), before, "no memcached operation");
    assert_eq!(manager.stats().loads, loads, "no load");

    // The same cookie on a handler that reads the session does go to memcached
    // (non-sticky mode), which is what the counts above would have shown.
    assert_eq!(
        call(&app, "GET", "/n", Some(&value), "").await.body,
        "Some(1)"
    );
    assert!(operations(&store) > before);
}

async fn the_commit_waits_for_a_task_that_still_holds_the_session(web: Web) {
    let cluster = MemcachedCluster::start(1);
    let store = connect(&cluster).await;
    let app = app(web, builder(manager(&store, Mode::Sticky)).build().unwrap()).await;
    let started = Instant::now();
    let reply = call(&app, "POST", "/spawned", None, "").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert!(
        started.elapsed() >= Duration::from_millis(100),
        "the response went out before the task released the session"
    );
    let cookie = reply.value();
    let read = call(&app, "GET", "/n", Some(&cookie), "").await;
    assert_eq!(read.body, "Some(7)", "the task's change was committed");
}

async fn ignored_paths_get_no_session(web: Web) {
    let cluster = MemcachedCluster::start(1);
    let store = connect(&cluster).await;
    let manager = manager(&store, Mode::NonSticky);
    let app = app(web, builder(manager.clone()).build().unwrap()).await;
    let value = create(&app, 1).await;

    let before = quiet(&manager, &store).await;
    let reply = call(&app, "GET", "/static/app.css", Some(&value), "").await;
    assert_eq!(reply.body, "no session");
    assert!(reply.set_cookie.is_empty());
    let reply = call(&app, "GET", "/static/logo.png", None, "").await;
    assert_eq!(reply.body, "no session");
    assert!(reply.set_cookie.is_empty());
    assert_eq!(operations(&store), before);
    assert_eq!(call(&app, "GET", "/maybe", None, "").await.body, "session");
}

async fn a_tampered_signed_cookie_is_refused_without_a_store_call(web: Web) {
    let cluster = MemcachedCluster::start(1);
    let store = connect(&cluster).await;
    let manager = manager(&store, Mode::NonSticky);
    let signer = CookieSigner::new(&KEY).unwrap();
    let app = app(
        web,
        builder(manager.clone())
            .signed(signer.clone())
            .build()
            .unwrap(),
    )
    .await;

    let value = create(&app, 5).await;
    let id = signer
        .verify("tandem_session", &value)
        .expect("a signed value");
    assert!(value.len() > id.len() + 40);
    assert_eq!(
        call(&app, "GET", "/n", Some(&value), "").await.body,
        "Some(5)"
    );

    let (before, invalid) = (quiet(&manager, &store).await, manager.stats().invalid_ids);
    let forged_signature = format!("{id}.{}", "A".repeat(43));
    let mut flipped = value.clone().into_bytes();
    flipped[3] = if flipped[3] == b'x' { b'y' } else { b'x' };
    let flipped = String::from_utf8(flipped).unwrap();
    for bad in [id.to_owned(), forged_signature, flipped] {
        let reply = call(&app, "GET", "/n", Some(&bad), "").await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.body, "None", "{bad} must be no session");
        assert!(reply.cookie().starts_with("tandem_session=; "), "cleared");
        assert!(reply.cookie().contains("Max-Age=0"));
    }
    assert_eq!(operations(&store), before, "no memcached call");
    assert_eq!(
        manager.stats().invalid_ids,
        invalid,
        "refused before the manager"
    );

    // A key being rotated out still verifies; a value signed with an unknown key does not.
    let rotated = CookieSigner::new(&[0x11; 32])
        .unwrap()
        .with_previous_key(&KEY)
        .unwrap();
    let app2 = self::app(
        web,
        builder(manager.clone()).signed(rotated).build().unwrap(),
    )
    .await;
    assert_eq!(
        call(&app2, "GET", "/n", Some(&value), "").await.body,
        "Some(5)"
    );
    let stranger = CookieSigner::new(&[0x22; 32])
        .unwrap()
        .sign("tandem_session", id);
    assert_eq!(
        call(&app, "GET", "/n", Some(&stranger), "").await.body,
        "None"
    );
}

async fn malformed_and_oversized_cookies_are_no_session(web: Web) {
    let cluster = MemcachedCluster::start(1);
    let store = connect(&cluster).await;
    let manager = manager(&store, Mode::NonSticky);
    let app = app(web, settings(manager.clone())).await;
    let value = create(&app, 3).await;
    let before = quiet(&manager, &store).await;
    let long = "a".repeat(100_000);
    for bad in [
        "",
        "a b",
        "../../etc/passwd",
        "\"unterminated",
        "x%00y",
        long.as_str(),
    ] {
        let reply = call(&app, "GET", "/n", Some(bad), "").await;
        assert_eq!(reply.status, StatusCode::OK, "{bad:.20}");
        assert_eq!(reply.body, "None", "{bad:.20}");
    }
    assert_eq!(operations(&store), before);
    // A well-formed cookie next to a malformed one of the same name still counts.
    let reply = app
        .send(
            "GET",
            "/n",
            Some(format!("tandem_session=%%; tandem_session={value}")),
            "",
        )
        .await;
    assert_eq!(reply.body, "Some(3)");
}

async fn cycle_id_sets_a_new_cookie_and_the_old_id_no_longer_loads(web: Web) {
    let cluster = MemcachedCluster::start(2);
    let store = connect(&cluster).await;
    let manager = manager(&store, Mode::Sticky);
    let app = app(web, settings(manager.clone())).await;
    let old = create(&app, 9).await;

    let reply = call(&app, "POST", "/cycle", Some(&old), "").await;
    assert_eq!(reply.body, "cycled");
    let new = reply.value();
    assert_ne!(new, old);
    assert!(reply.cookie().contains("Max-Age=1800"));
    assert_eq!(manager.stats().ids_cycled, 1);

    assert_eq!(
        call(&app, "GET", "/n", Some(&new), "").await.body,
        "Some(9)"
    );
    let reply = call(&app, "GET", "/n", Some(&old), "").await;
    assert_eq!(reply.body, "None", "the old id is dead");
    // Its cookie is left alone: a response to a request still carrying the old id,
    // racing the login's, must not delete the new cookie in the browser.
    assert!(reply.set_cookie.is_empty(), "{:?}", reply.set_cookie);

    // Nor does another server load it from memcached.
    let other = self::app(
        web,
        settings(
            Manager::builder(Arc::clone(&store) as Arc<dyn RemoteStore>)
                .route(Route::new("a2").unwrap())
                .build()
                .unwrap(),
        ),
    )
    .await;
    quiet(&manager, &store).await; // the old copy's tombstone
    assert_eq!(call(&other, "GET", "/n", Some(&old), "").await.body, "None");
    let reply = call(&other, "GET", "/n", Some(&new), "").await;
    assert_eq!(reply.body, "Some(9)", "the new id is taken over");
    assert!(reply.value().ends_with(".a2"));
}

async fn invalidate_clears_the_cookie(web: Web) {
    let cluster = MemcachedCluster::start(1);
    let store = connect(&cluster).await;
    let app = app(web, settings(manager(&store, Mode::NonSticky))).await;
    let value = create(&app, 4).await;

    let reply = call(&app, "POST", "/end", Some(&value), "").await;
    assert_eq!(reply.body, "ended");
    assert_eq!(
        reply.cookie(),
        "tandem_session=; Path=/; Max-Age=0; Secure; HttpOnly; SameSite=Lax; \
         Expires=Thu, 01 Jan 1970 00:00:00 GMT"
    );
    assert_eq!(call(&app, "GET", "/n", Some(&value), "").await.body, "None");
    // Ending a session one does not have sets no cookie.
    assert!(
        call(&app, "POST", "/end", None, "")
            .await
            .set_cookie
            .is_empty()
    );
}

async fn a_conflicting_commit_answers_409_and_changes_nothing(web: Web) {
    let cluster = MemcachedCluster::start(1);
    let store = connect(&cluster).await;
    let manager = manager(&store, Mode::Sticky);
    // `/add` reads, waits until both requests have read, then writes.
    let app = app(web, settings(manager.clone())).await;
    let value = create(&app, 10).await;

    let (a, b) = tokio::join!(
        call(&app, "POST", "/add", Some(&value), "1"),
        call(&app, "POST", "/add", Some(&value), "2"),
    );
    let mut statuses = [a.status, b.status];
    statuses.sort();
    assert_eq!(statuses, [StatusCode::OK, StatusCode::CONFLICT]);
    let loser = if a.status == StatusCode::CONFLICT {
        &a
    } else {
        &b
    };
    assert!(loser.body.contains("concurrent"), "{}", loser.body);
    assert!(loser.set_cookie.is_empty());
    let n = call(&app, "GET", "/n", Some(&value), "").await.body;
    assert!(
        n == "Some(11)" || n == "Some(12)",
        "one change survives: {n}"
    );
    assert_eq!(manager.stats().conflicts, 1);
}

async fn error_responses_are_configurable(web: Web) {
    let cluster = MemcachedCluster::start(1);
    let store = connect(&cluster).await;
    let layer = SessionSettings::builder(manager(&store, Mode::Sticky))
        .error_response(|failure: &Failure| match failure {
            Failure::Commit(CommitError::TooLarge { .. }) => {
                let mut response = http::Response::new("cart full".to_owned());
                *response.status_mut() = StatusCode::UNPROCESSABLE_ENTITY;
                response
            }
            other => default_error_response(other),
        })
        .build()
        .unwrap();
    let app = app(web, layer).await;
    let reply = call(&app, "POST", "/big", None, "").await;
    assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(reply.body, "cart full");
    assert!(reply.set_cookie.is_empty(), "no session was stored");
}

async fn no_reachable_node_answers_503_in_non_sticky_mode(web: Web) {
    let cluster = MemcachedCluster::start(1);
    let store = connect(&cluster).await;
    let app = app(web, settings(manager(&store, Mode::NonSticky))).await;
    let value = create(&app, 2).await;
    cluster.node("n1").kill();

    // The load fails: the handler's `?` answers with the configured response.
    let reply = call(&app, "GET", "/n", Some(&value), "").await;
    assert_eq!(
        reply.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        reply.body
    );
    // A new session cannot be stored anywhere: the commit fails.
    let reply = call(&app, "POST", "/n", None, "5").await;
    assert_eq!(
        reply.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        reply.body
    );
    assert!(reply.set_cookie.is_empty());
    // Requests that do not use the session are served as usual.
    assert_eq!(
        call(&app, "GET", "/untouched", Some(&value), "")
            .await
            .status,
        StatusCode::OK
    );
}

async fn the_lock_scope_sees_the_request_path(web: Web) {
    let cluster = MemcachedCluster::start(1);
    let store = connect(&cluster).await;
    let manager = Manager::builder(Arc::clone(&store) as Arc<dyn RemoteStore>)
        .mode(Mode::NonSticky)
        .concurrency(Concurrency::Lock)
        .lock_scope(LockScope::Paths(Regex::new("^/locked/").unwrap()))
        .build()
        .unwrap();
    let app = app(web, settings(manager.clone())).await;
    let value = create(&app, 6).await;

    let before = quiet(&manager, &store).await;
    assert_eq!(
        call(&app, "GET", "/n", Some(&value), "").await.body,
        "Some(6)"
    );
    let unlocked = quiet(&manager, &store).await - before;
    let before = operations(&store);
    assert_eq!(
        call(&app, "GET", "/locked/n", Some(&value), "").await.body,
        "Some(6)"
    );
    // The lock is released in the background.
    let locked = quiet(&manager, &store).await - before;
    // Taking and releasing the memcached lock costs operations of its own.
    assert!(
        locked >= unlocked + 2,
        "locked {locked}, unlocked {unlocked}"
    );
}

async fn the_cookie_is_renewed_while_the_session_is_in_use(web: Web) {
    let cluster = MemcachedCluster::start(1);
    let store = connect(&cluster).await;
    // An interval of 4 s has a renewal window of 1 s.
    let manager = Manager::builder(Arc::clone(&store) as Arc<dyn RemoteStore>)
        .max_inactive(Some(Duration::from_secs(4)))
        .build()
        .unwrap();
    let app = app(web, settings(manager.clone())).await;
    // Sticky mode renews the cookie on the first request of each second of wall-clock
    // time: a request renews it exactly when a second began since the previous
    // request's commit. A request's commit and its renewal decision both happen
    // between its call and its reply, so each reply is checked against the seconds
    // around it, however slow the calls are.
    let second = |time: SystemTime| time.duration_since(UNIX_EPOCH).unwrap().as_secs();
    let first_call = SystemTime::now();
    let value = create(&app, 1).await;
    // The call and the reply of the previous request.
    let mut previous = (first_call, SystemTime::now());
    let mut renewals = 0;
    for _ in 0..25 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let called = SystemTime::now();
        let reply = call(&app, "GET", "/n", Some(&value), "").await;
        let replied = SystemTime::now();
        if reply.set_cookie.is_empty() {
            assert!(
                second(called) <= second(previous.1),
                "not renewed though a second began since the previous reply"
            );
        } else {
            assert_eq!(reply.value(), value, "the same id");
            assert!(reply.cookie().contains("Max-Age=4;"), "{}", reply.cookie());
            assert!(
                second(replied) > second(previous.0),
                "renewed within the second of the previous request"
            );
            renewals += 1;
        }
        previous = (called, replied);
    }
    // The requests span at least 2.5 s, so seconds began during them: the cookie was
    // renewed, and never more often than seconds began.
    let seconds_begun = second(previous.1) - second(first_call);
    assert!(
        (1..=seconds_begun).contains(&renewals),
        "{renewals} renewals in {seconds_begun} seconds begun"
    );

    // A changed interval is sent at once.
    let reply = call(&app, "POST", "/shorten", Some(&value), "").await;
    assert!(reply.cookie().contains("Max-Age=60;"), "{}", reply.cookie());

    // Browser-session cookies are never renewed and carry no Max-Age.
    let app = self::app(
        web,
        SessionSettings::builder(manager)
            .max_age(MaxAge::BrowserSession)
            .build()
            .unwrap(),
    )
    .await;
    let value = create(&app, 1).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(
        call(&app, "GET", "/n", Some(&value), "")
            .await
            .set_cookie
            .is_empty()
    );
}

async fn a_non_sticky_cookie_is_renewed_once_per_window_after_it_was_issued(web: Web) {
    let cluster = MemcachedCluster::start(1);
    let store = connect(&cluster).await;
    // An interval of 4 s has a renewal window of 1 s.
    let window = Duration::from_secs(1);
    let manager = Manager::builder(Arc::clone(&store) as Arc<dyn RemoteStore>)
        .mode(Mode::NonSticky)
        .max_inactive(Some(Duration::from_secs(4)))
        .build()
        .unwrap();
    let app = app(web, settings(manager.clone())).await;
    // Non-sticky mode stores no access time on reads: the layer renews the cookie on
    // the first request that finds it a window old, by when it last issued it. Each
    // issue and each renewal decision happen between a request's call and its reply,
    // so each reply is checked against the last issuing request's call and reply,
    // however slow the calls are. (The layer counts whole milliseconds: a cookie it
    // finds a window old is older than the window less 1 ms, one it does not is
    // younger than the window.)
    let called = Instant::now();
    let value = create(&app, 1).await;
    // The call and the reply of the request that last issued the cookie.
    let mut issued = (called, Instant::now());
    let mut renewals = 0;
    for _ in 0..25 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let called = Instant::now();
        let reply = call(&app, "GET", "/n", Some(&value), "").await;
        let replied = Instant::now();
        if reply.set_cookie.is_empty() {
            assert!(
                called - issued.1 < window,
                "not renewed {:?} after it was issued",
                called - issued.1
            );
        } else {
            assert_eq!(reply.value(), value, "the same id");
            assert!(reply.cookie().contains("Max-Age=4;"), "{}", reply.cookie());
            assert!(
                replied - issued.0 > window - Duration::from_millis(1),
                "renewed {:?} after it was issued",
                replied - issued.0
            );
            issued = (called, replied);
            renewals += 1;
        }
    }
    // Each call comes at least 100 ms after the previous reply, so the tenth request
    // after an issue finds the cookie a window old: 25 requests renew it at least
    // twice (and more only when they are slow enough to span more windows).
    assert!(renewals >= 2, "{renewals} renewals");
}

async fn a_handler_needing_a_session_on_an_ignored_path_answers_500(web: Web) {
    let cluster = MemcachedCluster::start(1);
    let store = connect(&cluster).await;
    let settings = SessionSettings::builder(manager(&store, Mode::Sticky))
        .ignore(Regex::new("^/(static|assets)/").unwrap())
        .build()
        .unwrap();
    let app = app(web, settings).await;
    // `Session` alone on an ignored path is a configuration mistake, not a client's.
    let reply = call(&app, "GET", "/assets/app.js", None, "").await;
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(
        reply.body.contains("no session for this request"),
        "{}",
        reply.body
    );
    assert!(reply.set_cookie.is_empty());
    // `Option<Session>` serves it.
    assert_eq!(
        call(&app, "GET", "/static/app.js", None, "").await.body,
        "no session"
    );
}

async fn a_request_dropped_mid_way_leaves_its_session_free(web: Web) {
    let cluster = MemcachedCluster::start(2);
    let store = connect(&cluster).await;
    let manager = Manager::builder(Arc::clone(&store) as Arc<dyn RemoteStore>)
        .mode(Mode::NonSticky)
        .concurrency(Concurrency::Lock)
        .build()
        .unwrap();
    let app = app(web, settings(manager.clone())).await;
    let value = create(&app, 4).await;
    // The client gives up while the handler holds the session's lock: the request's
    // future is dropped with it.
    let dropped = tokio::time::timeout(
        Duration::from_millis(300),
        call(&app, "POST", "/slow", Some(&value), ""),
    )
    .await;
    assert!(dropped.is_err(), "the slow request was still running");
    // The next request of the session gets the lock at once, and the dropped
    // request's change was never committed.
    let started = Instant::now();
    let reply = call(&app, "GET", "/n", Some(&value), "").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.body, "Some(4)");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "waited {:?} for a lock nobody holds",
        started.elapsed()
    );
}
