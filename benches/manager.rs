//! The manager's request path in sticky mode.
//!
//! - `local/bare_moka_get_insert` (baseline): a `moka` (sync) cache `get` plus
//!   `insert` of the same stored bytes, which is the least a cache-backed session layer
//!   can do per request.
//! - `local/load_commit_unchanged`: `SessionManager::load` + `commit` of a locally held
//!   session that the request reads but does not change (the common request).
//! - `local/load_commit_changed_async`: the same with one attribute changed and an
//!   asynchronous backup (the write happens off the request path, against a real
//!   memcached).
//! - `memcached/load_commit_changed_sync`: the same with a synchronous backup: one
//!   memcached round trip inside the commit.
//! - `memcached/raw_set` : a bare memcached set of the same bytes, the floor of the
//!   sync case.
//! - `nonsticky/raw_get_set` (baseline): a bare memcached get plus set of the same
//!   bytes, what any remote session store does for a changed request.
//! - `nonsticky/load_commit_changed` and `nonsticky/load_commit_unchanged`: non-sticky
//!   requests (get-and-touch, then compare-and-swap for the changed one).
//! - `threads/bare_moka_get_{1,2}` (baseline) and
//!   `threads/load_commit_unchanged_{1,2}`: the read of one of 1,000 held sessions
//!   from one and from two threads at once (time per read, all threads together): what
//!   the local tier and the manager cost when a server's cores share them. Shared
//!   cache lines written on every read (counters, the cache's own bookkeeping) show
//!   here and not in the single-threaded figures.
//! - `residents/hashmap_get_{1000,100000}` (floor), `residents/bare_moka_get_*` and
//!   `residents/load_commit_unchanged_*`: the read of one of 1,000 or 100,000 held
//!   sessions in a shuffled order, as a load balancer spreads clients: a plain
//!   `HashMap` behind a `RwLock` (lookup and `Arc` clone, the least any concurrent map
//!   costs), the local tier's cache alone, and the manager. With 100,000 sessions the
//!   working set no longer fits the processor's caches, and what each structure
//!   touches per read decides its cost.
//!
//! Run with `scripts/bench-manager.sh`, which prints the ratios to the baselines.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use speedy::{Readable, Writable};
use tandem::memcached::{MemcachedConfig, MemcachedStore};
use tandem::{
    BackupMode, CookieUpdate, KeyPrefix, Mode, NodeSpec, RemoteStore, SessionId, SessionManager,
    SpeedyCodec, envelope,
    model::{KeySpace, Ttl},
};
use tandem_testkit::MemcachedProcess;

#[derive(Clone, Readable, Writable)]
struct CartLine {
    sku: String,
    quantity: u32,
    unit_price_cents: u64,
}

/// A session like the shop's: a user, a cart of eight lines (~500 bytes stored).
fn fill(session: &mut tandem::RequestSession<SpeedyCodec>) {
    session.insert("user", "ann@example.com").unwrap();
    let cart: Vec<CartLine> = (0..8)
        .map(|i| CartLine {
            sku: format!("SKU-{i:06}-BLUE-XL"),
            quantity: i + 1,
            unit_price_cents: 1999 + u64::from(i) * 100,
        })
        .collect();
    session.insert("cart", &cart).unwrap();
    session
        .insert("csrf", "f3a9c2d1e8b7a6f5e4d3c2b1a0f9e8d7")
        .unwrap();
    session.insert("locale", "en-GB").unwrap();
    session.insert("visits", &0u64).unwrap();
}

