//! The end-to-end HTTP benchmark's app: one set of handlers (a ~500-byte cart
//! attribute read by `GET /cart` and changed by `POST /cart`, a counter for the
//! lost-update test) served with no sessions at all (the baseline), with Tandem
//! (sticky or non-sticky), or with tower-sessions over its moka store, over a small
//! memcached store written here, or over `CachingSessionStore` of the two; on
//! actix-web (`--framework actix`), without sessions, with Tandem and with
//! actix-session over its Redis or cookie store.
//!
//! `scripts/bench-http.sh` drives it with wrk; `benches/RESULTS.md` has the figures.
//! The binaries are `bench-http-app` (`serve`, `populate`, `race`) and
//! `bench-http-mem` (heap per resident session, with a counting allocator),
//! `bench-http-profile` (one variant's request path in process) and
//! `bench-moka-floor` (the heap moka itself keeps per entry).
//!
//! It is a measuring tool, not an example to copy: the handlers do the least an
//! application does with a session so that the session layer's cost shows.

pub mod actix_app;
pub mod app;
pub mod cart;
pub mod client;
// A global allocator can only be written with unsafe code: the one exception to the
// workspace's `unsafe_code` lint.
#[allow(unsafe_code)]
pub mod counting;
pub mod handlers;
pub mod memcached_store;

pub use app::{App, AppOptions, Framework, Variant, WAIT_TIMEOUT};
pub use cart::{CART, COUNTER, Cart};
pub use handlers::BASELINE_EXTRA_CPU_NS;

/// Runs an in-process tool's `run` to completion on a current-thread runtime, and
/// turns its outcome into the exit code (an error goes to stderr, prefixed with the
/// tool's name).
pub fn run_tool<F>(tool: &str, run: F) -> std::process::ExitCode
where
    F: std::future::Future<Output = Result<(), String>>,
{
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("{tool}: no runtime: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("{tool}: {message}");
            std::process::ExitCode::FAILURE
        }
    }
}
