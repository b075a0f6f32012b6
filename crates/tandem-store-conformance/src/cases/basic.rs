//! Every operation on present and missing keys; add, delete, nodes.

use tandem_core::{
    AddOutcome, CasOutcome, CasToken, NodeId, Precondition, SetItem, StoreError, Ttl, WriteItem,
    WriteOutcome,
};

use crate::StoreFixture;
use crate::support::{
    LONG, absent, assert_about, assert_token_is_current, key, present, start, stored, value,
};

/// Every operation on a key that was never written. Reads find nothing (`get`,
/// `get_with_ttl` and `get_and_touch` answer `None`, `touch` and `delete` `false`);
/// `cas`, `write` with [`Precondition::Cas`] and `delete_if` answer `NotFound`,
/// whatever the token; none of them creates the key. `set`, `add`, `write`
/// ([`Precondition::None`] and [`Precondition::Absent`]), `set_many`, `write_many`
/// and `append` create it.
pub async fn every_operation_on_a_missing_key<F: StoreFixture>() {
    let s = start::<F>(1).await;
    let (store, n1) = (&*s.store, s.node(0));
    let (k, other) = (key("missing"), key("other"));
    store.set(n1, &other, b"other", LONG).await.unwrap();
    let foreign = present(store, n1, &other).await.cas;

    assert_eq!(store.get(n1, &k).await.unwrap(), None, "get");
    assert_eq!(
        store.get_with_ttl(n1, &k).await.unwrap(),
        None,
        "get_with_ttl"
    );
    assert_eq!(
        store.get_and_touch(n1, &k, LONG).await.unwrap(),
        None,
        "get_and_touch"
    );
    assert!(!store.touch(n1, &k, LONG).await.unwrap(), "touch");
    assert!(!store.delete(n1, &k).await.unwrap(), "delete");
    for token in [foreign, CasToken(u64::MAX)] {
        assert_eq!(
            store.cas(n1, &k, b"v", LONG, token).await.unwrap(),
            CasOutcome::NotFound,
            "cas with {token:?}"
        );
        assert_eq!(
            store
                .write(n1, &k, b"v", LONG, Precondition::Cas(token))
                .await
                .unwrap(),
            WriteOutcome::NotFound,
            "write Cas({token:?})"
        );
        assert_eq!(
            store.delete_if(n1, &k, token).await.unwrap(),
            CasOutcome::NotFound,
            "delete_if with {token:?}"
        );
    }
    assert!(
        absent(store, n1, &k).await,
        "a read or a refused write created the key"
    );
    assert_eq!(value(store, n1, &other).await.unwrap(), b"other");

    let [
        by_set,
        by_add,
        by_absent,
        by_plain,
        by_set_many,
        by_write_many,
        by_append,
    ] = [
        "set",
        "add",
        "write-absent",
        "write-plain",
        "set-many",
        "write-many",
        "append",
    ]
    .map(key);
    store.set(n1, &by_set, b"set", LONG).await.unwrap();
    assert_eq!(
        store.add(n1, &by_add, b"add", LONG).await.unwrap(),
        AddOutcome::Stored
    );
    let token = stored(
        store
            .write(n1, &by_absent, b"write-absent", LONG, Precondition::Absent)
            .await
            .unwrap(),
        "write Absent",
    );
    assert_token_is_current(store, n1, &by_absent, token, "write Absent").await;
    let token = stored(
        store
            .write(n1, &by_plain, b"write-plain", LONG, Precondition::None)
            .await
            .unwrap(),
        "write None",
    );
    assert_token_is_current(store, n1, &by_plain, token, "write None").await;
    let results = store
        .set_many(
            n1,
            &[SetItem {
                key: &by_set_many,
                value: b"set-many",
                ttl: LONG,
            }],
        )
        .await;
    assert_eq!(results, [Ok(())], "set_many");
    let results = store
        .write_many(
            n1,
            &[WriteItem {
                key: &by_write_many,
                value: b"write-many",
                ttl: LONG,
                precondition: Precondition::Absent,
            }],
        )
        .await;
    assert_eq!(results.len(), 1, "write_many");
    let token = stored(results[0].clone().unwrap(), "write_many Absent");
    assert_token_is_current(store, n1, &by_write_many, token, "write_many Absent").await;
    store.append(n1, &by_append, b"append", LONG).await.unwrap();

    for k in [
        &by_set,
        &by_add,
        &by_absent,
        &by_plain,
        &by_set_many,
        &by_write_many,
        &by_append,
    ] {
        assert_eq!(
            value(store, n1, k).await.as_deref(),
            Some(k.as_str().as_bytes()),
            "{k}"
        );
    }
}

