//! CAS tokens: changed by every write, kept by reads and touches, stale ones
//! refused, races with one winner; concurrent adds and appends.

use std::sync::Arc;

use tandem_core::{
    AddOutcome, CasOutcome, CasToken, NodeId, Precondition, RemoteStore, SetItem, StoreKey, Ttl,
    WriteItem, WriteOutcome,
};
use tokio::sync::Barrier;

use crate::StoreFixture;
use crate::support::{LONG, assert_token_is_current, key, note, present, start, stored, value};

/// How many tasks race in the concurrency cases.
const RACERS: usize = 16;

/// Every write changes the item's CAS token: `set` (of the same bytes too), `write`
/// with each precondition, `cas`, `append`, `set_many`, `write_many`, and an `add`
/// that recreates a deleted key. No token repeats one the key had before, so a
/// holder of an old token can never overwrite a newer item.
pub async fn cas_tokens_change_on_every_write<F: StoreFixture>() {
    let s = start::<F>(1).await;
    let (store, n1, k) = (&*s.store, s.node(0), key("tokens"));
    let mut seen: Vec<CasToken> = Vec::new();
    let mut check = async |what: &str, returned: Option<CasToken>| {
        let current = present(store, n1, &k).await.cas;
        assert!(
            !seen.contains(&current),
            "{what} left the token at one the key had before ({current:?}; seen {seen:?})"
        );
        if let Some(token) = returned {
            assert_eq!(
                token, current,
                "{what} returned another token than a read finds"
            );
        }
        seen.push(current);
        current
    };

    store.set(n1, &k, b"same", LONG).await.unwrap();
    check("set", None).await;
    store.set(n1, &k, b"same", LONG).await.unwrap();
    check("set of the same bytes", None).await;
    let returned = stored(
        store
            .write(n1, &k, b"same", LONG, Precondition::None)
            .await
            .unwrap(),
        "write None",
    );
    let current = check("write None", returned).await;
    assert_eq!(
        store.cas(n1, &k, b"same", LONG, current).await.unwrap(),
        CasOutcome::Stored
    );
    let current = check("cas", None).await;
    let returned = stored(
        store
            .write(n1, &k, b"same", LONG, Precondition::Cas(current))
            .await
            .unwrap(),
        "write Cas",
    );
    check("write Cas", returned).await;
    store.append(n1, &k, b"+", LONG).await.unwrap();
    check("append", None).await;
    let results = store
        .set_many(
            n1,
            &[SetItem {
                key: &k,
                value: b"batch",
                ttl: LONG,
            }],
        )
        .await;
    assert_eq!(results, [Ok(())]);
    check("set_many", None).await;
    let results = store
        .write_many(
            n1,
            &[WriteItem {
                key: &k,
                value: b"batch",
                ttl: LONG,
                precondition: Precondition::None,
            }],
        )
        .await;
    let returned = stored(results[0].clone().unwrap(), "write_many None");
    check("write_many", returned).await;

    assert!(store.delete(n1, &k).await.unwrap());
    assert_eq!(
        store.add(n1, &k, b"same", LONG).await.unwrap(),
        AddOutcome::Stored
    );
    check("add after delete", None).await;
    assert!(store.delete(n1, &k).await.unwrap());
    let returned = stored(
        store
            .write(n1, &k, b"same", LONG, Precondition::Absent)
            .await
            .unwrap(),
        "write Absent",
    );
    check("write Absent after delete", returned).await;
}

/// Reads and touches keep the token: `get`, `get_with_ttl`, `get_and_touch` and
/// `touch` (to a TTL or to [`Ttl::Never`]), and so do writes that were refused
/// (`add` on the present key, `cas`, `write` and `delete_if` with a stale token).
pub async fn reads_and_touches_keep_the_cas_token<F: StoreFixture>() {
    let s = start::<F>(1).await;
    let (store, n1, k) = (&*s.store, s.node(0), key("kept"));
    store.set(n1, &k, b"old", LONG).await.unwrap();
    let stale = present(store, n1, &k).await.cas;
    store.set(n1, &k, b"v", LONG).await.unwrap();
    let item = present(store, n1, &k).await;

    assert_eq!(present(store, n1, &k).await, item, "a second get");
    let (read, _) = store.get_with_ttl(n1, &k).await.unwrap().unwrap();
    assert_eq!(read, item, "get_with_ttl");
    let touched = store.get_and_touch(n1, &k, LONG).await.unwrap().unwrap();
    assert_eq!(touched, item, "get_and_touch reads the token it had");
    assert_eq!(present(store, n1, &k).await, item, "after get_and_touch");
    assert!(store.touch(n1, &k, LONG).await.unwrap());
    assert_eq!(present(store, n1, &k).await, item, "after touch");
    assert!(store.touch(n1, &k, Ttl::Never).await.unwrap());
    assert_eq!(present(store, n1, &k).await, item, "after touch to Never");

    assert_eq!(
        store.add(n1, &k, b"x", LONG).await.unwrap(),
        AddOutcome::Exists
    );
    assert_eq!(
        store.cas(n1, &k, b"x", LONG, stale).await.unwrap(),
        CasOutcome::Conflict
    );
    assert_eq!(
        store
            .write(n1, &k, b"x", LONG, Precondition::Cas(stale))
            .await
            .unwrap(),
        WriteOutcome::Conflict
    );
    assert_eq!(
        store.delete_if(n1, &k, stale).await.unwrap(),
        CasOutcome::Conflict
    );
    assert_eq!(present(store, n1, &k).await, item, "after refused writes");
}

