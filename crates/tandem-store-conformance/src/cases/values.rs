//! Values and keys at their edges: empty, binary, the longest keys, the item size
//! limit; appends.

use tandem_core::{
    AddOutcome, CasOutcome, MAX_KEY_LEN, Precondition, SetItem, StoreError, StoreKey, Ttl,
    WriteItem,
};

use crate::StoreFixture;
use crate::support::{
    LONG, absent, assert_about, key, patterned, present, start, stored, ttl_of, value,
};

/// An empty value is a value: every write stores it (`set`, `add`, `cas`, `write`,
/// `append` to a missing key) and every read finds an item with no bytes, not a
/// missing key; appending to it gives the appended bytes.
pub async fn empty_values_are_stored_as_empty<F: StoreFixture>() {
    let s = start::<F>(1).await;
    let (store, n1) = (&*s.store, s.node(0));
    let [by_set, by_add, by_cas, by_write, by_append] =
        ["set", "add", "cas", "write", "append"].map(key);

    store.set(n1, &by_set, b"", LONG).await.unwrap();
    assert_eq!(
        store.add(n1, &by_add, b"", LONG).await.unwrap(),
        AddOutcome::Stored
    );
    store.set(n1, &by_cas, b"full", LONG).await.unwrap();
    let token = present(store, n1, &by_cas).await.cas;
    assert_eq!(
        store.cas(n1, &by_cas, b"", LONG, token).await.unwrap(),
        CasOutcome::Stored
    );
    stored(
        store
            .write(n1, &by_write, b"", LONG, Precondition::Absent)
            .await
            .unwrap(),
        "write of an empty value",
    );
    store.append(n1, &by_append, b"", LONG).await.unwrap();

    for k in [&by_set, &by_add, &by_cas, &by_write, &by_append] {
        assert_eq!(
            value(store, n1, k).await.as_deref(),
            Some(&b""[..]),
            "get {k}"
        );
        let (item, _) = store
            .get_with_ttl(n1, k)
            .await
            .unwrap()
            .expect("get_with_ttl");
        assert!(item.value.is_empty(), "get_with_ttl {k}");
        let item = store.get_and_touch(n1, k, LONG).await.unwrap();
        assert_eq!(
            item.map(|item| item.value),
            Some(Vec::new()),
            "get_and_touch {k}"
        );
    }
    store.append(n1, &by_set, b"appended", LONG).await.unwrap();
    assert_eq!(value(store, n1, &by_set).await.unwrap(), b"appended");
}

/// Values are bytes, not text: every byte value, line breaks, NUL and bytes that
/// look like protocol lines come back exactly, through every write (`set`, `add`,
/// `cas`, `write`, `set_many`, `write_many`, `append`).
pub async fn binary_values_round_trip<F: StoreFixture>() {
    let s = start::<F>(1).await;
    let (store, n1) = (&*s.store, s.node(0));
    let every_byte: Vec<u8> = (0..=255).collect();
    let values: [&[u8]; 6] = [
        &every_byte,
        b"\r\nEND\r\n",
        b"\0",
        b"VALUE k 0 5\r\nhello\r\nEND\r\n",
        b"\r\n",
        b"\xff\xfe\x00\x01 \t\n",
    ];

    for (index, value_bytes) in values.iter().enumerate() {
        let [by_set, by_add, by_cas, by_write, by_set_many, by_write_many] =
            ["set", "add", "cas", "write", "set-many", "write-many"]
                .map(|name| key(&format!("{name}-{index}")));
        store.set(n1, &by_set, value_bytes, LONG).await.unwrap();
        assert_eq!(
            store.add(n1, &by_add, value_bytes, LONG).await.unwrap(),
            AddOutcome::Stored
        );
        store.set(n1, &by_cas, b"plain", LONG).await.unwrap();
        let token = present(store, n1, &by_cas).await.cas;
        assert_eq!(
            store
                .cas(n1, &by_cas, value_bytes, LONG, token)
                .await
                .unwrap(),
            CasOutcome::Stored
        );
        stored(
            store
                .write(n1, &by_write, value_bytes, LONG, Precondition::None)
                .await
                .unwrap(),
            "write",
        );
        let set_items = [SetItem {
            key: &by_set_many,
            value: value_bytes,
            ttl: LONG,
        }];
        assert_eq!(store.set_many(n1, &set_items).await, [Ok(())]);
        let write_items = [WriteItem {
            key: &by_write_many,
            value: value_bytes,
            ttl: LONG,
            precondition: Precondition::Absent,
        }];
        let results = store.write_many(n1, &write_items).await;
        stored(results[0].clone().unwrap(), "write_many");

        for k in [
            &by_set,
            &by_add,
            &by_cas,
            &by_write,
            &by_set_many,
            &by_write_many,
        ] {
            assert_eq!(
                value(store, n1, k).await.as_deref(),
                Some(*value_bytes),
                "{k}"
            );
        }
    }

    let appended = key("appended");
    for value_bytes in values {
        store
            .append(n1, &appended, value_bytes, LONG)
            .await
            .unwrap();
    }
    assert_eq!(value(store, n1, &appended).await.unwrap(), values.concat());
}