/// Every operation on a key that holds an item: reads return it (value, token, TTL),
/// `touch` answers `true`, `add` and `write` with [`Precondition::Absent`] answer
/// `Exists`, `cas`, `write` and `delete_if` with the current token succeed, `set`,
/// `write` without precondition and `append` change the value, `delete` answers
/// `true` and removes it.
pub async fn every_operation_on_a_present_key<F: StoreFixture>() {
    let s = start::<F>(1).await;
    let (store, n1, k) = (&*s.store, s.node(0), key("present"));
    store.set(n1, &k, b"v1", LONG).await.unwrap();

    let item = present(store, n1, &k).await;
    assert_eq!(item.value, b"v1", "get");
    let (with_ttl, ttl) = store.get_with_ttl(n1, &k).await.unwrap().unwrap();
    assert_eq!(with_ttl, item, "get_with_ttl reads the item get reads");
    assert_about(ttl, 60, "get_with_ttl");
    let touched = store.get_and_touch(n1, &k, LONG).await.unwrap();
    assert_eq!(touched.as_ref(), Some(&item), "get_and_touch");
    assert!(store.touch(n1, &k, LONG).await.unwrap(), "touch");

    assert_eq!(
        store.add(n1, &k, b"lost", LONG).await.unwrap(),
        AddOutcome::Exists,
        "add"
    );
    assert_eq!(
        store
            .write(n1, &k, b"lost", LONG, Precondition::Absent)
            .await
            .unwrap(),
        WriteOutcome::Exists,
        "write Absent"
    );
    assert_eq!(present(store, n1, &k).await, item, "a refused add wrote");

    assert_eq!(
        store.cas(n1, &k, b"v2", LONG, item.cas).await.unwrap(),
        CasOutcome::Stored,
        "cas with the current token"
    );
    let item = present(store, n1, &k).await;
    assert_eq!(item.value, b"v2");
    let token = stored(
        store
            .write(n1, &k, b"v3", LONG, Precondition::Cas(item.cas))
            .await
            .unwrap(),
        "write Cas with the current token",
    );
    assert_token_is_current(store, n1, &k, token, "write Cas").await;
    assert_eq!(value(store, n1, &k).await.unwrap(), b"v3");
    let token = stored(
        store
            .write(n1, &k, b"v4", LONG, Precondition::None)
            .await
            .unwrap(),
        "write None",
    );
    assert_token_is_current(store, n1, &k, token, "write None").await;
    assert_eq!(value(store, n1, &k).await.unwrap(), b"v4");
    store.set(n1, &k, b"v5", LONG).await.unwrap();
    assert_eq!(value(store, n1, &k).await.unwrap(), b"v5");
    store.append(n1, &k, b"+v6", LONG).await.unwrap();
    assert_eq!(value(store, n1, &k).await.unwrap(), b"v5+v6");

    let current = present(store, n1, &k).await.cas;
    assert_eq!(
        store.delete_if(n1, &k, current).await.unwrap(),
        CasOutcome::Stored,
        "delete_if with the current token"
    );
    assert!(absent(store, n1, &k).await, "delete_if left the item");
    store.set(n1, &k, b"again", LONG).await.unwrap();
    assert!(store.delete(n1, &k).await.unwrap(), "delete");
    assert!(absent(store, n1, &k).await, "delete left the item");
}

