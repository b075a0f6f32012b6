//! Test-only: the conformance suite of [`RemoteStore`], which every backend must pass.
//!
//! The suite checks the trait's contract as `tandem_core`'s documentation states it,
//! through nothing but the trait: every operation on present and missing keys, CAS
//! tokens (changed by every write, kept by reads and touches, stale ones refused,
//! races with exactly one winner), batches with mixed outcomes, TTLs
//! ([`Ttl::Never`](tandem_core::Ttl::Never), expiry, touch, very long lifetimes),
//! empty and binary values, the longest keys, values at and one byte over
//! [`max_item_size`](RemoteStore::max_item_size), nodes that become unavailable
//! and come back, and node epochs that stay put through ordinary operations. The
//! cases are the functions of [`cases`]; each documents what it asserts.
//!
//! What it is not: a test of store-specific behaviour (memcached's 30-day TTL rule,
//! its pipelining or connection limits stay in the store's own tests), or a
//! benchmark.
//!
//! # Using it for a new backend
//!
//! 1. Implement [`StoreFixture`] in the backend's tests: [`start`](StoreFixture::start)
//!    gives a fresh, empty store over `nodes` nodes (started processes, a container,
//!    ...), and the fault methods make a node unavailable and available again. A
//!    fixture that cannot inject faults leaves them out: the fault cases are then
//!    skipped, each with a note on standard error that names it.
//! 2. Generate the tests with [`store_conformance_tests!`], one `#[test]` per case,
//!    named after the case, so that a failure names the broken rule:
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//!
//! use tandem_core::{MemoryStore, NodeId, RemoteStore};
//! use tandem_store_conformance::{FaultsUnsupported, StoreFixture};
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
//! // In a test file (`tests/conformance.rs`): one #[test] per case.
//! tandem_store_conformance::store_conformance_tests!(Memory);
//!
//! # fn main() {
//! // A single case can also be run by hand:
//! tandem_store_conformance::run(tandem_store_conformance::cases::set_replaces_the_value::<Memory>);
//! # }
//! ```
//!
//! Then `cargo test -p <backend crate> --test conformance`. The suite runs in
//! `tandem-store-conformance`'s own tests against
//! [`MemoryStore`](tandem_core::MemoryStore) (with [`MemoryFixture`]), and in
//! `tandem-memcached`'s (`tests/conformance.rs`) against real memcached processes.
//! The same fixture also runs the session manager's behaviour suite,
//! `tandem-behaviour`: a new backend writes one fixture for both.
//!
//! # Timing
//!
//! Every case runs on its own multi-threaded Tokio runtime (two workers) and must end
//! within [`CASE_LIMIT`]: a store that hangs fails the case instead of the whole run.
//! Cases that wait for expiry wait at most about 2.5 s and assert expiry only well
//! after the TTL; operations on an unavailable node are bounded by the fixture's
//! [operation timeout](StoreFixture::operation_timeout) plus [`MARGIN`], so that a
//! loaded machine does not fail them.

use std::future::Future;
use std::io::Write as _;
use std::sync::Arc;
use std::time::Duration;

use tandem_core::{NodeId, RemoteStore};

pub mod cases;
mod memory;
mod support;

pub use memory::MemoryFixture;

/// How long one case may take, fixture start included, before it fails as hung.
pub const CASE_LIMIT: Duration = Duration::from_secs(60);

/// What an operation on an unavailable node may take beyond the fixture's
/// [operation timeout](StoreFixture::operation_timeout), and a node that comes back
/// beyond its [recovery time](StoreFixture::recovery_time): generous, because the
/// machine running the tests may be busy.
pub const MARGIN: Duration = Duration::from_secs(2);

/// A store under test, with what the suite needs around it.
///
/// Every case starts its own fixture, so fixtures must be independent of each other
/// (own processes, own ports, own key space) for the cases to run in parallel.
pub trait StoreFixture: Sized {
    /// A fresh store over `nodes` nodes (1 to 3: this suite uses 1 or 2, the
    /// manager's behaviour suite in `tandem-behaviour` up to 3), none holding any
    /// item. The store's [`nodes`](RemoteStore::nodes) are the nodes the cases use.
    fn start(nodes: usize) -> impl Future<Output = Self>;

    /// The store under test.
    fn store(&self) -> Arc<dyn RemoteStore>;

    /// The longest one operation may take on a node that does not answer: the
    /// store's operation timeout (zero for a store that never waits).
    fn operation_timeout(&self) -> Duration;

    /// How long the store may take to use a node again after
    /// [`make_available`](Self::make_available) (for example its probe interval
    /// and a timeout or two). Zero by default: at once.
    fn recovery_time(&self) -> Duration {
        Duration::ZERO
    }

    /// Makes `node` unavailable while the store keeps running: a hung or stopped
    /// server, a switched-off node. The default cannot, and says so; the fault cases
    /// are then skipped with a note.
    fn make_unavailable(
        &self,
        node: &NodeId,
    ) -> impl Future<Output = Result<(), FaultsUnsupported>> {
        let _ = node;
        async {
            Err(FaultsUnsupported::new(
                "the fixture does not implement fault injection",
            ))
        }
    }

