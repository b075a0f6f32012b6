//! `bench-http-mem`: local memory per resident session, beyond its payload.
//!
//! ```text
//! bench-http-mem --variant V [--sessions 100000] [--memcached NODESPEC]
//! ```
//!
//! Builds the benchmark app in process (the same router as `bench-http-app serve`,
//! session layer included), creates `--sessions` sessions through it (`POST /session`,
//! no network between client and app), lets background work settle (Tandem's backups
//! written, the caches' housekeeping run) and reports the heap the sessions hold, as
//! counted by this binary's allocator: live bytes and live allocations per session,
//! and the bytes beyond the payload (the attribute names plus the stored value bytes
//! in the variant's own encoding: speedy for Tandem, JSON for tower-sessions; zero
//! for the variants that keep no session locally). The
//! allocator's own per-allocation overhead (about 8-16 bytes with glibc) comes on
//! top; the RSS delta printed beside it includes it.
//!
//! Prints `MEM variant=.. sessions=.. bytes_per_session=.. allocs_per_session=..
//! payload=.. overhead=.. rss_per_session=..`.

use std::process::ExitCode;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use tandem_bench_http::counting::{Counting, live_allocations, live_bytes};
use tandem_bench_http::{App, AppOptions, CART, Cart, Variant};
use tandem_codec::SpeedyCodec;
use tandem_core::Encodes;
use tandem_manager::Concurrency;
use tower::ServiceExt;

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Sessions created before the first measurement, so that lazily sized structures
/// (hash tables, channels, thread-local caches) are not charged to the sessions.
const WARM_UP: usize = 2_000;

#[derive(Debug, Clone, Copy)]
struct Snapshot {
    bytes: isize,
    allocations: isize,
    rss: Option<u64>,
}

fn snapshot() -> Snapshot {
    Snapshot {
        bytes: live_bytes(),
        allocations: live_allocations(),
        rss: rss_bytes(),
    }
}

/// The resident set size from `/proc/self/status`, where there is one.
fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Payload one session keeps in local memory, in the variant's own stored form:
/// attribute names plus value bytes; zero for the variants that keep no session
/// locally (everything they hold per session is overhead).
fn payload(variant: Variant) -> Result<usize, String> {
    let cart = Cart::new();
    let value = match variant {
        Variant::None
        | Variant::TandemNonSticky
        | Variant::TowerSessionsMemcached
        | Variant::TowerSessionsRedis
        | Variant::TandemNonStickyRedis => return Ok(0),
        Variant::TandemSticky | Variant::TandemStickyRedis => {
            <SpeedyCodec as Encodes<Cart>>::encode(&cart)
                .map_err(|error| error.to_string())?
                .len()
        }
        Variant::TowerSessionsMoka | Variant::TowerSessionsCaching => serde_json::to_vec(&cart)
            .map_err(|error| error.to_string())?
            .len(),
        Variant::ActixSessionRedis | Variant::ActixSessionCookie => {
            return Err(format!("{variant} runs on actix-web: not measured here"));
        }
    };
    Ok(CART.len() + value)
}

async fn create(app: &App, count: usize) -> Result<String, String> {
    let mut last = String::new();
    for _ in 0..count {
        let request = Request::builder()
            .method(Method::POST)
            .uri("/session")
            .body(Body::empty())
            .map_err(|error| error.to_string())?;
        let response = app
            .router
            .clone()
            .oneshot(request)
            .await
            .map_err(|error| error.to_string())?;
        if response.status() != StatusCode::OK {
            return Err(format!("POST /session answered {}", response.status()));
        }
        if let Some(cookie) = response
            .headers()
            .get(axum::http::header::SET_COOKIE)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.split(';').next())
        {
            last = cookie.to_owned();
        }
    }
    Ok(last)
}

/// Lets background work finish: Tandem's backups written and its local tier's
/// housekeeping applied; for the others, reads that drive their caches'
/// housekeeping.
async fn settle(app: &App, cookie: &str) -> Result<(), String> {
    if cookie.is_empty() {
        return Err("POST /session set no cookie".into());
    }
    if let Some(manager) = &app.manager {
        for _ in 0..600 {
            if manager.pending_backups() == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        manager.run_pending_tasks().await;
    }
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    for _ in 0..1_000 {
        let request = Request::builder()
            .uri("/cart")
            .header(axum::http::header::COOKIE, cookie)
            .body(Body::empty())
            .map_err(|error| error.to_string())?;
        let response = app
            .router
            .clone()
            .oneshot(request)
            .await
            .map_err(|error| error.to_string())?;
        if response.status() != StatusCode::OK {
            return Err(format!("GET /cart answered {}", response.status()));
        }
    }
    if let Some(manager) = &app.manager {
        manager.run_pending_tasks().await;
    }
    Ok(())
}

async fn run(args: &[String]) -> Result<(), String> {
    let mut options = AppOptions {
        variant: Variant::None,
        concurrency: Concurrency::Merge,
        ..AppOptions::default()
    };
    let mut variant = None;
    let mut sessions = 100_000usize;
    if !args.len().is_multiple_of(2) {
        return Err("every option needs a value".into());
    }
    for pair in args.chunks(2) {
        let (flag, value) = (pair[0].as_str(), pair[1].as_str());
        match flag {
            "--variant" => variant = Some(value.parse::<Variant>()?),
            "--sessions" => {
                sessions = value
                    .parse()
                    .map_err(|_| format!("invalid value {value:?} for --sessions"))?
            }
            "--memcached" => options.memcached = Some(value.to_owned()),
            _ => return Err(format!("unknown option {flag}")),
        }
    }
    options.variant = variant.ok_or("--variant is required")?;
    if sessions == 0 {
        return Err("--sessions must be at least 1".into());
    }
    let app = App::build(&options).await?;
    let warm_cookie = create(&app, WARM_UP).await?;
    settle(&app, &warm_cookie).await?;
    let before = snapshot();
    let cookie = create(&app, sessions).await?;
    settle(&app, &cookie).await?;
    let after = snapshot();
    let count = sessions as f64;
    let bytes = (after.bytes - before.bytes) as f64 / count;
    let allocations = (after.allocations - before.allocations) as f64 / count;
    let payload = payload(options.variant)?;
    let overhead = bytes - payload as f64;
    let rss = match (before.rss, after.rss) {
        (Some(before), Some(after)) => {
            format!("{:.0}", (after as f64 - before as f64) / count)
        }
        _ => "n/a".to_owned(),
    };
    let local = app
        .manager
        .as_ref()
        .map_or_else(|| "n/a".to_owned(), |m| m.local_sessions().to_string());
    println!(
        "MEM variant={} sessions={sessions} bytes_per_session={bytes:.0} allocs_per_session={allocations:.1} payload={payload} overhead={overhead:.0} rss_per_session={rss} tandem_local_sessions={local}",
        options.variant
    );
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args
        .first()
        .is_some_and(|arg| arg == "--help" || arg == "-h")
    {
        println!("usage: bench-http-mem --variant V [--sessions N] [--memcached NODESPEC]");
        return ExitCode::SUCCESS;
    }
    tandem_bench_http::run_tool("bench-http-mem", run(&args))
}