/// `set` replaces the whole value, longer or shorter, and nothing of the old one
/// remains.
pub async fn set_replaces_the_value<F: StoreFixture>() {
    let s = start::<F>(1).await;
    let (store, n1, k) = (&*s.store, s.node(0), key("replaced"));
    store.set(n1, &k, b"short", Ttl::Never).await.unwrap();
    store
        .set(n1, &k, b"a much longer value", Ttl::Never)
        .await
        .unwrap();
    assert_eq!(value(store, n1, &k).await.unwrap(), b"a much longer value");
    store.set(n1, &k, b"tiny", LONG).await.unwrap();
    assert_eq!(value(store, n1, &k).await.unwrap(), b"tiny");
}

/// `add` (and `write` with [`Precondition::Absent`]) on a key that holds an item
/// answers `Exists` and leaves value and token as they were; once the key is
/// deleted, `add` stores again.
pub async fn add_on_an_existing_key_fails_and_leaves_it<F: StoreFixture>() {
    let s = start::<F>(1).await;
    let (store, n1, k) = (&*s.store, s.node(0), key("lock"));

    assert_eq!(
        store.add(n1, &k, b"first", LONG).await.unwrap(),
        AddOutcome::Stored
    );
    let first = present(store, n1, &k).await;
    assert_eq!(first.value, b"first");
    assert_eq!(
        store.add(n1, &k, b"second", Ttl::Never).await.unwrap(),
        AddOutcome::Exists
    );
    assert_eq!(
        store
            .write(n1, &k, b"third", Ttl::Never, Precondition::Absent)
            .await
            .unwrap(),
        WriteOutcome::Exists
    );
    assert_eq!(
        present(store, n1, &k).await,
        first,
        "a refused add changed the item"
    );

    assert!(store.delete(n1, &k).await.unwrap());
    assert_eq!(
        store.add(n1, &k, b"after delete", LONG).await.unwrap(),
        AddOutcome::Stored
    );
    assert_eq!(value(store, n1, &k).await.unwrap(), b"after delete");
}

/// After `delete` the key is absent to every operation: `get`, `get_with_ttl` and
/// `get_and_touch` find nothing, `touch` and a second `delete` answer `false`, the
/// token read before the delete finds `NotFound`, and `add` stores again.
pub async fn delete_then_get_finds_nothing<F: StoreFixture>() {
    let s = start::<F>(1).await;
    let (store, n1, k) = (&*s.store, s.node(0), key("deleted"));
    store.set(n1, &k, b"v", Ttl::Never).await.unwrap();
    let token = present(store, n1, &k).await.cas;

    assert!(
        store.delete(n1, &k).await.unwrap(),
        "delete of a present key"
    );
    assert_eq!(store.get(n1, &k).await.unwrap(), None);
    assert_eq!(store.get_with_ttl(n1, &k).await.unwrap(), None);
    assert_eq!(store.get_and_touch(n1, &k, LONG).await.unwrap(), None);
    assert!(!store.touch(n1, &k, LONG).await.unwrap());
    assert!(!store.delete(n1, &k).await.unwrap(), "second delete");
    assert_eq!(
        store.cas(n1, &k, b"v2", LONG, token).await.unwrap(),
        CasOutcome::NotFound
    );
    assert_eq!(
        store.delete_if(n1, &k, token).await.unwrap(),
        CasOutcome::NotFound
    );
    assert!(absent(store, n1, &k).await);
    assert_eq!(
        store.add(n1, &k, b"new", LONG).await.unwrap(),
        AddOutcome::Stored
    );
    assert_eq!(value(store, n1, &k).await.unwrap(), b"new");
}

