//! Test-only: the session manager's behaviour suite, written once and run against
//! every [`RemoteStore`](tandem_core::RemoteStore).
//!
//! Each case drives one or more `SessionManager`s (standing in for app servers) over
//! the store a [`StoreFixture`] provides, through nothing but the manager's public API
//! and the store trait, in both modes:
//!
//! - **sticky** ([`cases::sticky`]): backups (changed sessions written once,
//!   unchanged ones not rewritten, coalescing while a write is pending, synchronous
//!   backups), graceful shutdown, invalidation and id changes ending the old copy,
//!   concurrent requests under lock and merge, sliding expiry kept alive by touches,
//!   local expiry, swapping out for space, takeover by another server, relocation off
//!   an unavailable node, failover nodes, every node down;
//! - **non-sticky** ([`cases::nonsticky`]): two servers seeing each other's changes,
//!   remote locks, attribute-level merge with conflicts only on the same attribute, a
//!   primary lost mid-run, an unavailable primary or every node unavailable.
//!
//! The cases are the functions of [`cases`]; each documents what it asserts.
//!
//! What it is not: a test of the store's own contract (that is
//! `tandem-store-conformance`, which every store passes first), of store-specific
//! behaviour (memcached's pipelined batches, the operations its health counts, the
//! items a killed or restarted process still holds stay in the memcached and facade
//! tests), or of the manager's internals (the white-box unit tests inside
//! `tandem-manager`).
//!
//! # Running it for a new backend
//!
//! The fixture is the conformance suite's [`StoreFixture`] (re-exported here), so a
//! backend writes **one** fixture and runs both suites with it:
//! [`start`](StoreFixture::start) gives a fresh, empty store over `nodes` nodes (up
//! to 3 here), and the fault methods make a node unavailable and available again. A
//! fixture that cannot inject faults leaves them out: the failover cases then stop at
//! the fault, each with a note on standard error that names it. [`behaviour_tests!`]
//! generates one `#[test]` per case, in a module per mode (`sticky::…`,
//! `nonsticky::…`), named after its case:
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//!
//! use tandem_behaviour::{FaultsUnsupported, StoreFixture};
//! use tandem_core::{MemoryStore, NodeId, RemoteStore};
//!
//! struct Memory(Arc<MemoryStore>);
//!
//! impl StoreFixture for Memory {
//!     async fn start(nodes: usize) -> Memory {
//!         let ids = (1..=nodes).map(|n| NodeId::new(&format!("n{n}")).unwrap());
//!         Memory(Arc::new(MemoryStore::new(ids)))
//!     }
//!
//!     fn store(&self) -> Arc<dyn RemoteStore> {
//!         self.0.clone()
//!     }
//!
//!     fn operation_timeout(&self) -> Duration {
//!         Duration::ZERO // nothing to wait for in process
//!     }
//!
//!     async fn make_unavailable(&self, node: &NodeId) -> Result<(), FaultsUnsupported> {
//!         self.0.set_node_up(node, false);
//!         Ok(())
//!     }
//!
//!     async fn make_available(&self, node: &NodeId) -> Result<(), FaultsUnsupported> {
//!         self.0.set_node_up(node, true);
//!         Ok(())
//!     }
//! }
//!
//! // In the backend's test files: `tests/behaviour.rs`, one #[test] per case ...
//! tandem_behaviour::behaviour_tests!(Memory);
//! // ... and `tests/conformance.rs`, with the same fixture.
//! tandem_store_conformance::store_conformance_tests!(Memory);
//!
//! # fn main() {
//! // A single case can also be run by hand:
//! use tandem_behaviour::cases::sticky;
//! tandem_behaviour::run(sticky::invalidation_and_cycle_id_end_the_old_remote_copy::<Memory>);
//! # }
//! ```
//!
//! Then `cargo test -p <backend crate> --test behaviour`. The suite runs in this
//! crate's own tests against [`MemoryStore`](tandem_core::MemoryStore) (with
//! `tandem_store_conformance::MemoryFixture`), and in `tandem-memcached`'s
//! (`tests/behaviour.rs`, the fixture its conformance test uses) against real
//! memcached processes, where an unavailable node is a hung one.
//!
//! # Timing
//!
//! Every case runs on its own multi-threaded Tokio runtime (two workers) and must end
//! within [`CASE_LIMIT`]. Waits poll for a state (a counter, a node marked down, no
//! backup pending) rather than sleep, and are bounded by the fixture's
//! [operation timeout](StoreFixture::operation_timeout) and
//! [recovery time](StoreFixture::recovery_time) plus several seconds of slack. No
//! case asserts that something took less than a few seconds: where the cost of a
//! hung node matters, the cases look at the operations the store timed out (which
//! ran at the same time, which a later request waited for), not at the clock. The
//! one case that must let time pass (sliding expiry kept alive by touches) takes
//! about seven seconds.

pub mod cases;
mod recorder;
mod support;

use std::future::Future;

pub use tandem_store_conformance::{CASE_LIMIT, FaultsUnsupported, StoreFixture};

