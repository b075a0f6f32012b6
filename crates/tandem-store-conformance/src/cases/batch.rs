//! Batches: `set_many` and `write_many` with mixed outcomes.

use tandem_core::{Precondition, SetItem, StoreError, Ttl, WriteItem, WriteOutcome};

use crate::StoreFixture;
use crate::support::{
    LONG, absent, assert_about, assert_token_is_current, key, present, start, stored, ttl_of, value,
};

/// `set_many` answers one result per item, in order: an oversized item fails alone
/// with [`StoreError::TooLarge`] (its key keeps its old value) while the others,
/// new keys and replaced ones, an empty value among them, are stored, each with its
/// own TTL. An empty batch answers nothing.
pub async fn set_many_answers_each_item_in_order<F: StoreFixture>() {
    let s = start::<F>(1).await;
    let (store, n1) = (&*s.store, s.node(0));
    let limit = store.max_item_size();
    let [fresh, forever, big, empty, replaced] =
        ["fresh", "forever", "big", "empty", "replaced"].map(key);
    store.set(n1, &big, b"kept", LONG).await.unwrap();
    store.set(n1, &replaced, b"old", Ttl::Never).await.unwrap();

    let oversized = vec![b'x'; limit + 1];
    let items = [
        SetItem {
            key: &fresh,
            value: b"fresh",
            ttl: LONG,
        },
        SetItem {
            key: &forever,
            value: b"forever",
            ttl: Ttl::Never,
        },
        SetItem {
            key: &big,
            value: &oversized,
            ttl: LONG,
        },
        SetItem {
            key: &empty,
            value: b"",
            ttl: LONG,
        },
        SetItem {
            key: &replaced,
            value: b"new",
            ttl: LONG,
        },
    ];
    let results = store.set_many(n1, &items).await;
    assert_eq!(
        results,
        [
            Ok(()),
            Ok(()),
            Err(StoreError::TooLarge {
                size: limit + 1,
                limit
            }),
            Ok(()),
            Ok(()),
        ]
    );
    assert_eq!(value(store, n1, &fresh).await.unwrap(), b"fresh");
    assert_eq!(value(store, n1, &forever).await.unwrap(), b"forever");
    assert_eq!(value(store, n1, &big).await.unwrap(), b"kept");
    assert_eq!(value(store, n1, &empty).await.unwrap(), b"");
    assert_eq!(value(store, n1, &replaced).await.unwrap(), b"new");
    assert_about(ttl_of(store, n1, &fresh).await, 60, "fresh");
    assert_eq!(ttl_of(store, n1, &forever).await, Ttl::Never, "forever");
    assert_about(ttl_of(store, n1, &replaced).await, 60, "replaced");

    assert_eq!(store.set_many(n1, &[]).await, [], "an empty batch");
}

/// `write_many` answers one result per item, in order, each item under its own
/// precondition: `Exists` for an add over a present key, `Stored` (with the token
/// a read then finds, where the store reports one) for an add of a new key, a plain
/// write and a write over the current token, `Conflict` for a stale token,
/// `NotFound` for a token on a missing key, [`StoreError::TooLarge`] for an
/// oversized value. Only the stored items change. An empty batch answers nothing.
pub async fn write_many_answers_each_item_in_order<F: StoreFixture>() {
    let s = start::<F>(1).await;
    let (store, n1) = (&*s.store, s.node(0));
    let [existing, fresh, plain, big, current, stale, missing] = [
        "existing", "fresh", "plain", "big", "current", "stale", "missing",
    ]
    .map(key);
    for k in [&existing, &big, &current, &stale] {
        store.set(n1, k, b"before", LONG).await.unwrap();
    }
    let stale_token = present(store, n1, &stale).await.cas;
    store.set(n1, &stale, b"newer", LONG).await.unwrap();
    let current_token = present(store, n1, &current).await.cas;

    let limit = store.max_item_size();
    let oversized = vec![b'x'; limit + 1];
    let item = |key, value, precondition| WriteItem {
        key,
        value,
        ttl: LONG,
        precondition,
    };
    let items = [
        item(&existing, b"lost", Precondition::Absent),
        item(&fresh, b"fresh", Precondition::Absent),
        item(&plain, b"plain", Precondition::None),
        item(&big, &oversized, Precondition::None),
        item(&current, b"swapped", Precondition::Cas(current_token)),
        item(&stale, b"lost", Precondition::Cas(stale_token)),
        item(&missing, b"lost", Precondition::Cas(stale_token)),
    ];
    let results = store.write_many(n1, &items).await;
    assert_eq!(results.len(), items.len(), "{results:?}");
    assert_eq!(
        results[0],
        Ok(WriteOutcome::Exists),
        "add over a present key"
    );
    let fresh_token = stored(results[1].clone().unwrap(), "add of a new key");
    let plain_token = stored(results[2].clone().unwrap(), "plain write");
    assert_eq!(
        results[3],
        Err(StoreError::TooLarge {
            size: limit + 1,
            limit
        }),
        "oversized"
    );
    let swapped_token = stored(results[4].clone().unwrap(), "write over the current token");
    assert_eq!(results[5], Ok(WriteOutcome::Conflict), "stale token");
    assert_eq!(
        results[6],
        Ok(WriteOutcome::NotFound),
        "token on a missing key"
    );

    assert_eq!(value(store, n1, &fresh).await.unwrap(), b"fresh");
    assert_eq!(value(store, n1, &plain).await.unwrap(), b"plain");
    assert_eq!(value(store, n1, &current).await.unwrap(), b"swapped");
    assert_token_is_current(store, n1, &fresh, fresh_token, "add of a new key").await;
    assert_token_is_current(store, n1, &plain, plain_token, "plain write").await;
    assert_token_is_current(store, n1, &current, swapped_token, "write over the token").await;
    assert_eq!(value(store, n1, &existing).await.unwrap(), b"before");
    assert_eq!(value(store, n1, &big).await.unwrap(), b"before");
    assert_eq!(value(store, n1, &stale).await.unwrap(), b"newer");
    assert!(absent(store, n1, &missing).await);

    assert_eq!(store.write_many(n1, &[]).await, [], "an empty batch");
}
