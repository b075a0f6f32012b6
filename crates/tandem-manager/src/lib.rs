//! The session manager: the request lifecycle over the local and remote tiers.
//!
//! A request calls [`SessionManager::load`] with the id its client sent (if any),
//! uses the [`RequestSession`] it gets, and ends with [`SessionManager::commit`],
//! which says what the client's cookie must become ([`CookieUpdate`]).
//!
//! **Sticky mode** (`sticky/`): the local tier, a `moka`
//! cache, holds the primary copy of each session; a request for a locally held session
//! performs no network operation at all. A commit that changed the session (or
//! created it, or changed its id) is backed up to the session's node in the remote
//! tier, asynchronously by default, with a conditional write so that one server owns
//! a session at a time; unchanged sessions only get their remote expiry extended, and
//! only now and then (a `touch`, not a rewrite). The remote copy is what another
//! server loads when this one is gone, and what this one reloads after a session was
//! swapped out for space.
//!
//! Expiry: each session expires locally after its own max inactive interval without a
//! request (sliding). Its remote copy lives a little longer
//! ([`keepalive_slack`]) so that it never expires while the session is in use, and is
//! ended (a tombstone) when the local copy expires. A session whose server died
//! therefore stays loadable from the remote tier for at most its interval plus that
//! slack after its last request.
//!
//! Ids and nodes: a session id names its node. When that node is down, the next
//! request moves the session to a live node (a new id, told to the client through the
//! commit's [`CookieUpdate`]). Failover nodes are used only while every regular node
//! is down. An id whose route names another server is a takeover: the local copy is
//! trusted only if the remote copy is still the one this server last wrote or read.
//!
//! **Non-sticky mode** (`nonsticky/`): the remote tier is the source of truth.
//!
//! **Ended ids** (`common/ends`), both modes: an id that was invalidated, cycled, expired or
//! moved off a down node ends for good, everywhere, through tombstones written before
//! the commit returns (and retried while their node fails).
//!
//! Layout: this file is the public API; [`Engine`](engine) picks the mode's engine
//! once, at build, and is the only place that matches on it. Each engine owns its own
//! state (`sticky/`: the local tier, the backup queue, the peer feed; `nonsticky/`:
//! the transit copies, the remote locks, the backup-copy repairs); what both share is
//! in `common/` (store and node ring, configuration, stored bytes, merge checks, TTLs,
//! ended ids, counters), which knows neither.
//!
//! Time: every time the manager reads comes from one [`Clock`](tandem_core::Clock)
//! ([`ManagerBuilder::clock`]); tests run it on tokio's paused time with
//! [`TokioClock`].
//!
//! What it is not: a web layer (cookies, signing and HTTP are `tandem-tower`'s), a
//! remote store (it drives any [`RemoteStore`](tandem_core::RemoteStore):
//! `tandem-memcached`, or the in-process `MemoryStore`), or a codec (values are
//! encoded by the codec type it is generic over).

mod clock;
mod common;
mod config;
mod engine;
mod error;
mod nonsticky;
mod outcome;
mod request;
mod sticky;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tandem_core::{Codec, NodeStatus, RemoteStore, layers::LayerStats};

pub use clock::TokioClock;
pub use common::stats::{HistogramSnapshot, Stats};
pub use common::ttl::keepalive_slack;
pub use config::{
    BackupMode, BackupRefresh, Concurrency, ConfigError, LockScope, LockTimeoutPolicy,
    ManagerBuilder, Mode, ReplicatedCopies,
};
pub use error::{CommitError, LoadError, WriteFailure};
pub use nonsticky::AUTO_LOCK_LEARN_AFTER;
pub use outcome::{BackupStatus, CommitOutcome, CookieUpdate, RequestInfo, ShutdownReport};
pub use request::RequestSession;

use common::Common;
use common::stats::Counters;
use config::ManagerConfig;
use engine::Engine;
use request::Attached;