/// Every operation goes to the node it names: the same key on two nodes is two
/// items, written, read, conditioned and deleted independently.
pub async fn nodes_are_separate<F: StoreFixture>() {
    let s = start::<F>(2).await;
    let (store, n1, n2, k) = (&*s.store, s.node(0), s.node(1), key("shared-name"));

    store.set(n1, &k, b"on n1", LONG).await.unwrap();
    assert!(
        absent(store, n2, &k).await,
        "a write to n1 is visible on n2"
    );
    assert!(!store.touch(n2, &k, LONG).await.unwrap());
    assert_eq!(
        store.add(n2, &k, b"on n2", LONG).await.unwrap(),
        AddOutcome::Stored,
        "add on n2 found n1's item"
    );
    assert_eq!(value(store, n1, &k).await.unwrap(), b"on n1");
    assert_eq!(value(store, n2, &k).await.unwrap(), b"on n2");

    let on_n1 = present(store, n1, &k).await;
    store.set(n2, &k, b"n2 again", LONG).await.unwrap();
    assert_eq!(
        present(store, n1, &k).await,
        on_n1,
        "a write to n2 changed n1's item"
    );
    assert!(store.delete(n2, &k).await.unwrap());
    assert_eq!(present(store, n1, &k).await, on_n1);
    assert_eq!(
        store.cas(n2, &k, b"x", LONG, on_n1.cas).await.unwrap(),
        CasOutcome::NotFound,
        "a cas on n2 found n1's item"
    );
    assert_eq!(
        store
            .cas(n1, &k, b"cas on n1", LONG, on_n1.cas)
            .await
            .unwrap(),
        CasOutcome::Stored
    );
    assert!(absent(store, n2, &k).await);
}

/// A node the store does not have is refused with [`StoreError::UnknownNode`]
/// (naming it) by every operation, is not available and not in
/// [`node_status`](tandem_core::RemoteStore::node_status); the configured node is
/// not affected.
pub async fn unknown_nodes_are_refused<F: StoreFixture>() {
    let s = start::<F>(1).await;
    let (store, n1, k) = (&*s.store, s.node(0), key("k"));
    let unknown = NodeId::new("zz_not_configured").unwrap();
    assert!(!store.nodes().contains(&unknown));
    store.set(n1, &k, b"kept", LONG).await.unwrap();

    let refused = StoreError::UnknownNode {
        node: unknown.to_string(),
    };
    let token = CasToken(1);
    assert_eq!(store.get(&unknown, &k).await, Err(refused.clone()), "get");
    assert_eq!(
        store.set(&unknown, &k, b"v", LONG).await,
        Err(refused.clone()),
        "set"
    );
    assert_eq!(
        store.add(&unknown, &k, b"v", LONG).await,
        Err(refused.clone()),
        "add"
    );
    assert_eq!(
        store.cas(&unknown, &k, b"v", LONG, token).await,
        Err(refused.clone()),
        "cas"
    );
    for precondition in [
        Precondition::None,
        Precondition::Absent,
        Precondition::Cas(token),
    ] {
        assert_eq!(
            store.write(&unknown, &k, b"v", LONG, precondition).await,
            Err(refused.clone()),
            "write {precondition:?}"
        );
    }
    let set_items = [SetItem {
        key: &k,
        value: b"v",
        ttl: LONG,
    }];
    assert_eq!(
        store.set_many(&unknown, &set_items).await,
        [Err(refused.clone())],
        "set_many"
    );
    let write_items = [WriteItem {
        key: &k,
        value: b"v",
        ttl: LONG,
        precondition: Precondition::None,
    }];
    assert_eq!(
        store.write_many(&unknown, &write_items).await,
        [Err(refused.clone())],
        "write_many"
    );
    assert_eq!(
        store.delete(&unknown, &k).await,
        Err(refused.clone()),
        "delete"
    );
    assert_eq!(
        store.delete_if(&unknown, &k, token).await,
        Err(refused.clone()),
        "delete_if"
    );
    assert_eq!(
        store.append(&unknown, &k, b"v", LONG).await,
        Err(refused.clone()),
        "append"
    );
    assert_eq!(
        store.get_with_ttl(&unknown, &k).await,
        Err(refused.clone()),
        "get_with_ttl"
    );
    assert_eq!(
        store.touch(&unknown, &k, LONG).await,
        Err(refused.clone()),
        "touch"
    );
    assert_eq!(
        store.get_and_touch(&unknown, &k, LONG).await,
        Err(refused.clone()),
        "get_and_touch"
    );
    assert!(!refused.is_node_failure());

    assert!(!store.is_available(&unknown));
    assert!(
        store
            .node_status()
            .iter()
            .all(|status| status.id != unknown),
        "node_status lists a node that is not configured"
    );
    assert!(store.is_available(n1));
    assert_eq!(value(store, n1, &k).await.unwrap(), b"kept");
}