    /// Undoes [`make_unavailable`](Self::make_unavailable). Must be implemented
    /// together with it.
    fn make_available(&self, node: &NodeId) -> impl Future<Output = Result<(), FaultsUnsupported>> {
        let _ = node;
        async {
            Err(FaultsUnsupported::new(
                "the fixture does not implement fault injection",
            ))
        }
    }
}

/// A fixture cannot make nodes unavailable, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultsUnsupported {
    reason: String,
}

impl FaultsUnsupported {
    /// Says why the fixture cannot inject faults.
    pub fn new(reason: impl Into<String>) -> FaultsUnsupported {
        FaultsUnsupported {
            reason: reason.into(),
        }
    }

    /// Why the fixture cannot inject faults.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

/// Runs one case on a fresh multi-threaded runtime (two workers), failing it if it
/// takes longer than [`CASE_LIMIT`]. What [`store_conformance_tests!`] calls.
///
/// # Panics
///
/// When the case fails or hangs: that is how a test fails.
pub fn run<Fut: Future<Output = ()>>(case: impl FnOnce() -> Fut) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("cannot build a Tokio runtime for the case");
    runtime.block_on(async {
        if tokio::time::timeout(CASE_LIMIT, case()).await.is_err() {
            panic!(
                "the case did not finish within {CASE_LIMIT:?}: some operation is not bounded in time"
            );
        }
    });
}

/// Says `message` about `case` on standard error, past the test harness's output
/// capture, so that a skipped check is never mistaken for a passed one.
fn note(case: &str, message: &str) {
    let _ = writeln!(
        std::io::stderr(),
        "tandem-store-conformance: {case}: {message}"
    );
}

/// Generates one `#[test]` per conformance case for the [`StoreFixture`] type given,
/// each named after its case (a function of [`cases`]) and running it with [`run`]:
/// `store_conformance_tests!(MyFixture);` at the top of a test file (or in a module
/// of its own). The crate documentation has a complete example.
#[macro_export]
macro_rules! store_conformance_tests {
    ($fixture:ty) => {
        $crate::store_conformance_tests! {
            @cases $fixture;
            // BEGIN CASE LIST (kept in step with the functions of `cases` by a unit test)
            every_operation_on_a_missing_key,
            every_operation_on_a_present_key,
            set_replaces_the_value,
            add_on_an_existing_key_fails_and_leaves_it,
            delete_then_get_finds_nothing,
            nodes_are_separate,
            unknown_nodes_are_refused,
            cas_tokens_change_on_every_write,
            reads_and_touches_keep_the_cas_token,
            a_stale_cas_token_fails_and_leaves_the_value,
            tokens_returned_by_writes_condition_the_next_write,
            concurrent_cas_on_one_token_has_exactly_one_winner,
            concurrent_adds_of_one_key_have_exactly_one_winner,
            concurrent_appends_all_land,
            set_many_answers_each_item_in_order,
            write_many_answers_each_item_in_order,
            empty_values_are_stored_as_empty,
            binary_values_round_trip,
            keys_of_the_maximum_length_work,
            values_of_exactly_the_max_item_size_are_stored,
            values_one_byte_over_the_max_item_size_are_refused,
            appends_past_the_max_item_size_are_refused,
            append_creates_with_the_ttl_then_extends_keeping_it,
            get_with_ttl_reports_the_remaining_lifetime,
            every_write_sets_the_ttl_it_is_given,
            ttl_never_means_no_expiry,
            long_ttls_are_kept,
            short_ttls_expire,
            touch_and_get_and_touch_extend_the_ttl,
            node_status_reports_every_node,
            node_epochs_stay_put_through_ordinary_operations,
            an_unavailable_node_fails_every_operation_in_bounded_time,
            other_nodes_keep_working_while_one_is_unavailable,
            a_node_that_comes_back_is_served_again,
            // END CASE LIST
        }
    };
    (@cases $fixture:ty; $($case:ident,)*) => {
        $(
            #[test]
            fn $case() {
                $crate::run($crate::cases::$case::<$fixture>);
            }
        )*
    };
}

#[cfg(test)]
mod tests {
    /// The names of the `pub async fn`s in `source`.
    fn case_functions(source: &str) -> Vec<&str> {
        source
            .lines()
            .filter_map(|line| line.trim_start().strip_prefix("pub async fn "))
            .filter_map(|rest| rest.split(['<', '(']).next())
            .collect()
    }

    #[test]
    fn the_macro_generates_a_test_for_every_case() {
        let lib = include_str!("lib.rs");
        let begin = lib.find("// BEGIN CASE LIST").unwrap();
        let end = lib.find("// END CASE LIST").unwrap();
        let mut listed: Vec<&str> = lib[begin..end]
            .lines()
            .skip(1)
            .map(|line| line.trim().trim_end_matches(','))
            .filter(|line| !line.is_empty())
            .collect();
        let mut defined: Vec<&str> = [
            include_str!("cases/basic.rs"),
            include_str!("cases/cas.rs"),
            include_str!("cases/batch.rs"),
            include_str!("cases/values.rs"),
            include_str!("cases/ttl.rs"),
            include_str!("cases/nodes.rs"),
        ]
        .into_iter()
        .flat_map(case_functions)
        .collect();
        assert!(defined.len() > 30, "{defined:?}");
        listed.sort_unstable();
        defined.sort_unstable();
        assert_eq!(listed, defined);
    }
}