/// A fault-tolerant two-tier session manager. Cheap to clone: clones share one
/// manager.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// use std::sync::Arc;
/// use tandem_core::{MemoryStore, NodeId};
/// use tandem_manager::{CookieUpdate, SessionManager};
/// # use tandem_core::{Codec, CodecError, CodecId, Decodes, Encodes};
/// # struct Text;
/// # impl Codec for Text { const ID: CodecId = CodecId::new(250); const NAME: &'static str = "text"; }
/// # impl Encodes<str> for Text { fn encode(v: &str) -> Result<Vec<u8>, CodecError> { Ok(v.as_bytes().to_vec()) } }
/// # impl Decodes<String> for Text { fn decode(b: &[u8]) -> Result<String, CodecError> { String::from_utf8(b.to_vec()).map_err(|e| CodecError::decode(Self::ID, e)) } }
///
/// let store = Arc::new(MemoryStore::new([NodeId::new("n1").unwrap()]));
/// let manager = SessionManager::<Text>::builder(store).build().unwrap();
///
/// // First request: no cookie. Storing something creates the session.
/// let mut session = manager.load(None).await.unwrap();
/// session.insert("user", "ann").unwrap();
/// let outcome = manager.commit(session).await.unwrap();
/// let CookieUpdate::Set { id, .. } = outcome.cookie else { panic!("a new session") };
///
/// // Next request: the cookie's id finds the session in the local tier.
/// let session = manager.load(Some(id.as_str())).await.unwrap();
/// assert_eq!(session.get::<String>("user").unwrap().as_deref(), Some("ann"));
/// assert_eq!(manager.commit(session).await.unwrap().cookie, CookieUpdate::Keep);
/// # });
/// ```
pub struct SessionManager<C> {
    engine: Engine<C>,
}

impl<C> Clone for SessionManager<C> {
    fn clone(&self) -> Self {
        SessionManager {
            engine: self.engine.clone(),
        }
    }
}

impl<C: Codec> ManagerBuilder<C> {
    /// Builds the manager and starts its background tasks on the current tokio
    /// runtime.
    pub fn build(self) -> Result<SessionManager<C>, ConfigError> {
        let (store, config, runtime) = self.validated()?;
        Ok(SessionManager::start(store, config, &runtime))
    }
}

impl<C: Codec> SessionManager<C> {
    /// A builder for a manager over `store`.
    pub fn builder(store: Arc<dyn RemoteStore>) -> ManagerBuilder<C> {
        ManagerBuilder::new(store)
    }

    fn start(
        store: Arc<dyn RemoteStore>,
        config: ManagerConfig,
        runtime: &tokio::runtime::Handle,
    ) -> SessionManager<C> {
        Counters::describe();
        let mode = config.mode;
        let common = Arc::new(Common::new(store, config));
        let engine = match mode {
            Mode::Sticky => Engine::Sticky(sticky::Engine::start(common, runtime)),
            Mode::NonSticky => Engine::NonSticky(nonsticky::Engine::start(common, runtime)),
        };
        SessionManager { engine }
    }

    /// Loads the session for a request. `incoming` is the id the client sent (the
    /// cookie value), if any.
    ///
    /// A malformed id, an id naming no configured node, or an id no tier knows gives a
    /// new, empty session (created for real only if the request stores something).
    /// A locally held session is served without any network operation.
    pub async fn load(&self, incoming: Option<&str>) -> Result<RequestSession<C>, LoadError> {
        self.load_for(incoming, None).await
    }

    /// [`load`](Self::load) with what is known about the request, which
    /// [`LockScope::Auto`] and [`LockScope::Paths`] decide on in non-sticky mode.
    ///
    /// In non-sticky mode a load reads the session from its primary node (falling back
    /// to the backup copy), unless another request of the session is in flight in this
    /// process, and fails with [`LoadError::Unavailable`] when no node holding it can be
    /// reached.
    pub async fn load_for(
        &self,
        incoming: Option<&str>,
        request: Option<&RequestInfo<'_>>,
    ) -> Result<RequestSession<C>, LoadError> {
        let common = self.engine.common();
        Counters::add(&common.counters.loads);
        if common.aborted.load(Ordering::Acquire) {
            return Err(LoadError::Unavailable);
        }
        self.engine.load(incoming, request).await
    }