/// Keys of [`MAX_KEY_LEN`] bytes, made of every printable character a
/// [`StoreKey`] allows, work with every operation, and two of them that differ
/// only in their last byte are two items; so does a key of one byte.
pub async fn keys_of_the_maximum_length_work<F: StoreFixture>() {
    let s = start::<F>(1).await;
    let (store, n1) = (&*s.store, s.node(0));
    let printable: Vec<u8> = (b'!'..=b'~').collect();
    let text: String = printable
        .iter()
        .cycle()
        .take(MAX_KEY_LEN)
        .map(|&byte| char::from(byte))
        .collect();
    let long = key(&text);
    let twin = key(&format!("{}#", &text[..MAX_KEY_LEN - 1]));
    assert_ne!(long, twin);
    assert_eq!(
        (long.as_str().len(), twin.as_str().len()),
        (MAX_KEY_LEN, MAX_KEY_LEN)
    );
    let short = key("k");

    for (k, bytes) in [(&long, &b"long"[..]), (&twin, b"twin"), (&short, b"short")] {
        assert_eq!(
            store.add(n1, k, bytes, LONG).await.unwrap(),
            AddOutcome::Stored,
            "add {k}"
        );
    }
    for (k, bytes) in [(&long, &b"long"[..]), (&twin, b"twin"), (&short, b"short")] {
        assert_eq!(value(store, n1, k).await.as_deref(), Some(bytes), "{k}");
    }

    let token = present(store, n1, &long).await.cas;
    assert_eq!(
        store.cas(n1, &long, b"cas", LONG, token).await.unwrap(),
        CasOutcome::Stored
    );
    let returned = stored(
        store
            .write(n1, &long, b"write", LONG, Precondition::None)
            .await
            .unwrap(),
        "write",
    );
    store.append(n1, &long, b"+append", LONG).await.unwrap();
    let item = present(store, n1, &long).await;
    assert_eq!(item.value, b"write+append");
    if let Some(returned) = returned {
        assert_ne!(returned, item.cas, "the append changed no token");
    }
    assert_about(ttl_of(store, n1, &long).await, 60, "get_with_ttl");
    assert!(store.touch(n1, &long, Ttl::Never).await.unwrap());
    assert_eq!(ttl_of(store, n1, &long).await, Ttl::Never);
    let touched = store.get_and_touch(n1, &long, LONG).await.unwrap();
    assert_eq!(touched, Some(item.clone()), "get_and_touch");
    assert_eq!(
        store.delete_if(n1, &long, item.cas).await.unwrap(),
        CasOutcome::Stored
    );
    assert!(absent(store, n1, &long).await);
    assert_eq!(value(store, n1, &twin).await.unwrap(), b"twin");
    assert!(store.delete(n1, &twin).await.unwrap());
    assert!(absent(store, n1, &twin).await);
    assert_eq!(value(store, n1, &short).await.unwrap(), b"short");
}

/// A key of [`MAX_KEY_LEN`] bytes, numbered `index`.
fn longest_key(index: usize) -> StoreKey {
    let suffix = format!("-{index}");
    key(&format!(
        "{}{suffix}",
        "k".repeat(MAX_KEY_LEN - suffix.len())
    ))
}

