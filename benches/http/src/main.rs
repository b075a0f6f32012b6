//! `bench-http-app`: the end-to-end HTTP benchmark's app and its helper clients.
//!
//! ```text
//! bench-http-app serve --variant V [--framework axum|actix] [--listen ADDR] [--memcached NODESPEC]
//!                      [--concurrency merge|lock|none] [--memcached-idle N] [--read-exchanges N]
//!                      [--workers N] [--baseline-extra-cpu-ns N] [--redis URL] [--wait-replicas N]
//! bench-http-app populate --target ADDR --count N [--connections C] --out FILE
//! bench-http-app race --target ADDR [--clients 32] [--requests 100]
//! ```
//!
//! `serve` runs the app until killed; `--baseline-extra-cpu-ns` makes the `none`
//! variant burn that much CPU per request (a calibration: what a per-request cost of
//! that size does to requests/s here). `populate` creates N sessions and writes their
//! cookies, one per line, for wrk. `race` is the lost-update test; it prints
//! `RACE sent=.. accepted=.. conflicts=.. errors=.. final=.. lost=..`.
//! Variants: none, tandem-sticky, tandem-nonsticky, tower-sessions-moka,
//! tower-sessions-memcached, tower-sessions-caching, and on Redis (`--redis URL`: a
//! server, `redis+sentinel://...` or `redis+cluster://...`) tower-sessions-redis,
//! tandem-sticky-redis, tandem-nonsticky-redis; `--wait-replicas N` gives the Tandem
//! Redis variants the durable setting (each write waits for N replica
//! acknowledgements). `--framework actix` serves the same handlers on actix-web
//! (`--workers` actix-web workers, default one per core) with the variants none,
//! tandem-sticky, tandem-nonsticky (and on Redis), actix-session-redis (`--redis
//! URL`) and actix-session-cookie. scripts/bench-http.sh runs it all;
//! scripts/bench-redis-ha.sh compares Redis deployments.

use std::io::Write as _;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::Ordering;

use tandem_bench_http::{App, AppOptions, BASELINE_EXTRA_CPU_NS, Framework, Variant};
use tandem_bench_http::{actix_app, client};
use tandem_manager::Concurrency;

const USAGE: &str = "usage:
  bench-http-app serve --variant V [--framework axum|actix] [--listen ADDR] [--memcached NODESPEC] [--concurrency merge|lock|none] [--memcached-idle N] [--read-exchanges N] [--workers N] [--baseline-extra-cpu-ns N] [--redis URL] [--wait-replicas N]
  bench-http-app populate --target ADDR --count N [--connections C] --out FILE
  bench-http-app race --target ADDR [--clients N] [--requests N]";

/// `--flag value` pairs after the subcommand.
fn pairs(args: &[String]) -> Result<Vec<(&str, &str)>, String> {
    if !args.len().is_multiple_of(2) {
        return Err(format!("{} needs a value", args[args.len() - 1]));
    }
    Ok(args
        .chunks(2)
        .map(|pair| (pair[0].as_str(), pair[1].as_str()))
        .collect())
}

/// Takes `--workers N` out of the arguments: the runtime's worker threads (default:
/// one per core).
fn workers(args: &[String]) -> Result<(Option<usize>, Vec<String>), String> {
    let mut rest = Vec::with_capacity(args.len());
    let mut workers = None;
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        if arg == "--workers" {
            let value = args.next().ok_or("--workers needs a value")?;
            match number(arg, value)? {
                0 => return Err("--workers must be at least 1".into()),
                count => workers = Some(count),
            }
        } else {
            rest.push(arg.clone());
        }
    }
    Ok((workers, rest))
}

fn number(flag: &str, value: &str) -> Result<usize, String> {
    value
        .parse()
        .map_err(|_| format!("invalid value {value:?} for {flag}"))
}

fn address(flag: &str, value: &str) -> Result<SocketAddr, String> {
    value
        .parse()
        .map_err(|_| format!("invalid address {value:?} for {flag}"))
}