    /// [`commit`](Self::commit) without a future, for the commit that has nothing to
    /// wait for: a session held locally in sticky mode that the request left
    /// unchanged, whose remote copy needs no touch yet. That is most requests of a
    /// read-mostly site, and a web layer can then finish the response without
    /// allocating the commit's future. Anything else comes back as `Err(request)`,
    /// unchanged: pass it to [`commit`](Self::commit).
    ///
    /// ```
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// use std::sync::Arc;
    /// use tandem_core::{MemoryStore, NodeId};
    /// use tandem_manager::{CookieUpdate, SessionManager};
    /// # use tandem_core::{Codec, CodecId, Decodes, Encodes, CodecError};
    /// # struct Text;
    /// # impl Codec for Text { const ID: CodecId = CodecId::new(250); const NAME: &'static str = "text"; }
    /// # impl Encodes<str> for Text { fn encode(v: &str) -> Result<Vec<u8>, CodecError> { Ok(v.as_bytes().to_vec()) } }
    /// # impl Decodes<String> for Text { fn decode(b: &[u8]) -> Result<String, CodecError> { String::from_utf8(b.to_vec()).map_err(|e| CodecError::decode(Self::ID, e)) } }
    ///
    /// let store = Arc::new(MemoryStore::new([NodeId::new("n1")?]));
    /// let manager = SessionManager::<Text>::builder(store).build()?;
    /// let mut session = manager.load(None).await?;
    /// session.insert("user", "ann")?;
    /// // A new session has to be stored: that commit cannot be done without waiting.
    /// let session = manager.commit_now(session).unwrap_err();
    /// let CookieUpdate::Set { id, .. } = manager.commit(session).await?.cookie else {
    ///     unreachable!()
    /// };
    /// // A request that only reads it can.
    /// let session = manager.load(Some(id.as_str())).await?;
    /// let outcome = manager.commit_now(session).ok().expect("nothing to wait for");
    /// assert_eq!(outcome.cookie, CookieUpdate::Keep);
    /// # Ok(())
    /// # }
    /// ```
    #[expect(
        clippy::result_large_err,
        reason = "the request is handed back as it came, for `commit`; boxing it would add the allocation this avoids"
    )]
    pub fn commit_now(
        &self,
        request: RequestSession<C>,
    ) -> Result<CommitOutcome, RequestSession<C>> {
        match &self.engine {
            Engine::Sticky(engine) => engine.commit_now(request),
            Engine::NonSticky(_) => Err(request),
        }
    }

    /// Ends a request: applies its changes to the session (or invalidates it, or
    /// gives it a new id) and says what the client's cookie must become.
    ///
    /// A failed backup never fails the commit: it is counted, logged and retried.
    #[expect(
        clippy::manual_async_fn,
        reason = "an async fn would keep the request twice in its state (see below)"
    )]
    pub fn commit(
        &self,
        mut request: RequestSession<C>,
    ) -> impl Future<Output = Result<CommitOutcome, CommitError>> + Send + '_ {
        // An async block rather than an `async fn`: an async fn keeps its by-value
        // argument twice in its state (the argument and the local it is moved to),
        // which would make every request's future larger by a whole `RequestSession`.
        async move {
            let common = self.engine.common();
            Counters::add(&common.counters.commits);
            let modified = request.session.is_modified() || request.cycle_id;
            // Only changed commits are timed: an unchanged one reads no clock for it.
            let started = modified.then(|| common.now());
            // Held to the end of the commit, so that the next request of the session
            // sees this one's result.
            let _lock = request.lock_guard.take();
            // The engine's commit, matched here rather than in a function of the
            // engine's: an async fn taking the request by value would hold it a second
            // time in this future, doubling its size.
            let outcome = match (
                &self.engine,
                std::mem::replace(&mut request.attached, Attached::New),
            ) {
                // Boxed but for the common case, as in `load_for`.
                (Engine::Sticky(engine), Attached::Local(entry)) => {
                    engine.commit_existing(entry, &request).await
                }
                (Engine::Sticky(engine), Attached::New) => {
                    Box::pin(engine.commit_new(request)).await
                }
                (Engine::NonSticky(engine), Attached::New) => {
                    Box::pin(engine.commit_new(request)).await
                }
                (Engine::NonSticky(engine), Attached::Transit(transit)) => {
                    Box::pin(engine.commit(transit, request)).await
                }
                // A request loaded by a manager of the other mode: not a session of
                // this one.
                (_, Attached::Local(_) | Attached::Transit(_)) => Err(CommitError::SessionEnded),
            };
            if let Some(started) = started {
                common
                    .counters
                    .histograms
                    .changed_commit(common.since(started));
            }
            if common.aborted.load(Ordering::Acquire) {
                // A dead process answers nothing: no request it was serving succeeds.
                return Err(CommitError::Unavailable {
                    source: WriteFailure::Aborted,
                });
            }
            outcome
        }
    }
}

impl<C: Codec> SessionManager<C> {
    /// Stops taking backups asynchronously and writes every pending backup, waiting at
    /// most `deadline`. Commits after this call write their backups synchronously.
    ///
    /// Call it while the server still takes requests, and stop accepting only when it
    /// returns: once a balancer sends this server's clients elsewhere, the other
    /// server loads their sessions from the remote tier, which must by then hold the
    /// newest state (the fault matrix's rolling restart does exactly this; stopping
    /// first loses the changes whose backups were still being written).
    pub async fn shutdown(&self, deadline: Duration) -> ShutdownReport {
        self.engine.common().closing.store(true, Ordering::Release);
        self.engine.flush(deadline).await
    }