/// A value of exactly [`max_item_size`](tandem_core::RemoteStore::max_item_size)
/// bytes is accepted under the longest key by every write (`set`, `add`, `cas`,
/// `write`, `set_many`, `write_many`, and an `append` that fills the item up to the
/// limit) and read back whole.
pub async fn values_of_exactly_the_max_item_size_are_stored<F: StoreFixture>() {
    let s = start::<F>(1).await;
    let (store, n1) = (&*s.store, s.node(0));
    let limit = store.max_item_size();
    let [
        by_set,
        by_add,
        by_write,
        by_set_many,
        by_write_many,
        by_append,
    ] = [0, 1, 2, 3, 4, 5].map(longest_key);

    let full = patterned(limit, 1);
    store.set(n1, &by_set, &full, LONG).await.unwrap();
    assert_eq!(value(store, n1, &by_set).await.unwrap(), full, "set");
    let token = present(store, n1, &by_set).await.cas;
    let replaced = patterned(limit, 2);
    assert_eq!(
        store
            .cas(n1, &by_set, &replaced, LONG, token)
            .await
            .unwrap(),
        CasOutcome::Stored,
        "cas"
    );
    assert_eq!(value(store, n1, &by_set).await.unwrap(), replaced, "cas");

    assert_eq!(
        store.add(n1, &by_add, &full, LONG).await.unwrap(),
        AddOutcome::Stored,
        "add"
    );
    for precondition in [Precondition::Absent, Precondition::None] {
        stored(
            store
                .write(n1, &by_write, &full, LONG, precondition)
                .await
                .unwrap(),
            "write",
        );
    }
    let set_items = [SetItem {
        key: &by_set_many,
        value: &full,
        ttl: LONG,
    }];
    assert_eq!(store.set_many(n1, &set_items).await, [Ok(())], "set_many");
    let write_items = [WriteItem {
        key: &by_write_many,
        value: &full,
        ttl: LONG,
        precondition: Precondition::None,
    }];
    let results = store.write_many(n1, &write_items).await;
    stored(results[0].clone().unwrap(), "write_many");
    store
        .append(n1, &by_append, &full[..limit - 1], LONG)
        .await
        .unwrap();
    store
        .append(n1, &by_append, &full[limit - 1..], LONG)
        .await
        .unwrap();

    for k in [&by_add, &by_write, &by_set_many, &by_write_many, &by_append] {
        let stored = value(store, n1, k).await.expect("missing");
        assert!(
            stored == full,
            "{k}: {} bytes read back, not the {limit} written",
            stored.len()
        );
    }
}

/// A value one byte over
/// [`max_item_size`](tandem_core::RemoteStore::max_item_size) is refused with
/// [`StoreError::TooLarge`] (its size and the limit) by every write, alone or in a
/// batch, and nothing is written: the key keeps its value and token, a missing key
/// stays missing, other keys are unaffected, the node stays available and serves the
/// next operation.
pub async fn values_one_byte_over_the_max_item_size_are_refused<F: StoreFixture>() {
    let s = start::<F>(1).await;
    let (store, n1) = (&*s.store, s.node(0));
    let limit = store.max_item_size();
    let [k, missing, neighbour] = ["k", "missing", "neighbour"].map(key);
    store.set(n1, &k, b"good copy", LONG).await.unwrap();
    store.set(n1, &neighbour, b"neighbour", LONG).await.unwrap();
    let before = present(store, n1, &k).await;
    let neighbour_before = present(store, n1, &neighbour).await;

    let over = vec![b'x'; limit + 1];
    let too_large = Err(StoreError::TooLarge {
        size: limit + 1,
        limit,
    });
    assert_eq!(store.set(n1, &k, &over, LONG).await, too_large, "set");
    assert_eq!(
        store.add(n1, &missing, &over, LONG).await.map(|_| ()),
        too_large,
        "add"
    );
    assert_eq!(
        store.cas(n1, &k, &over, LONG, before.cas).await.map(|_| ()),
        too_large,
        "cas"
    );
    for (target, precondition) in [
        (&k, Precondition::None),
        (&missing, Precondition::Absent),
        (&k, Precondition::Cas(before.cas)),
    ] {
        assert_eq!(
            store
                .write(n1, target, &over, LONG, precondition)
                .await
                .map(|_| ()),
            too_large,
            "write {precondition:?}"
        );
    }
    let set_items = [SetItem {
        key: &k,
        value: &over,
        ttl: LONG,
    }];
    assert_eq!(
        store.set_many(n1, &set_items).await,
        std::slice::from_ref(&too_large),
        "set_many"
    );
    let write_items = [WriteItem {
        key: &missing,
        value: &over,
        ttl: LONG,
        precondition: Precondition::Absent,
    }];
    let results: Vec<_> = store
        .write_many(n1, &write_items)
        .await
        .into_iter()
        .map(|result| result.map(|_| ()))
        .collect();
    assert_eq!(results, std::slice::from_ref(&too_large), "write_many");
    assert_eq!(
        store.append(n1, &missing, &over, LONG).await,
        too_large,
        "append to a missing key"
    );

    assert_eq!(
        present(store, n1, &k).await,
        before,
        "a refused write changed the item"
    );
    assert!(
        absent(store, n1, &missing).await,
        "a refused write created the key"
    );
    assert_eq!(present(store, n1, &neighbour).await, neighbour_before);
    assert!(store.is_available(n1), "a refused value took the node down");
    store.set(n1, &k, b"next", LONG).await.unwrap();
    assert_eq!(value(store, n1, &k).await.unwrap(), b"next");
}

