//! The handlers, once for both frameworks: what each route does with a session,
//! whichever layer provides it. The axum app (`app.rs`) and the actix-web app
//! (`actix_app.rs`) only turn a [`Reply`] or a failure into their own response.
//!
//! ```text
//! GET  /cart      the cart's summary (404 if the session has no cart)
//! POST /cart      one more of the next line's article; the new summary
//! POST /session   creates a session holding a new cart (sets the cookie)
//! GET  /counter   the counter attribute (0 when absent)
//! POST /counter   counter + 1, read-modify-write: the lost-update test
//! GET  /healthz   ok, never touches a session
//! GET  /admin/stats  Tandem's manager counters and gauges as JSON ({} otherwise)
//! ```

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::json;
use tandem_codec::SpeedyCodec;
use tandem_manager::SessionManager;

use crate::cart::{CART, COUNTER, Cart};

/// What a session route does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// `GET /cart`.
    ShowCart,
    /// `POST /cart`.
    BumpCart,
    /// `POST /session`.
    Create,
    /// `GET /counter`.
    ShowCounter,
    /// `POST /counter`.
    Increment,
}

/// A handler's answer, before a framework makes it a response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// 200, or 404 for a session without a cart.
    pub found: bool,
    /// The body.
    pub body: String,
    /// A `Set-Cookie` value the handler sets itself (only the baseline's new
    /// sessions: it has no layer to do it).
    pub set_cookie: Option<String>,
}

impl Reply {
    fn ok(body: String) -> Reply {
        Reply {
            found: true,
            body,
            set_cookie: None,
        }
    }

    fn no_cart() -> Reply {
        Reply {
            found: false,
            body: "no cart\n".to_owned(),
            set_cookie: None,
        }
    }
}

/// What the handlers need of a session, whichever layer provides it.
///
/// The futures are `Send` (axum needs it); a layer whose session is not (actix-session's
/// is reference-counted) does its synchronous work before returning a ready future.
pub trait SessionAccess {
    /// A failed session operation: each framework turns it into its response.
    type Failure;
    /// The cart attribute.
    fn cart(&self) -> impl Future<Output = Result<Option<Cart>, Self::Failure>> + Send;
    /// Stores the cart attribute.
    fn set_cart(&self, cart: &Cart) -> impl Future<Output = Result<(), Self::Failure>> + Send;
    /// The counter attribute.
    fn counter(&self) -> impl Future<Output = Result<Option<u64>, Self::Failure>> + Send;
    /// Stores the counter attribute.
    fn set_counter(&self, value: u64) -> impl Future<Output = Result<(), Self::Failure>> + Send;
    /// A cookie the handler must set itself on a new session (only the baseline,
    /// which has no layer to do it).
    fn creation_cookie(&self) -> Option<String> {
        None
    }
}

/// Runs `action` on `session`.
pub async fn act<A: SessionAccess>(action: Action, session: &A) -> Result<Reply, A::Failure> {
    Ok(match action {
        Action::ShowCart => match session.cart().await? {
            Some(cart) => Reply::ok(cart.summary()),
            None => Reply::no_cart(),
        },
        Action::BumpCart => match session.cart().await? {
            Some(mut cart) => {
                cart.bump();
                session.set_cart(&cart).await?;
                Reply::ok(cart.summary())
            }
            None => Reply::no_cart(),
        },
        Action::Create => {
            session.set_cart(&Cart::new()).await?;
            Reply {
                set_cookie: session.creation_cookie(),
                ..Reply::ok("created\n".to_owned())
            }
        }
        Action::ShowCounter => Reply::ok(format!("{}\n", session.counter().await?.unwrap_or(0))),
        Action::Increment => {
            let value = session.counter().await?.unwrap_or(0) + 1;
            session.set_counter(value).await?;
            Reply::ok(format!("{value}\n"))
        }
    })
}