async fn manager_with(
    store: Arc<dyn RemoteStore>,
    backup: BackupMode,
) -> (SessionManager<SpeedyCodec>, SessionId) {
    let manager = SessionManager::<SpeedyCodec>::builder(store)
        .backup(backup)
        .build()
        .unwrap();
    let mut session = manager.load(None).await.unwrap();
    fill(&mut session);
    let CookieUpdate::Set { id, .. } = manager.commit(session).await.unwrap().cookie else {
        unreachable!("a new session sets its cookie")
    };
    (manager, id)
}

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // Managers start their background tasks on the runtime they are built in.
    let _runtime_context = runtime.enter();
    let memcached = MemcachedProcess::start();
    let spec = NodeSpec::parse(&format!("n1:{}", memcached.address())).unwrap();
    let typed_store = Arc::new(
        runtime
            .block_on(MemcachedStore::connect(&spec, MemcachedConfig::default()))
            .unwrap(),
    );
    let store: Arc<dyn RemoteStore> = Arc::clone(&typed_store) as Arc<dyn RemoteStore>;

    let (async_manager, id) = runtime.block_on(manager_with(Arc::clone(&store), BackupMode::Async));
    let sync = BackupMode::Sync {
        timeout: Duration::from_secs(1),
    };
    let (sync_manager, sync_id) = runtime.block_on(manager_with(Arc::clone(&store), sync));

    // The baseline stores what the manager would back up: the session's envelope.
    let bytes = runtime.block_on(async {
        let session = async_manager.load(Some(id.as_str())).await.unwrap();
        let bytes = envelope::encode(session.session());
        async_manager.commit(session).await.unwrap();
        Arc::new(bytes)
    });
    println!("stored session: {} bytes", bytes.len());
    let cache: moka::sync::Cache<Arc<str>, Arc<Vec<u8>>> =
        moka::sync::Cache::builder().max_capacity(1 << 30).build();
    let cache_key: Arc<str> = Arc::from(id.storage_id());
    cache.insert(Arc::clone(&cache_key), Arc::clone(&bytes));

    let mut local = c.benchmark_group("local");
    local.bench_function("bare_moka_get_insert", |b| {
        b.iter_custom(|iters| {
            runtime.block_on(async {
                let started = Instant::now();
                for _ in 0..iters {
                    let value = cache.get(&cache_key).unwrap();
                    cache.insert(Arc::clone(&cache_key), black_box(value));
                }
                started.elapsed()
            })
        })
    });
    local.bench_function("load_commit_unchanged", |b| {
        b.iter_custom(|iters| {
            runtime.block_on(async {
                let started = Instant::now();
                for _ in 0..iters {
                    let session = async_manager.load(Some(id.as_str())).await.unwrap();
                    black_box(session.get::<u64>("visits").unwrap());
                    black_box(async_manager.commit(session).await.unwrap());
                }
                started.elapsed()
            })
        })
    });
    local.bench_function("load_commit_changed_async", |b| {
        b.iter_custom(|iters| {
            runtime.block_on(async {
                let started = Instant::now();
                for i in 0..iters {
                    let mut session = async_manager.load(Some(id.as_str())).await.unwrap();
                    session.insert("visits", &i).unwrap();
                    black_box(async_manager.commit(session).await.unwrap());
                }
                started.elapsed()
            })
        })
    });
    local.finish();

    let mut remote = c.benchmark_group("memcached");
    let key = KeyPrefix::new("bench:")
        .unwrap()
        .key(KeySpace::Session, &id);
    let node = tandem::NodeId::new("n1").unwrap();
    // The non-sticky baseline reads this key: stored here so that a filtered run
    // (`nonsticky` alone) finds it too.
    runtime
        .block_on(store.set(&node, &key, &bytes, Ttl::Never))
        .unwrap();
    remote.bench_function("raw_set", |b| {
        b.iter_custom(|iters| {
            runtime.block_on(async {
                let started = Instant::now();
                for _ in 0..iters {
                    store.set(&node, &key, &bytes, Ttl::Never).await.unwrap();
                }
                started.elapsed()
            })
        })
    });
    remote.bench_function("load_commit_changed_sync", |b| {
        b.iter_custom(|iters| {
            runtime.block_on(async {
                let started = Instant::now();
                for i in 0..iters {
                    let mut session = sync_manager.load(Some(sync_id.as_str())).await.unwrap();
                    session.insert("visits", &i).unwrap();
                    black_box(sync_manager.commit(session).await.unwrap());
                }
                started.elapsed()
            })
        })
    });
    remote.finish();

    let non_sticky = SessionManager::<SpeedyCodec>::builder(Arc::clone(&store))
        .mode(Mode::NonSticky)
        .build()
        .unwrap();
    let ns_id = runtime.block_on(async {
        let mut session = non_sticky.load(None).await.unwrap();
        fill(&mut session);
        let CookieUpdate::Set { id, .. } = non_sticky.commit(session).await.unwrap().cookie else {
            unreachable!("a new session sets its cookie")
        };
        id
    });
    let mut group = c.benchmark_group("nonsticky");
    group.bench_function("raw_get_set", |b| {
        b.iter_custom(|iters| {
            runtime.block_on(async {
                let started = Instant::now();
                for _ in 0..iters {
                    let item = store.get(&node, &key).await.unwrap().unwrap();
                    store
                        .set(&node, &key, &item.value, Ttl::Never)
                        .await
                        .unwrap();
                }
                started.elapsed()
            })
        })
    });
    group.bench_function("load_commit_changed", |b| {
        b.iter_custom(|iters| {
            runtime.block_on(async {
                let started = Instant::now();
                for i in 0..iters {
                    let mut session = non_sticky.load(Some(ns_id.as_str())).await.unwrap();
                    session.insert("visits", &i).unwrap();
                    black_box(non_sticky.commit(session).await.unwrap());
                }
                started.elapsed()
            })
        })
    });
    group.bench_function("load_commit_unchanged", |b| {
        b.iter_custom(|iters| {
            runtime.block_on(async {
                let started = Instant::now();
                for _ in 0..iters {
                    let session = non_sticky.load(Some(ns_id.as_str())).await.unwrap();
                    black_box(session.get::<u64>("visits").unwrap());
                    black_box(non_sticky.commit(session).await.unwrap());
                }
                started.elapsed()
            })
        })
    });
    group.finish();

    threads(c, &runtime, &store);
    residents(c, &runtime, &store);

    // memcached operations on the request path per request kind, counted by the store.
    let memcached_store = Arc::clone(&typed_store);
    let operations = || {
        memcached_store
            .health()
            .iter()
            .map(|n| n.operations)
            .sum::<u64>()
    };
    runtime.block_on(async {
        tokio::time::sleep(Duration::from_millis(200)).await; // background work settles
        for (kind, change) in [("read-only", false), ("changed", true)] {
            let before = operations();
            let mut session = non_sticky.load(Some(ns_id.as_str())).await.unwrap();
            if change {
                session.insert("visits", &u64::MAX).unwrap();
            }
            non_sticky.commit(session).await.unwrap();
            println!(
                "non-sticky {kind} request: {} memcached round trips on the request path",
                operations() - before
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let before = operations();
        let session = async_manager.load(Some(id.as_str())).await.unwrap();
        async_manager.commit(session).await.unwrap();
        println!(
            "sticky read-only request: {} memcached round trips",
            operations() - before
        );
    });
    let stats = async_manager.stats();
    println!(
        "async manager: {} commits, {} backups written, {} coalesced",
        stats.commits, stats.backups_written, stats.backups_coalesced
    );
}

/// Reads of 1,000 held sessions from one and from two threads at once.
fn threads(c: &mut Criterion, runtime: &tokio::runtime::Runtime, store: &Arc<dyn RemoteStore>) {
    const SESSIONS: usize = 1_000;
    let manager = SessionManager::<SpeedyCodec>::builder(Arc::clone(store))
        .build()
        .unwrap();
    let ids: Vec<String> = runtime.block_on(async {
        let mut ids = Vec::with_capacity(SESSIONS);
        for _ in 0..SESSIONS {
            let mut session = manager.load(None).await.unwrap();
            fill(&mut session);
            let CookieUpdate::Set { id, .. } = manager.commit(session).await.unwrap().cookie else {
                unreachable!("a new session sets its cookie")
            };
            ids.push(id.as_str().to_owned());
        }
        ids
    });
    let cache: moka::sync::Cache<Arc<str>, Arc<Vec<u8>>> =
        moka::sync::Cache::builder().max_capacity(1 << 30).build();
    for id in &ids {
        cache.insert(Arc::from(id.as_str()), Arc::new(vec![0; 500]));
    }

    // Runs `iters` reads split over `threads` threads, each thread walking the ids
    // from its own starting point; returns the wall time.
    let split = |iters: u64, threads: usize, read: &(dyn Fn(&str) + Sync)| {
        let per_thread = iters.div_ceil(threads as u64);
        let started = Instant::now();
        std::thread::scope(|scope| {
            for thread in 0..threads {
                let ids = &ids;
                scope.spawn(move || {
                    let mut next = thread * SESSIONS / threads;
                    for _ in 0..per_thread {
                        read(&ids[next]);
                        next = (next + 1) % SESSIONS;
                    }
                });
            }
        });
        started.elapsed()
    };
    let mut group = c.benchmark_group("threads");
    for threads in [1, 2] {
        group.bench_function(format!("bare_moka_get_{threads}"), |b| {
            b.iter_custom(|iters| {
                split(iters, threads, &|id| {
                    black_box(cache.get(id));
                })
            })
        });
        group.bench_function(format!("load_commit_unchanged_{threads}"), |b| {
            b.iter_custom(|iters| {
                split(iters, threads, &|id| {
                    runtime.block_on(async {
                        let session = manager.load(Some(id)).await.unwrap();
                        black_box(manager.commit(session).await.unwrap());
                    })
                })
            })
        });
    }
    group.finish();
}

/// Reads of one of 1,000 or 100,000 held sessions, in a shuffled order.
fn residents(c: &mut Criterion, runtime: &tokio::runtime::Runtime, store: &Arc<dyn RemoteStore>) {
    let mut group = c.benchmark_group("residents");
    for sessions in [1_000usize, 100_000] {
        let manager = SessionManager::<SpeedyCodec>::builder(Arc::clone(store))
            .build()
            .unwrap();
        let mut ids: Vec<String> = runtime.block_on(async {
            let mut ids = Vec::with_capacity(sessions);
            for _ in 0..sessions {
                let mut session = manager.load(None).await.unwrap();
                fill(&mut session);
                let CookieUpdate::Set { id, .. } = manager.commit(session).await.unwrap().cookie
                else {
                    unreachable!("a new session sets its cookie")
                };
                ids.push(id.as_str().to_owned());
            }
            ids
        });
        // A fixed shuffle (xorshift, Fisher-Yates): every run reads in the same order.
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        for i in (1..ids.len()).rev() {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let j = usize::try_from(state % (i as u64 + 1)).unwrap();
            ids.swap(i, j);
        }
        let cache: moka::sync::Cache<Arc<str>, Arc<Vec<u8>>> =
            moka::sync::Cache::builder().max_capacity(1 << 40).build();
        let map: std::sync::RwLock<std::collections::HashMap<Arc<str>, Arc<Vec<u8>>>> =
            std::sync::RwLock::default();
        for id in &ids {
            let (key, value) = (Arc::<str>::from(id.as_str()), Arc::new(vec![0; 500]));
            cache.insert(Arc::clone(&key), Arc::clone(&value));
            map.write().unwrap().insert(key, value);
        }
        cache.run_pending_tasks();
        let walk = |iters: u64, read: &dyn Fn(&str)| {
            let started = Instant::now();
            for (_, id) in (0..iters).zip(ids.iter().cycle()) {
                read(id);
            }
            started.elapsed()
        };
        group.bench_function(format!("hashmap_get_{sessions}"), |b| {
            b.iter_custom(|iters| {
                walk(iters, &|id| {
                    black_box(map.read().unwrap().get(id).cloned());
                })
            })
        });
        group.bench_function(format!("bare_moka_get_{sessions}"), |b| {
            b.iter_custom(|iters| {
                walk(iters, &|id| {
                    black_box(cache.get(id));
                })
            })
        });
        group.bench_function(format!("load_commit_unchanged_{sessions}"), |b| {
            b.iter_custom(|iters| {
                walk(iters, &|id| {
                    runtime.block_on(async {
                        let session = manager.load(Some(id)).await.unwrap();
                        black_box(manager.commit(session).await.unwrap());
                    })
                })
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default();
    targets = bench
}
criterion_main!(benches);
