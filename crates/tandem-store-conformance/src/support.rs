//! Helpers of the cases: a started fixture, keys, reads and outcome checks.

use std::sync::Arc;
use std::time::Duration;

use tandem_core::{CasToken, Item, NodeId, RemoteStore, StoreKey, Ttl, WriteOutcome};

pub(crate) use crate::note;
use crate::{FaultsUnsupported, StoreFixture};

/// A TTL that no case outlives.
pub(crate) const LONG: Ttl = Ttl::After(Duration::from_secs(60));

/// A started fixture, its store and its nodes. The fixture is kept (not only the
/// store) because dropping it may stop the servers.
pub(crate) struct Started<F> {
    pub(crate) fixture: F,
    pub(crate) store: Arc<dyn RemoteStore>,
    nodes: Vec<NodeId>,
}

impl<F: StoreFixture> Started<F> {
    /// The store's node number `index` (0 is the first).
    pub(crate) fn node(&self, index: usize) -> &NodeId {
        &self.nodes[index]
    }
}

/// Starts a fixture with `nodes` nodes and checks that its store has them.
pub(crate) async fn start<F: StoreFixture>(nodes: usize) -> Started<F> {
    let fixture = F::start(nodes).await;
    let store = fixture.store();
    let ids = store.nodes();
    assert_eq!(
        ids.len(),
        nodes,
        "the fixture was asked for {nodes} nodes, its store has {ids:?}"
    );
    for (index, id) in ids.iter().enumerate() {
        assert!(
            !ids[..index].contains(id),
            "node {id} is listed twice: {ids:?}"
        );
    }
    Started {
        fixture,
        store,
        nodes: ids,
    }
}

/// Makes `node` unavailable, or says that the case is skipped and returns `false`.
pub(crate) async fn make_unavailable<F: StoreFixture>(
    started: &Started<F>,
    node: &NodeId,
    case: &str,
) -> bool {
    match started.fixture.make_unavailable(node).await {
        Ok(()) => true,
        Err(why) => {
            let fixture = std::any::type_name::<F>();
            let message = format!(
                "SKIPPED: {fixture} cannot make a node unavailable ({})",
                why.reason()
            );
            note(case, &message);
            false
        }
    }
}

/// Makes `node` available again; a fixture that made it unavailable must be able to.
pub(crate) async fn make_available<F: StoreFixture>(started: &Started<F>, node: &NodeId) {
    if let Err(FaultsUnsupported { reason }) = started.fixture.make_available(node).await {
        panic!("the fixture made {node} unavailable but cannot make it available: {reason}");
    }
}

pub(crate) fn key(text: &str) -> StoreKey {
    StoreKey::new(text).unwrap_or_else(|error| panic!("bad test key {text:?}: {error}"))
}

/// The item under `key`, which must be there.
pub(crate) async fn present(store: &dyn RemoteStore, node: &NodeId, key: &StoreKey) -> Item {
    store
        .get(node, key)
        .await
        .unwrap_or_else(|error| panic!("get {key} on {node}: {error}"))
        .unwrap_or_else(|| panic!("{key} on {node} is missing"))
}

/// Whether `key` is absent (a successful get that finds nothing).
pub(crate) async fn absent(store: &dyn RemoteStore, node: &NodeId, key: &StoreKey) -> bool {
    store
        .get(node, key)
        .await
        .unwrap_or_else(|error| panic!("get {key} on {node}: {error}"))
        .is_none()
}

/// The value under `key`, if any.
pub(crate) async fn value(
    store: &dyn RemoteStore,
    node: &NodeId,
    key: &StoreKey,
) -> Option<Vec<u8>> {
    store
        .get(node, key)
        .await
        .unwrap_or_else(|error| panic!("get {key} on {node}: {error}"))
        .map(|item| item.value)
}

/// The TTL `key` has left, as [`RemoteStore::get_with_ttl`] reports it; the key must
/// be there.
pub(crate) async fn ttl_of(store: &dyn RemoteStore, node: &NodeId, key: &StoreKey) -> Ttl {
    store
        .get_with_ttl(node, key)
        .await
        .unwrap_or_else(|error| panic!("get_with_ttl {key} on {node}: {error}"))
        .unwrap_or_else(|| panic!("{key} on {node} is missing"))
        .1
}

/// Asserts that `ttl` is what an item given `seconds` to live a moment ago has left:
/// at most `seconds` and, since stores count whole seconds and the machine may be
/// slow, at least `seconds - 10` (or a tenth less, for long lifetimes).
#[track_caller]
pub(crate) fn assert_about(ttl: Ttl, seconds: u64, what: &str) {
    let Ttl::After(left) = ttl else {
        panic!("{what}: expected about {seconds} s left, the store reports Ttl::Never");
    };
    let slack = (seconds / 10).max(10);
    let low = Duration::from_secs(seconds.saturating_sub(slack));
    assert!(
        left >= low && left <= Duration::from_secs(seconds),
        "{what}: expected about {seconds} s left, the store reports {left:?}"
    );
}

/// The outcome of a write that must have been stored; its new token, if the store
/// reports one.
#[track_caller]
pub(crate) fn stored(outcome: WriteOutcome, what: &str) -> Option<CasToken> {
    match outcome {
        WriteOutcome::Stored(token) => token,
        other => panic!("{what}: expected Stored, got {other:?}"),
    }
}

/// Asserts that a token a write returned (if it returned one) is the one the store
/// now reads with the item.
pub(crate) async fn assert_token_is_current(
    store: &dyn RemoteStore,
    node: &NodeId,
    key: &StoreKey,
    returned: Option<CasToken>,
    what: &str,
) {
    if let Some(token) = returned {
        let item = present(store, node, key).await;
        assert_eq!(
            item.cas, token,
            "{what}: the token the write returned is not the one a read then finds"
        );
    }
}

/// `len` bytes that are not all alike, so that a truncated or shifted copy is caught.
pub(crate) fn patterned(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|index| (index % 251) as u8 ^ seed).collect()
}
