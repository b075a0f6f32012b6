//! `bench-moka-floor`: the heap moka itself keeps per entry, for the local tier's
//! memory budget.
//!
//! ```text
//! bench-moka-floor [--entries 100000]
//! ```
//!
//! Fills `moka::sync::Cache`s configured step by step like Tandem's local tier
//! (LRU, weigher, per-entry expiry, eviction listener, foldhash) with `--entries`
//! keys whose values are a pointer, reads each once, runs the housekeeping, and
//! prints the live heap per entry that the cache adds (keys and values are allocated
//! before and not counted). Prints `MOKA config=.. bytes_per_entry=..
//! allocations_per_entry=..` lines.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tandem_bench_http::counting::{Counting, live_allocations, live_bytes};

#[global_allocator]
static ALLOCATOR: Counting = Counting;

type Key = Arc<str>;
type Value = Arc<u64>;
type Cache = moka::sync::Cache<Key, Value, foldhash::fast::RandomState>;
type Builder = moka::sync::CacheBuilder<Key, Value, moka::sync::Cache<Key, Value>>;

const INTERVAL: Duration = Duration::from_secs(30 * 60);

/// Per-entry expiry as Tandem's local tier sets it: the full interval on every
/// create and read.
struct SlidingExpiry;

impl moka::Expiry<Key, Value> for SlidingExpiry {
    fn expire_after_create(&self, _key: &Key, _value: &Value, _at: Instant) -> Option<Duration> {
        Some(INTERVAL)
    }

    fn expire_after_read(
        &self,
        _key: &Key,
        _value: &Value,
        _at: Instant,
        _remaining: Option<Duration>,
        _modified: Instant,
    ) -> Option<Duration> {
        Some(INTERVAL)
    }
}

fn lru() -> Builder {
    moka::sync::Cache::builder()
        .max_capacity(1 << 40)
        .eviction_policy(moka::policy::EvictionPolicy::lru())
        .weigher(|_key: &Key, _value: &Value| 500)
}

fn measure(config: &str, entries: usize, build: impl Fn() -> Cache) {
    let keys: Vec<Key> = (0..entries)
        .map(|i| Arc::from(format!("{i:043}-n1").as_str()))
        .collect();
    let values: Vec<Value> = (0..entries).map(|i| Arc::new(i as u64)).collect();
    let bytes_before = live_bytes();
    let allocations_before = live_allocations();
    let cache = build();
    for (key, value) in keys.iter().zip(&values) {
        cache.insert(Arc::clone(key), Arc::clone(value));
    }
    cache.run_pending_tasks();
    for key in &keys {
        assert!(cache.get(key).is_some(), "an entry went missing");
    }
    cache.run_pending_tasks();
    let count = isize::try_from(entries).unwrap_or(isize::MAX);
    let bytes = (live_bytes() - bytes_before) / count;
    let allocations = (live_allocations() - allocations_before) as f64 / entries as f64;
    println!("MOKA config={config} bytes_per_entry={bytes} allocations_per_entry={allocations:.1}");
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let entries = match args.as_slice() {
        [] => 100_000,
        [flag, count] if flag == "--entries" => match count.parse() {
            Ok(count) if count > 0 => count,
            _ => {
                eprintln!("--entries takes a positive number");
                return ExitCode::from(2);
            }
        },
        _ => {
            eprintln!("usage: bench-moka-floor [--entries N]");
            return ExitCode::from(2);
        }
    };
    measure("plain", entries, || {
        moka::sync::Cache::builder()
            .max_capacity(1 << 40)
            .build_with_hasher(Default::default())
    });
    measure("lru+weigher", entries, || {
        lru().build_with_hasher(Default::default())
    });
    measure("lru+weigher+time_to_idle", entries, || {
        lru()
            .time_to_idle(INTERVAL)
            .build_with_hasher(Default::default())
    });
    measure("lru+weigher+per_entry_expiry+listener", entries, || {
        lru()
            .expire_after(SlidingExpiry)
            .eviction_listener(|_key, _value, _cause| {})
            .build_with_hasher(Default::default())
    });
    ExitCode::SUCCESS
}