    /// Stops every background write at once, without flushing, and fails every load
    /// and commit from then on (commits in progress included): what the death of the
    /// process does. For fault-injection tests of the layers above (a crash loses
    /// exactly what this loses); use [`shutdown`](Self::shutdown) to stop a manager.
    pub fn abort(&self) {
        self.engine.common().aborted.store(true, Ordering::Release);
    }

    /// The clock the manager reads time from (see [`ManagerBuilder::clock`]): what a
    /// web layer reads too, so that its cookie renewals follow the same time.
    pub fn clock(&self) -> &Arc<dyn tandem_core::Clock> {
        &self.engine.common().clock
    }

    /// The mode the manager runs in.
    pub fn mode(&self) -> Mode {
        self.engine.common().config.mode
    }

    /// Whether [`load_for`](Self::load_for) looks at the request's method and path:
    /// only in non-sticky mode under [`Concurrency::Lock`] with [`LockScope::Auto`] or
    /// [`LockScope::Paths`]. Otherwise a web layer need not keep them for the load.
    pub fn uses_request_info(&self) -> bool {
        let config = &self.engine.common().config;
        config.mode == Mode::NonSticky && config.locks_per_pattern()
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> Stats {
        let common = self.engine.common();
        let mut stats = common.counters.snapshot();
        stats.connection_waits = common
            .store
            .node_status()
            .iter()
            .map(|node| node.connection_waits)
            .sum();
        stats
    }

    /// Publishes the counters' totals and the gauges (local sessions, pending backups,
    /// nodes up) to the `metrics` facade now. The manager also does this on every
    /// sweep (its retry interval), so an exporter is at most that much behind.
    pub fn export_metrics(&self) {
        self.engine.export_metrics();
    }

    /// Every node of the remote tier with its health as the store reports it, and
    /// whether the manager treats it as a failover node.
    pub fn nodes(&self) -> Vec<(NodeStatus, bool)> {
        let common = self.engine.common();
        common
            .store
            .node_status()
            .into_iter()
            .map(|status| {
                let failover = common.failover.contains(&status.id);
                (status, failover)
            })
            .collect()
    }

    /// What the configured stored-bytes layers did so far (sealed blobs, bytes in and
    /// out, hence the compression ratio; rejected blobs).
    pub fn layer_stats(&self) -> LayerStats {
        self.engine.common().config.layer.stats()
    }

    /// Number of sessions held in the local tier (approximate while requests run).
    pub fn local_sessions(&self) -> u64 {
        self.engine.local_sessions()
    }

    /// Applies the local tier's pending housekeeping now (expiry, eviction); it
    /// otherwise runs every retry interval. Useful in tests and before measurements.
    pub async fn run_pending_tasks(&self) {
        self.engine.run_pending_tasks();
    }

    /// Background work not finished yet: sessions whose newest state is not known to be
    /// stored remotely (queued, being written, or waiting for a retry), plus remote
    /// writes, touches and deletes queued or running. Zero means everything committed
    /// so far has reached the remote tier, as far as it could.
    pub fn pending_backups(&self) -> usize {
        self.engine.pending_backups()
    }

    /// Tombstones and deletion markers of ended session ids (logouts, id changes,
    /// moves off a down node, expiries) that wait for their node to answer again:
    /// retried every retry interval, and at [`shutdown`](Self::shutdown). While one
    /// waits, this server answers its id as ended; another server that reads the
    /// copy once the node is back, before the retry lands, does not know yet.
    pub fn pending_ends(&self) -> usize {
        self.engine.common().ends.pending()
    }

    /// Sticky mode: sessions whose newest state is not known to be in the remote tier
    /// (changed since their last successful backup). What a crash of this process
    /// would lose right now. Always zero in non-sticky mode, where a commit returns
    /// after the primary copy is written.
    pub fn unsaved_sessions(&self) -> usize {
        self.engine.unsaved_sessions()
    }
}

#[cfg(test)]
mod testing;

#[cfg(test)]
impl<C: Codec> SessionManager<C> {
    /// The sticky engine, for white-box tests.
    fn sticky(&self) -> &Arc<sticky::Engine<C>> {
        match &self.engine {
            Engine::Sticky(engine) => engine,
            Engine::NonSticky(_) => panic!("a sticky manager"),
        }
    }

    /// The non-sticky engine, for white-box tests.
    fn nonsticky(&self) -> &Arc<nonsticky::Engine<C>> {
        match &self.engine {
            Engine::NonSticky(engine) => engine,
            Engine::Sticky(_) => panic!("a non-sticky manager"),
        }
    }
}
