//! Cookie renewal ([`MaxAge::FollowSession`]) on tokio's paused time: the manager,
//! the layer and the in-process store share one [`TokioClock`], so a test steps
//! through renewal windows of minutes exactly and in no time. (The same rules over
//! real memcached and real time are tested, against bounds that cannot flake, in
//! `layer.rs`.)

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Body;
use axum::routing::get;
use http::{Request, header};
use tandem_codec::SpeedyCodec;
use tandem_core::{Clock, MemoryStore, NodeId, RemoteStore};
use tandem_manager::{Mode, SessionManager, TokioClock, keepalive_slack};
use tandem_tower::{Session, SessionError, SessionLayer};
use tower::ServiceExt;

const INTERVAL: Duration = Duration::from_secs(30 * 60);

async fn read_n(session: Session<SpeedyCodec>) -> Result<String, SessionError> {
    Ok(format!("{:?}", session.get::<u32>("n").await?))
}

async fn write_n(session: Session<SpeedyCodec>) -> Result<&'static str, SessionError> {
    session.insert("n", &1u32).await?;
    Ok("written")
}

/// An app over a manager in `mode`, everything on one paused clock.
fn app(mode: Mode) -> (Router, Arc<dyn Clock>) {
    let clock: Arc<dyn Clock> = Arc::new(TokioClock::new());
    let store =
        Arc::new(MemoryStore::new([NodeId::new("n1").unwrap()]).with_clock(Arc::clone(&clock)));
    let manager = SessionManager::<SpeedyCodec>::builder(store as Arc<dyn RemoteStore>)
        .mode(mode)
        .max_inactive(Some(INTERVAL))
        .clock(Arc::clone(&clock))
        .build()
        .unwrap();
    let app = Router::new()
        .route("/n", get(read_n).post(write_n))
        .layer(SessionLayer::new(manager));
    (app, clock)
}

/// The `Set-Cookie` value of a request, if it set one.
async fn call(app: &Router, method: &str, cookie: Option<&str>) -> Option<String> {
    let mut request = Request::builder().method(method).uri("/n");
    if let Some(value) = cookie {
        request = request.header(header::COOKIE, format!("tandem_session={value}"));
    }
    let response = app
        .clone()
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    let set_cookie = response
        .headers()
        .get(header::SET_COOKIE)?
        .to_str()
        .unwrap();
    assert!(set_cookie.contains("Max-Age=1800;"), "{set_cookie}");
    let pair = set_cookie.split(';').next().unwrap();
    Some(pair.split_once('=').unwrap().1.to_owned())
}

/// Sticky mode renews the cookie on the first request of each renewal window of wall
/// time (an eighth of the interval): every request is renewed exactly when a window
/// began since the previous one.
#[tokio::test(start_paused = true)]
async fn a_sticky_cookie_is_renewed_on_the_first_request_of_each_window() {
    let (app, clock) = app(Mode::Sticky);
    let window = keepalive_slack(INTERVAL);
    let period =
        |time: SystemTime| time.duration_since(UNIX_EPOCH).unwrap().as_secs() / window.as_secs();
    let value = call(&app, "POST", None)
        .await
        .expect("a new session's cookie");
    let mut previous = period(clock.wall());
    let mut renewals = 0;
    // Requests a third of a window apart, over four windows.
    for _ in 0..12 {
        tokio::time::advance(window / 3).await;
        let now = period(clock.wall());
        match call(&app, "GET", Some(&value)).await {
            Some(renewed) => {
                assert_eq!(renewed, value, "the same id");
                assert_ne!(
                    now, previous,
                    "renewed within the window of the previous request"
                );
                renewals += 1;
            }
            None => assert_eq!(now, previous, "not renewed though a window began"),
        }
        previous = now;
    }
    assert!(
        (3..=4).contains(&renewals),
        "{renewals} renewals over four windows"
    );
}

/// Non-sticky mode renews the cookie on the first request that finds it a window old,
/// counted from when the layer last issued it.
#[tokio::test(start_paused = true)]
async fn a_non_sticky_cookie_is_renewed_a_window_after_it_was_issued() {
    let (app, _clock) = app(Mode::NonSticky);
    let window = keepalive_slack(INTERVAL);
    let step = Duration::from_secs(1);
    let value = call(&app, "POST", None)
        .await
        .expect("a new session's cookie");
    for _ in 0..3 {
        tokio::time::advance(window - step).await;
        assert_eq!(call(&app, "GET", Some(&value)).await, None, "renewed early");
        tokio::time::advance(step).await;
        assert_eq!(call(&app, "GET", Some(&value)).await, Some(value.clone()));
    }
}