/// A failed operation of a session layer other than Tandem's (whose `SessionError`
/// carries its own response): answered 500 with the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failed(pub String);

impl fmt::Display for Failed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Failed {
    /// The failure of `error`.
    pub fn of(error: impl fmt::Display) -> Failed {
        Failed(error.to_string())
    }
}

/// Tandem's manager counters and gauges as JSON (`GET /admin/stats`).
pub fn tandem_stats(manager: &SessionManager<SpeedyCodec>) -> String {
    let stats = manager.stats();
    json!({
        "local_sessions": manager.local_sessions(),
        "pending_backups": manager.pending_backups(),
        "loads": stats.loads,
        "loaded_local": stats.loaded_local,
        "loaded_remote": stats.loaded_remote,
        "commits": stats.commits,
        "backups_written": stats.backups_written,
        "backups_coalesced": stats.backups_coalesced,
        "backups_skipped_unchanged": stats.backups_skipped_unchanged,
        "touches": stats.touches,
        "conflicts": stats.conflicts,
        "lock_waits": stats.lock_waits,
        "merge_retries": stats.merge_retries,
        "sessions_created": stats.sessions_created,
    })
    .to_string()
}

/// Tandem's session (the same type under axum and actix-web).
impl SessionAccess for tandem_tower::Session<SpeedyCodec> {
    type Failure = tandem_tower::SessionError;

    async fn cart(&self) -> Result<Option<Cart>, Self::Failure> {
        self.get::<Cart>(CART).await
    }

    async fn set_cart(&self, cart: &Cart) -> Result<(), Self::Failure> {
        self.insert(CART, cart).await.map(drop)
    }

    async fn counter(&self) -> Result<Option<u64>, Self::Failure> {
        self.get::<u64>(COUNTER).await
    }

    async fn set_counter(&self, value: u64) -> Result<(), Self::Failure> {
        self.insert(COUNTER, &value).await.map(drop)
    }
}

/// The baseline's "session": a cart that is always there, nothing stored.
pub struct NoSession;

impl NoSession {
    /// The extractor's work: only the calibration's CPU burn.
    pub fn extract() -> NoSession {
        burn_baseline_extra_cpu();
        NoSession
    }
}

/// Nanoseconds of CPU the baseline burns per request on top of its handler (default
/// 0), set by `bench-http-app serve --baseline-extra-cpu-ns`: a calibration of what
/// a given per-request cost does to requests/s on the machine, the way a session
/// layer's cost shows up in the figures.
pub static BASELINE_EXTRA_CPU_NS: AtomicU64 = AtomicU64::new(0);

/// Spins for [`BASELINE_EXTRA_CPU_NS`] (busy, not sleeping: it must cost CPU).
fn burn_baseline_extra_cpu() {
    let extra = Duration::from_nanos(BASELINE_EXTRA_CPU_NS.load(Ordering::Relaxed));
    if extra.is_zero() {
        return;
    }
    let started = Instant::now();
    while started.elapsed() < extra {
        std::hint::spin_loop();
    }
}

/// The baseline's cookie values: unique, and as long as a Tandem session id.
static NEXT_COOKIE: AtomicU64 = AtomicU64::new(0);

impl SessionAccess for NoSession {
    type Failure = Failed;

    async fn cart(&self) -> Result<Option<Cart>, Failed> {
        Ok(Some(Cart::new()))
    }

    async fn set_cart(&self, _cart: &Cart) -> Result<(), Failed> {
        Ok(())
    }

    async fn counter(&self) -> Result<Option<u64>, Failed> {
        Ok(None)
    }

    async fn set_counter(&self, _value: u64) -> Result<(), Failed> {
        Ok(())
    }

    fn creation_cookie(&self) -> Option<String> {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_nanos());
        let serial = NEXT_COOKIE.fetch_add(1, Ordering::Relaxed);
        Some(format!(
            "bench_session={nanos:x}{serial:08x}-n1; Path=/; HttpOnly"
        ))
    }
}