/// Runs one case on a fresh multi-threaded runtime (two workers), failing it if it
/// takes longer than [`CASE_LIMIT`]: the conformance suite's runner. What
/// [`behaviour_tests!`] calls.
///
/// # Panics
///
/// When the case fails or hangs: that is how a test fails.
pub fn run<Fut: Future<Output = ()>>(case: impl FnOnce() -> Fut) {
    tandem_store_conformance::run(case);
}

/// Generates one `#[test]` per behaviour case for the [`StoreFixture`] type given,
/// in a module per mode (`sticky`, `nonsticky`, like [`cases`]), each named after its
/// case and running it with [`run`]: `behaviour_tests!(MyFixture);` at the top of a
/// test file (or in a module of its own). The crate documentation has a complete
/// example.
#[macro_export]
macro_rules! behaviour_tests {
    ($fixture:ty) => {
        $crate::behaviour_tests! {
            @modes $fixture;
            // BEGIN CASE LIST (kept in step with the functions of `cases` by a unit test)
            sticky {
                a_changed_session_is_backed_up_and_an_unchanged_one_is_not_rewritten,
                commits_while_a_backup_is_pending_coalesce_into_the_newest_state,
                sync_backup_writes_before_returning_and_a_hung_node_costs_one_timeout,
                graceful_shutdown_flushes_every_pending_backup,
                invalidation_and_cycle_id_end_the_old_remote_copy,
                lock_mode_makes_32_concurrent_increments_exact,
                merge_mode_answers_every_lost_race_with_a_conflict,
                merge_mode_keeps_concurrent_changes_of_different_attributes,
                a_session_in_use_stays_loadable_remotely_without_being_rewritten,
                local_expiry_deletes_the_remote_copy,
                sessions_swapped_out_for_space_are_reloaded_not_lost,
                another_server_takes_over_the_session_of_a_dead_one,
                a_server_handed_back_a_session_reloads_instead_of_trusting_its_stale_copy,
                a_session_whose_node_died_moves_to_a_live_node_losing_nothing,
                failover_nodes_take_sessions_only_when_every_regular_node_is_down,
                with_every_node_down_sessions_are_served_locally_and_backed_up_when_one_returns,
            }
            nonsticky {
                alternating_requests_on_two_servers_see_each_others_changes,
                locks_make_50_concurrent_increments_exact,
                merge_answers_every_lost_race_with_a_conflict,
                merge_keeps_50_concurrent_writes_of_distinct_attributes,
                losing_the_primary_mid_run_loses_no_session,
                an_unavailable_primary_costs_one_timeout_then_the_backup_serves,
                with_every_node_down_requests_fail_with_a_clear_error,
                hung_primary_and_backup_cost_one_timeout_not_two,
            }
            // END CASE LIST
        }
    };
    (@modes $fixture:ty; $($mode:ident { $($case:ident,)* })*) => {
        $(
            mod $mode {
                // The fixture's type, as the invoking module names it.
                #[allow(unused_imports)]
                use super::*;

                $(
                    #[test]
                    fn $case() {
                        $crate::run($crate::cases::$mode::$case::<$fixture>);
                    }
                )*
            }
        )*
    };
}

#[cfg(test)]
mod tests {
    /// The names of the `pub async fn`s in `source`, prefixed with `mode::`.
    fn case_functions(mode: &str, source: &str) -> Vec<String> {
        source
            .lines()
            .filter_map(|line| line.trim_start().strip_prefix("pub async fn "))
            .filter_map(|rest| rest.split(['<', '(']).next())
            .map(|name| format!("{mode}::{name}"))
            .collect()
    }

    #[test]
    fn the_macro_generates_a_test_for_every_case() {
        let lib = include_str!("lib.rs");
        let begin = lib.find("// BEGIN CASE LIST").unwrap();
        let end = lib.find("// END CASE LIST").unwrap();
        let mut listed = Vec::new();
        let mut mode = "";
        for line in lib[begin..end].lines().skip(1).map(str::trim) {
            if let Some(opened) = line.strip_suffix(" {") {
                mode = opened;
            } else if !line.is_empty() && line != "}" {
                listed.push(format!("{mode}::{}", line.trim_end_matches(',')));
            }
        }
        let mut defined: Vec<String> = [
            ("sticky", include_str!("cases/sticky/lifecycle.rs")),
            ("sticky", include_str!("cases/sticky/concurrency.rs")),
            ("sticky", include_str!("cases/sticky/expiry.rs")),
            ("sticky", include_str!("cases/sticky/failover.rs")),
            ("nonsticky", include_str!("cases/nonsticky/concurrency.rs")),
            ("nonsticky", include_str!("cases/nonsticky/failover.rs")),
        ]
        .into_iter()
        .flat_map(|(mode, source)| case_functions(mode, source))
        .collect();
        assert!(defined.len() >= 24, "{defined:?}");
        listed.sort_unstable();
        defined.sort_unstable();
        assert_eq!(listed, defined);
    }
}