/// An `append` that would grow an item well past
/// [`max_item_size`](tandem_core::RemoteStore::max_item_size) (by 1 KiB) fails with
/// [`StoreError::TooLarge`] and changes nothing; so does one whose value alone is
/// over the limit, on a missing or a present key. (Where exactly between the limit
/// and that an append starts to fail is left to the store: memcached's bound is its
/// `-I`, a few hundred bytes above the limit under a short key.)
pub async fn appends_past_the_max_item_size_are_refused<F: StoreFixture>() {
    let s = start::<F>(1).await;
    let (store, n1) = (&*s.store, s.node(0));
    let limit = store.max_item_size();
    let [full, small, missing] = ["full", "small", "missing"].map(key);
    store
        .set(n1, &full, &patterned(limit, 3), LONG)
        .await
        .unwrap();
    store.set(n1, &small, b"small", LONG).await.unwrap();
    let full_before = present(store, n1, &full).await;
    let small_before = present(store, n1, &small).await;

    let refused = |result: Result<(), StoreError>, what: &str| match result {
        Err(StoreError::TooLarge {
            size,
            limit: reported,
        }) => {
            assert_eq!(reported, limit, "{what}: the limit reported");
            assert!(size > limit, "{what}: a size of {size} is not over {limit}");
        }
        other => panic!("{what}: expected TooLarge, got {other:?}"),
    };
    refused(
        store.append(n1, &full, &[b'y'; 1024], LONG).await,
        "1 KiB appended to a full item",
    );
    refused(
        store.append(n1, &small, &vec![b'z'; limit + 1], LONG).await,
        "a value over the limit appended to a small item",
    );
    refused(
        store
            .append(n1, &missing, &vec![b'z'; limit + 1], LONG)
            .await,
        "a value over the limit appended to a missing key",
    );

    assert!(
        present(store, n1, &full).await == full_before,
        "the full item changed"
    );
    assert_eq!(present(store, n1, &small).await, small_before);
    assert!(absent(store, n1, &missing).await);
    assert!(store.is_available(n1));
}

/// `append` to a missing key stores the value with the TTL given; to a present key
/// it adds the bytes at the end, changes the token and keeps the item's TTL (a timed
/// one and [`Ttl::Never`] alike), ignoring the TTL given.
pub async fn append_creates_with_the_ttl_then_extends_keeping_it<F: StoreFixture>() {
    let s = start::<F>(1).await;
    let (store, n1) = (&*s.store, s.node(0));
    let [feed, forever] = ["feed", "forever"].map(key);

    store.append(n1, &feed, b"first;", LONG).await.unwrap();
    let (created, ttl) = store.get_with_ttl(n1, &feed).await.unwrap().unwrap();
    assert_eq!(created.value, b"first;");
    assert_about(ttl, 60, "created by append");

    store
        .append(
            n1,
            &feed,
            b"second;",
            Ttl::After(std::time::Duration::from_secs(600)),
        )
        .await
        .unwrap();
    let (appended, ttl) = store.get_with_ttl(n1, &feed).await.unwrap().unwrap();
    assert_eq!(appended.value, b"first;second;");
    assert_ne!(appended.cas, created.cas, "an append changes the token");
    assert_about(ttl, 60, "after an append with another TTL");

    store.set(n1, &forever, b"x", Ttl::Never).await.unwrap();
    store.append(n1, &forever, b"y", LONG).await.unwrap();
    let (item, ttl) = store.get_with_ttl(n1, &forever).await.unwrap().unwrap();
    assert_eq!((item.value.as_slice(), ttl), (&b"xy"[..], Ttl::Never));
}