/// A token of an earlier version of the item is refused with `Conflict` by `cas`,
/// `write` (alone and in `write_many`) and `delete_if`, and the value and token stay
/// as they were. A token that was used for a successful `cas` is stale afterwards.
pub async fn a_stale_cas_token_fails_and_leaves_the_value<F: StoreFixture>() {
    let s = start::<F>(1).await;
    let (store, n1, k) = (&*s.store, s.node(0), key("stale"));
    store.set(n1, &k, b"v1", LONG).await.unwrap();
    let stale = present(store, n1, &k).await.cas;
    store.set(n1, &k, b"v2", LONG).await.unwrap();
    let current = present(store, n1, &k).await;

    assert_eq!(
        store.cas(n1, &k, b"lost", LONG, stale).await.unwrap(),
        CasOutcome::Conflict,
        "cas"
    );
    assert_eq!(
        store
            .write(n1, &k, b"lost", LONG, Precondition::Cas(stale))
            .await
            .unwrap(),
        WriteOutcome::Conflict,
        "write"
    );
    let results = store
        .write_many(
            n1,
            &[WriteItem {
                key: &k,
                value: b"lost",
                ttl: LONG,
                precondition: Precondition::Cas(stale),
            }],
        )
        .await;
    assert_eq!(results, [Ok(WriteOutcome::Conflict)], "write_many");
    assert_eq!(
        store.delete_if(n1, &k, stale).await.unwrap(),
        CasOutcome::Conflict,
        "delete_if"
    );
    assert_eq!(
        present(store, n1, &k).await,
        current,
        "a refused write changed the item"
    );

    assert_eq!(
        store.cas(n1, &k, b"v3", LONG, current.cas).await.unwrap(),
        CasOutcome::Stored
    );
    assert_eq!(
        store
            .cas(n1, &k, b"again", LONG, current.cas)
            .await
            .unwrap(),
        CasOutcome::Conflict,
        "a token used once is stale"
    );
    assert_eq!(value(store, n1, &k).await.unwrap(), b"v3");
}

/// The token a `write` returns (where the store reports one) conditions the next
/// write without a read in between: a chain of three writes succeeds, their tokens
/// differ, and a write over a token from the middle of the chain is a `Conflict`.
pub async fn tokens_returned_by_writes_condition_the_next_write<F: StoreFixture>() {
    let s = start::<F>(1).await;
    let (store, n1, k) = (&*s.store, s.node(0), key("chain"));
    let write = async |value: &[u8], precondition: Precondition| {
        store
            .write(n1, &k, value, LONG, precondition)
            .await
            .unwrap()
    };

    let Some(t1) = stored(write(b"v1", Precondition::Absent).await, "first write") else {
        note(
            "tokens_returned_by_writes_condition_the_next_write",
            "the store returns no token from write (allowed): the chain is not checked",
        );
        return;
    };
    let t2 = stored(write(b"v2", Precondition::Cas(t1)).await, "second write")
        .expect("the store returned a token from the first write but not the second");
    let t3 = stored(write(b"v3", Precondition::Cas(t2)).await, "third write")
        .expect("the store returned a token from the first write but not the third");
    assert!(t1 != t2 && t2 != t3 && t1 != t3, "{t1:?} {t2:?} {t3:?}");
    assert_eq!(present(store, n1, &k).await.cas, t3);
    assert_eq!(
        write(b"late", Precondition::Cas(t2)).await,
        WriteOutcome::Conflict
    );
    assert_eq!(value(store, n1, &k).await.unwrap(), b"v3");
}

/// Many tasks race to replace one item with the same token, half with `cas`, half
/// with `write`: exactly one wins, every other one gets `Conflict`, and the item
/// holds the winner's value.
pub async fn concurrent_cas_on_one_token_has_exactly_one_winner<F: StoreFixture>() {
    let s = start::<F>(1).await;
    let (n1, k) = (s.node(0).clone(), key("contended"));
    s.store.set(&n1, &k, b"start", LONG).await.unwrap();
    let token = present(&*s.store, &n1, &k).await.cas;

    let outcomes = race(
        &s.store,
        &n1,
        &k,
        move |store, node, key, index, value| async move {
            if index % 2 == 0 {
                match store.cas(&node, &key, &value, LONG, token).await.unwrap() {
                    CasOutcome::Stored => Won(None),
                    CasOutcome::Conflict => Lost,
                    other => panic!("racer {index}: cas answered {other:?}"),
                }
            } else {
                let outcome = store
                    .write(&node, &key, &value, LONG, Precondition::Cas(token))
                    .await
                    .unwrap();
                match outcome {
                    WriteOutcome::Stored(returned) => Won(returned),
                    WriteOutcome::Conflict => Lost,
                    other => panic!("racer {index}: write answered {other:?}"),
                }
            }
        },
    )
    .await;
    check_one_winner(&*s.store, &n1, &k, outcomes).await;
}

