//! The non-sticky engine's background work beside the copy writers: the sweep that
//! repairs backup copies, retries session ends and publishes the counters, and the
//! flush at shutdown.

use std::sync::Arc;
use std::time::Duration;

use tandem_core::Codec;

use super::Engine;
use crate::outcome::ShutdownReport;

impl<C: Codec> Engine<C> {
    /// Waits for background work to finish, then writes the session ends and backup
    /// copy repairs still waiting, all within `deadline`. Nothing else is pending: a
    /// commit returns after the primary copy is written.
    pub(crate) async fn flush(&self, deadline: Duration) -> ShutdownReport {
        let common = &self.common;
        let started = common.now();
        let written_before = common.counters.snapshot().backups_written;
        // Background copies get at most half of the deadline, as sticky mode's queue.
        while common.in_flight.count() > 0 && common.since(started) < deadline / 2 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let ends_unwritten = common
            .flush_ends(deadline.saturating_sub(common.since(started)))
            .await;
        let repairs_left = self
            .flush_repairs(deadline.saturating_sub(common.since(started)))
            .await;
        let written = common.counters.snapshot().backups_written - written_before;
        if ends_unwritten > 0 || repairs_left > 0 {
            tracing::warn!(
                ends_unwritten,
                repairs_left,
                "shutdown: some remote writes could not be done in time"
            );
        } else {
            tracing::info!(written, "shutdown: every pending backup written");
        }
        ShutdownReport {
            written: usize::try_from(written).unwrap_or(usize::MAX),
            unsaved: 0,
            ends_unwritten,
        }
    }
}

/// Starts the task that, every retry interval, copies failed backup copies again from
/// their primaries, retries session ends and publishes the metrics. It holds the
/// engine only weakly and ends when the manager is dropped.
pub(super) fn spawn_sweep<C: Codec>(engine: &Arc<Engine<C>>, runtime: &tokio::runtime::Handle) {
    let weak = Arc::downgrade(engine);
    let period = engine.common.config.retry_interval;
    runtime.spawn(async move {
        let mut sweep = tokio::time::interval(period);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            sweep.tick().await;
            let Some(engine) = weak.upgrade() else { return };
            engine.repair_copies();
            engine.backup_refreshes.sweep(engine.common.now());
            engine.common.retry_ends();
            engine
                .common
                .export_metrics(0, engine.common.in_flight.count());
        }
    });
}
