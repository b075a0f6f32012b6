//! The engine of a manager's mode, chosen once at build. What differs by mode is
//! matched here (and, to keep the commit's future small, in `SessionManager::commit`). Static dispatch: an enum of the two engines, no trait objects on the
//! request path.

use std::sync::Arc;
use std::time::Duration;

use tandem_core::Codec;

use crate::common::Common;
use crate::error::LoadError;
use crate::nonsticky;
use crate::outcome::{RequestInfo, ShutdownReport};
use crate::request::RequestSession;
use crate::sticky;

/// A manager's engine: sticky (local primary, remote backup) or non-sticky (remote
/// primary and backup copies).
pub(crate) enum Engine<C> {
    Sticky(Arc<sticky::Engine<C>>),
    NonSticky(Arc<nonsticky::Engine<C>>),
}

impl<C> Clone for Engine<C> {
    fn clone(&self) -> Self {
        match self {
            Engine::Sticky(engine) => Engine::Sticky(Arc::clone(engine)),
            Engine::NonSticky(engine) => Engine::NonSticky(Arc::clone(engine)),
        }
    }
}

impl<C: Codec> Engine<C> {
    /// What both modes share.
    pub(crate) fn common(&self) -> &Arc<Common> {
        match self {
            Engine::Sticky(engine) => &engine.common,
            Engine::NonSticky(engine) => &engine.common,
        }
    }

    pub(crate) async fn load(
        &self,
        incoming: Option<&str>,
        request: Option<&RequestInfo<'_>>,
    ) -> Result<RequestSession<C>, LoadError> {
        match self {
            Engine::Sticky(engine) => engine.load(incoming).await,
            // Boxed: its state machine (remote reads, locks) is large, and a future
            // holding it inline would make every request's future that large.
            Engine::NonSticky(engine) => Box::pin(engine.load(incoming, request)).await,
        }
    }

    /// Writes what is pending, within `deadline` (see `SessionManager::shutdown`).
    pub(crate) async fn flush(&self, deadline: Duration) -> ShutdownReport {
        match self {
            Engine::Sticky(engine) => engine.flush(deadline).await,
            Engine::NonSticky(engine) => engine.flush(deadline).await,
        }
    }

    pub(crate) fn local_sessions(&self) -> u64 {
        match self {
            Engine::Sticky(engine) => engine.local.entry_count(),
            Engine::NonSticky(_) => 0,
        }
    }

    pub(crate) fn run_pending_tasks(&self) {
        if let Engine::Sticky(engine) = self {
            engine.local.run_pending_tasks();
        }
    }

    pub(crate) fn pending_backups(&self) -> usize {
        match self {
            Engine::Sticky(engine) => engine.pending_backups(),
            Engine::NonSticky(engine) => engine.common.in_flight.count(),
        }
    }

    pub(crate) fn unsaved_sessions(&self) -> usize {
        match self {
            Engine::Sticky(engine) => engine.backups.dirty_count(),
            Engine::NonSticky(_) => 0,
        }
    }

    pub(crate) fn export_metrics(&self) {
        self.common()
            .export_metrics(self.local_sessions(), self.pending_backups());
    }
}
