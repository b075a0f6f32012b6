//! `bench-http-profile`: the in-process cost of one request, without network or
//! load generator, for profiling a variant's request path.
//!
//! ```text
//! bench-http-profile --variant V [--requests 20000] [--write-every 0] [--sessions 1]
//!                    [--yield-every 0] [--memcached NODESPEC]
//! ```
//!
//! Builds the benchmark app in process, creates `--sessions` sessions (`POST
//! /session`), then sends `--requests` requests, each with the next session's cookie
//! in turn: `GET /cart`, or every `--write-every`-th a `POST /cart` (0: reads only).
//! Prints the mean time per request. Under `valgrind --tool=callgrind` it gives
//! deterministic instruction counts per request for the variant's whole path (router,
//! session layer, handler) and, since background tasks run in the same process, for
//! what the requests cause there. With one session, Tandem's backups of successive
//! writes coalesce into few; with many sessions in turn, each write is backed up, as
//! under a real load. The runtime has one thread, and requests that never wait leave
//! it no turn for background work: `--yield-every N` yields to it after every N-th
//! request (0: never), so that backups are written while the requests run.

use std::process::ExitCode;
use std::time::Instant;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use tandem_bench_http::{App, AppOptions, Variant};
use tandem_manager::Concurrency;
use tower::ServiceExt;

async fn send(
    app: &App,
    method: Method,
    uri: &str,
    cookie: Option<&str>,
) -> Result<Option<String>, String> {
    let mut builder = Request::builder().method(method).uri(uri);
    if let Some(cookie) = cookie {
        builder = builder.header(header::COOKIE, cookie);
    }
    let request = builder
        .body(Body::empty())
        .map_err(|error| error.to_string())?;
    let response = app
        .router
        .clone()
        .oneshot(request)
        .await
        .map_err(|error| error.to_string())?;
    if response.status() != StatusCode::OK {
        return Err(format!("{uri} answered {}", response.status()));
    }
    Ok(response
        .headers()
        .get(header::SET_COOKIE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .map(str::to_owned))
}

async fn run(args: &[String]) -> Result<(), String> {
    let mut options = AppOptions {
        variant: Variant::None,
        concurrency: Concurrency::Merge,
        ..AppOptions::default()
    };
    let (mut requests, mut write_every, mut sessions) = (20_000usize, 0usize, 1usize);
    let mut yield_every = 0usize;
    for pair in args.chunks(2) {
        let [flag, value] = pair else {
            return Err("every option needs a value".into());
        };
        match flag.as_str() {
            "--variant" => options.variant = value.parse()?,
            "--requests" => requests = value.parse().map_err(|_| "bad --requests")?,
            "--write-every" => write_every = value.parse().map_err(|_| "bad --write-every")?,
            "--yield-every" => yield_every = value.parse().map_err(|_| "bad --yield-every")?,
            "--sessions" => {
                sessions = value.parse().map_err(|_| "bad --sessions")?;
                if sessions == 0 {
                    return Err("--sessions must be at least 1".into());
                }
            }
            "--memcached" => options.memcached = Some(value.clone()),
            other => return Err(format!("unknown option {other}")),
        }
    }
    let app = App::build(&options).await?;
    let mut cookies = Vec::with_capacity(sessions);
    for _ in 0..sessions {
        let cookie = send(&app, Method::POST, "/session", None)
            .await?
            .ok_or("POST /session set no cookie")?;
        cookies.push(cookie);
    }
    let started = Instant::now();
    for (i, cookie) in (1..=requests).zip(cookies.iter().cycle()) {
        let method = if write_every > 0 && i % write_every == 0 {
            Method::POST
        } else {
            Method::GET
        };
        send(&app, method, "/cart", Some(cookie)).await?;
        if yield_every > 0 && i % yield_every == 0 {
            tokio::task::yield_now().await;
        }
    }
    let elapsed = started.elapsed();
    println!(
        "PROFILE variant={} requests={requests} mean_ns={}",
        options.variant,
        elapsed.as_nanos() / requests as u128
    );
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    tandem_bench_http::run_tool("bench-http-profile", run(&args))
}