/// Many tasks race to create one key, half with `add`, half with `write` and
/// [`Precondition::Absent`]: exactly one stores, every other one gets `Exists`,
/// and the key holds the winner's value.
pub async fn concurrent_adds_of_one_key_have_exactly_one_winner<F: StoreFixture>() {
    let s = start::<F>(1).await;
    let (n1, k) = (s.node(0).clone(), key("created-once"));

    let outcomes = race(
        &s.store,
        &n1,
        &k,
        |store, node, key, index, value| async move {
            if index % 2 == 0 {
                match store.add(&node, &key, &value, LONG).await.unwrap() {
                    AddOutcome::Stored => Won(None),
                    AddOutcome::Exists => Lost,
                }
            } else {
                let outcome = store
                    .write(&node, &key, &value, LONG, Precondition::Absent)
                    .await
                    .unwrap();
                match outcome {
                    WriteOutcome::Stored(returned) => Won(returned),
                    WriteOutcome::Exists => Lost,
                    other => panic!("racer {index}: write answered {other:?}"),
                }
            }
        },
    )
    .await;
    check_one_winner(&*s.store, &n1, &k, outcomes).await;
}

/// Concurrent `append`s to one key, the first of which creates it, all land: the
/// value holds every record exactly once, none cut or interleaved.
pub async fn concurrent_appends_all_land<F: StoreFixture>() {
    let s = start::<F>(1).await;
    let (n1, k) = (s.node(0).clone(), key("feed"));

    let outcomes = race(&s.store, &n1, &k, |store, node, key, _, value| async move {
        store.append(&node, &key, &value, LONG).await.unwrap();
        Lost
    })
    .await;
    let records: Vec<Vec<u8>> = outcomes.into_iter().map(|(value, _)| value).collect();
    let stored = value(&*s.store, &n1, &k)
        .await
        .expect("the appends created nothing");
    assert_eq!(
        stored.len(),
        records.iter().map(Vec::len).sum::<usize>(),
        "{:?}",
        String::from_utf8_lossy(&stored)
    );
    let mut landed: Vec<Vec<u8>> = stored
        .chunks(records[0].len())
        .map(<[u8]>::to_vec)
        .collect();
    landed.sort();
    let mut expected = records;
    expected.sort();
    assert_eq!(landed, expected, "every record exactly once");
}

/// What one racer reports: it won (with the token its write returned, if any) or
/// lost.
enum Outcome {
    Won(Option<CasToken>),
    Lost,
}
use Outcome::{Lost, Won};

/// Runs [`RACERS`] tasks that start together, each with its index and a value of its
/// own (8 bytes, `racer07`, ...); returns each racer's value and outcome.
async fn race<Op, Fut>(
    store: &Arc<dyn RemoteStore>,
    node: &NodeId,
    key: &StoreKey,
    operation: Op,
) -> Vec<(Vec<u8>, Outcome)>
where
    Op: Fn(Arc<dyn RemoteStore>, NodeId, StoreKey, usize, Vec<u8>) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Outcome> + Send + 'static,
{
    let barrier = Arc::new(Barrier::new(RACERS));
    let mut racers = Vec::with_capacity(RACERS);
    for index in 0..RACERS {
        let (store, node, key) = (Arc::clone(store), node.clone(), key.clone());
        let (barrier, operation) = (Arc::clone(&barrier), operation.clone());
        let value = format!("racer{index:02}").into_bytes();
        racers.push(tokio::spawn(async move {
            barrier.wait().await;
            let outcome = operation(store, node, key, index, value.clone()).await;
            (value, outcome)
        }));
    }
    let mut outcomes = Vec::with_capacity(RACERS);
    for racer in racers {
        outcomes.push(racer.await.expect("a racer panicked"));
    }
    outcomes
}

/// Asserts that exactly one racer won and that the item holds its value (and the
/// token its write returned, if any).
async fn check_one_winner(
    store: &dyn RemoteStore,
    node: &NodeId,
    key: &StoreKey,
    outcomes: Vec<(Vec<u8>, Outcome)>,
) {
    let winners: Vec<(Vec<u8>, Option<CasToken>)> = outcomes
        .into_iter()
        .filter_map(|(value, outcome)| match outcome {
            Won(token) => Some((value, token)),
            Lost => None,
        })
        .collect();
    let [(value, token)] = &winners[..] else {
        let names: Vec<_> = winners
            .iter()
            .map(|(value, _)| String::from_utf8_lossy(value).into_owned())
            .collect();
        panic!(
            "{} of {RACERS} racers won (exactly one must): {names:?}",
            winners.len()
        );
    };
    let item = present(store, node, key).await;
    assert_eq!(
        &item.value, value,
        "the item does not hold the winner's value"
    );
    assert_token_is_current(store, node, key, *token, "the winning write").await;
}