async fn serve(args: &[String], workers: Option<usize>) -> Result<(), String> {
    let mut options = AppOptions {
        variant: Variant::None,
        concurrency: Concurrency::Merge,
        ..AppOptions::default()
    };
    let mut variant = None;
    let mut framework = Framework::Axum;
    let mut listen = "127.0.0.1:8080".to_owned();
    for (flag, value) in pairs(args)? {
        match flag {
            "--variant" => variant = Some(value.parse::<Variant>()?),
            "--framework" => framework = value.parse()?,
            "--listen" => listen = value.to_owned(),
            "--memcached" => options.memcached = Some(value.to_owned()),
            "--redis" => options.redis = Some(value.to_owned()),
            "--wait-replicas" => {
                let replicas = u32::try_from(number(flag, value)?)
                    .map_err(|_| format!("invalid value {value:?} for {flag}"))?;
                options.wait_replicas = (replicas > 0).then_some(replicas);
            }
            "--memcached-idle" => options.memcached_idle = Some(number(flag, value)?),
            "--read-exchanges" => options.read_exchanges = Some(number(flag, value)?),
            "--baseline-extra-cpu-ns" => BASELINE_EXTRA_CPU_NS.store(
                u64::try_from(number(flag, value)?).unwrap_or(u64::MAX),
                Ordering::Relaxed,
            ),
            "--concurrency" => {
                options.concurrency = match value {
                    "merge" => Concurrency::Merge,
                    "lock" => Concurrency::Lock,
                    "none" => Concurrency::LastWriterWins,
                    _ => return Err(format!("invalid value {value:?} for --concurrency")),
                }
            }
            _ => return Err(format!("unknown option {flag}")),
        }
    }
    options.variant = variant.ok_or("serve needs --variant")?;
    if framework == Framework::Actix {
        let workers = workers
            .or_else(|| std::thread::available_parallelism().ok().map(usize::from))
            .unwrap_or(1);
        return actix_app::serve(&options, &listen, workers).await;
    }
    let app = App::build(&options).await?;
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .map_err(|error| format!("cannot listen on {listen}: {error}"))?;
    let bound = listener.local_addr().map_err(|error| error.to_string())?;
    println!("bench-http-app {} listening on {bound}", options.variant);
    axum::serve(listener, app.router)
        .await
        .map_err(|error| error.to_string())
}

async fn populate(args: &[String]) -> Result<(), String> {
    let (mut target, mut count, mut connections, mut out) = (None, None, 32, None);
    for (flag, value) in pairs(args)? {
        match flag {
            "--target" => target = Some(address(flag, value)?),
            "--count" => count = Some(number(flag, value)?),
            "--connections" => connections = number(flag, value)?,
            "--out" => out = Some(value.to_owned()),
            _ => return Err(format!("unknown option {flag}")),
        }
    }
    let (target, count, out) = match (target, count, out) {
        (Some(target), Some(count), Some(out)) => (target, count, out),
        _ => return Err("populate needs --target, --count and --out".into()),
    };
    let cookies = client::populate(target, count, connections).await?;
    let mut file = std::io::BufWriter::new(
        std::fs::File::create(&out).map_err(|error| format!("{out}: {error}"))?,
    );
    for cookie in &cookies {
        writeln!(file, "{cookie}").map_err(|error| format!("{out}: {error}"))?;
    }
    file.flush().map_err(|error| format!("{out}: {error}"))?;
    println!("populated {} sessions into {out}", cookies.len());
    Ok(())
}

async fn race(args: &[String]) -> Result<(), String> {
    let (mut target, mut clients, mut requests) = (None, 32, 100);
    for (flag, value) in pairs(args)? {
        match flag {
            "--target" => target = Some(address(flag, value)?),
            "--clients" => clients = number(flag, value)?,
            "--requests" => requests = number(flag, value)?,
            _ => return Err(format!("unknown option {flag}")),
        }
    }
    let target = target.ok_or("race needs --target")?;
    let report = client::race(target, clients, requests).await?;
    println!(
        "RACE sent={} accepted={} conflicts={} errors={} final={} lost={} rps={:.0} p99_us={}",
        report.sent,
        report.accepted,
        report.conflicts,
        report.errors,
        report.final_value,
        report.lost(),
        report.rate(),
        report.p99.as_micros()
    );
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(command) = args.first() else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    let rest = &args[1..];
    // `--workers N` (serve only) is read before the runtime exists; the rest after.
    let (workers, rest) = match workers(rest) {
        Ok(split) => split,
        Err(message) => {
            eprintln!("bench-http-app: {message}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(workers) = workers {
        builder.worker_threads(workers);
    }
    let runtime = match builder.enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("bench-http-app: no runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let rest = rest.as_slice();
    let result = runtime.block_on(async {
        match command.as_str() {
            "serve" => serve(rest, workers).await,
            "populate" => populate(rest).await,
            "race" => race(rest).await,
            "--help" | "-h" => {
                println!("{USAGE}");
                Ok(())
            }
            other => Err(format!("unknown command {other:?}\n{USAGE}")),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("bench-http-app: {message}");
            ExitCode::FAILURE
        }
    }
}
