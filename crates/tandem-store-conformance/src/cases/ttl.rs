//! TTLs: what `get_with_ttl` reports, what each write and touch sets, `Ttl::Never`,
//! very long lifetimes, expiry.
//!
//! Stores count whole seconds and may keep a coarse clock (memcached's ticks once a
//! second, so an item given 1 s may be gone at once and one given 2 s lives between 1
//! and 2 s). So the cases never assert that a short-lived item is still there after
//! some time: only that it is gone well after its TTL, and that items given a long
//! TTL, or touched to one, are still there then.

use std::time::Duration;

use tandem_core::{
    AddOutcome, CasOutcome, CasToken, Precondition, SetItem, Ttl, WriteItem, WriteOutcome,
};

use crate::StoreFixture;
use crate::support::{LONG, absent, assert_about, key, present, start, stored, ttl_of, value};

/// How long the expiry cases wait: well past a TTL of 1 s, and past one of 2 s,
/// whatever the store's clock resolution.
const PAST_EXPIRY: Duration = Duration::from_millis(2500);

/// `get_with_ttl` reads the item `get` reads, with [`Ttl::Never`] for an item that
/// never expires and the time left (at most the TTL given, about that much) for a
/// timed one; `None` for a missing key.
pub async fn get_with_ttl_reports_the_remaining_lifetime<F: StoreFixture>() {
    let s = start::<F>(1).await;
    let (store, n1) = (&*s.store, s.node(0));
    let [forever, timed, missing] = ["forever", "timed", "missing"].map(key);
    store.set(n1, &forever, b"f", Ttl::Never).await.unwrap();
    store.set(n1, &timed, b"t", LONG).await.unwrap();

    let (item, ttl) = store.get_with_ttl(n1, &forever).await.unwrap().unwrap();
    assert_eq!(item, present(store, n1, &forever).await);
    assert_eq!(ttl, Ttl::Never);
    let (item, ttl) = store.get_with_ttl(n1, &timed).await.unwrap().unwrap();
    assert_eq!(item, present(store, n1, &timed).await);
    assert_about(ttl, 60, "a 60 s item");
    assert_eq!(store.get_with_ttl(n1, &missing).await.unwrap(), None);
}

/// Every write sets the TTL it is given, replacing the item's: `set`, `add`, `cas`,
/// `write` (each precondition), `touch` and `get_and_touch`, from a timed TTL to
/// [`Ttl::Never`] and back, longer and shorter.
pub async fn every_write_sets_the_ttl_it_is_given<F: StoreFixture>() {
    let s = start::<F>(1).await;
    let (store, n1) = (&*s.store, s.node(0));
    let [k, added, written] = ["k", "added", "written"].map(key);
    let ten_minutes = Ttl::After(Duration::from_secs(600));

    store.set(n1, &k, b"v", Ttl::Never).await.unwrap();
    assert_eq!(ttl_of(store, n1, &k).await, Ttl::Never, "set Never");
    store.set(n1, &k, b"v", LONG).await.unwrap();
    assert_about(ttl_of(store, n1, &k).await, 60, "set 60 s over Never");
    store.set(n1, &k, b"v", ten_minutes).await.unwrap();
    assert_about(ttl_of(store, n1, &k).await, 600, "set 600 s over 60 s");
    store.set(n1, &k, b"v", LONG).await.unwrap();
    assert_about(ttl_of(store, n1, &k).await, 60, "set 60 s over 600 s");

    assert_eq!(
        store.add(n1, &added, b"v", ten_minutes).await.unwrap(),
        AddOutcome::Stored
    );
    assert_about(ttl_of(store, n1, &added).await, 600, "add");

    let token = present(store, n1, &k).await.cas;
    assert_eq!(
        store.cas(n1, &k, b"v", ten_minutes, token).await.unwrap(),
        CasOutcome::Stored
    );
    assert_about(ttl_of(store, n1, &k).await, 600, "cas");
    stored(
        store
            .write(n1, &k, b"v", Ttl::Never, Precondition::None)
            .await
            .unwrap(),
        "write None",
    );
    assert_eq!(ttl_of(store, n1, &k).await, Ttl::Never, "write None");
    let token = present(store, n1, &k).await.cas;
    stored(
        store
            .write(n1, &k, b"v", LONG, Precondition::Cas(token))
            .await
            .unwrap(),
        "write Cas",
    );
    assert_about(ttl_of(store, n1, &k).await, 60, "write Cas");
    stored(
        store
            .write(n1, &written, b"v", ten_minutes, Precondition::Absent)
            .await
            .unwrap(),
        "write Absent",
    );
    assert_about(ttl_of(store, n1, &written).await, 600, "write Absent");

    assert!(store.touch(n1, &k, ten_minutes).await.unwrap());
    assert_about(ttl_of(store, n1, &k).await, 600, "touch to 600 s");
    assert!(store.touch(n1, &k, LONG).await.unwrap());
    assert_about(ttl_of(store, n1, &k).await, 60, "touch back to 60 s");
    assert!(store.touch(n1, &k, Ttl::Never).await.unwrap());
    assert_eq!(ttl_of(store, n1, &k).await, Ttl::Never, "touch to Never");
    assert!(store.get_and_touch(n1, &k, LONG).await.unwrap().is_some());
    assert_about(ttl_of(store, n1, &k).await, 60, "get_and_touch");
}

/// [`Ttl::Never`] is kept as "never expires" by every write and touch: `set`,
/// `add`, `cas`, `write`, `set_many`, `write_many`, `append` (creating), `touch`
/// and `get_and_touch` all leave an item that `get_with_ttl` reports as
/// [`Ttl::Never`].
pub async fn ttl_never_means_no_expiry<F: StoreFixture>() {
    let s = start::<F>(1).await;
    let (store, n1) = (&*s.store, s.node(0));
    let never = Ttl::Never;
    let [
        by_set,
        by_add,
        by_cas,
        by_write,
        by_set_many,
        by_write_many,
        by_append,
        by_touch,
        by_gat,
    ] = [
        "set",
        "add",
        "cas",
        "write",
        "set-many",
        "write-many",
        "append",
        "touch",
        "gat",
    ]
    .map(key);

    store.set(n1, &by_set, b"v", never).await.unwrap();
    assert_eq!(
        store.add(n1, &by_add, b"v", never).await.unwrap(),
        AddOutcome::Stored
    );
    store.set(n1, &by_cas, b"v", LONG).await.unwrap();
    let token = present(store, n1, &by_cas).await.cas;
    assert_eq!(
        store.cas(n1, &by_cas, b"v", never, token).await.unwrap(),
        CasOutcome::Stored
    );
    stored(
        store
            .write(n1, &by_write, b"v", never, Precondition::Absent)
            .await
            .unwrap(),
        "write",
    );
    let set_items = [SetItem {
        key: &by_set_many,
        value: b"v",
        ttl: never,
    }];
    assert_eq!(store.set_many(n1, &set_items).await, [Ok(())]);
    let write_items = [WriteItem {
        key: &by_write_many,
        value: b"v",
        ttl: never,
        precondition: Precondition::None,
    }];
    stored(
        store.write_many(n1, &write_items).await[0].clone().unwrap(),
        "write_many",
    );
    store.append(n1, &by_append, b"v", never).await.unwrap();
    store.set(n1, &by_touch, b"v", LONG).await.unwrap();
    assert!(store.touch(n1, &by_touch, never).await.unwrap());
    store.set(n1, &by_gat, b"v", LONG).await.unwrap();
    assert!(
        store
            .get_and_touch(n1, &by_gat, never)
            .await
            .unwrap()
            .is_some()
    );

    for k in [
        &by_set,
        &by_add,
        &by_cas,
        &by_write,
        &by_set_many,
        &by_write_many,
        &by_append,
        &by_touch,
        &by_gat,
    ] {
        assert_eq!(ttl_of(store, n1, k).await, Ttl::Never, "{k}");
    }
}

/// Very long lifetimes are kept, never turned into "expired at once" or "never":
/// 31 days (beyond memcached's 30-day relative limit), a year, `u64::MAX` seconds
/// and [`Duration::MAX`] (which stores count as `u32::MAX` seconds), through `set`,
/// `add`, `write`, `touch` and `get_and_touch`.
pub async fn long_ttls_are_kept<F: StoreFixture>() {
    let s = start::<F>(1).await;
    let (store, n1) = (&*s.store, s.node(0));
    let day = 24 * 3600;
    let thirty_one_days = Ttl::After(Duration::from_secs(31 * day));
    let huge = Ttl::After(Duration::from_secs(u64::MAX));
    let max = Ttl::After(Duration::MAX);
    let [by_set, by_add, by_write, by_touch, by_gat] =
        ["set", "add", "write", "touch", "gat"].map(key);

    let far = |ttl: Ttl, what: &str| match ttl {
        Ttl::After(left) => assert!(
            left > Duration::from_secs(365 * day),
            "{what}: only {left:?} left"
        ),
        Ttl::Never => panic!("{what}: a finite TTL turned into Never"),
    };

    store.set(n1, &by_set, b"v", thirty_one_days).await.unwrap();
    assert_eq!(value(store, n1, &by_set).await.unwrap(), b"v", "31 days");
    assert_about(ttl_of(store, n1, &by_set).await, 31 * day, "31 days");
    store
        .set(
            n1,
            &by_set,
            b"v",
            Ttl::After(Duration::from_secs(365 * day)),
        )
        .await
        .unwrap();
    assert_about(ttl_of(store, n1, &by_set).await, 365 * day, "a year");

    assert_eq!(
        store.add(n1, &by_add, b"v", huge).await.unwrap(),
        AddOutcome::Stored
    );
    assert_eq!(value(store, n1, &by_add).await.unwrap(), b"v", "u64::MAX s");
    far(ttl_of(store, n1, &by_add).await, "add for u64::MAX s");

    stored(
        store
            .write(n1, &by_write, b"v", max, Precondition::None)
            .await
            .unwrap(),
        "write for Duration::MAX",
    );
    assert_eq!(value(store, n1, &by_write).await.unwrap(), b"v");
    far(
        ttl_of(store, n1, &by_write).await,
        "write for Duration::MAX",
    );

    store.set(n1, &by_touch, b"v", LONG).await.unwrap();
    assert!(store.touch(n1, &by_touch, huge).await.unwrap());
    far(ttl_of(store, n1, &by_touch).await, "touch to u64::MAX s");
    store.set(n1, &by_gat, b"v", LONG).await.unwrap();
    assert!(
        store
            .get_and_touch(n1, &by_gat, max)
            .await
            .unwrap()
            .is_some()
    );
    far(
        ttl_of(store, n1, &by_gat).await,
        "get_and_touch to Duration::MAX",
    );
}

/// Items given 1 s, by `set`, `add`, `write`, `set_many`, or shortened to 1 s by
/// `touch`, are gone 2.5 s later, to every operation: reads find nothing, `touch`
/// and `delete` answer `false`, tokens find `NotFound`, `add` stores again and
/// `append` starts a new item. Items given [`Ttl::Never`] or a long TTL are still
/// there.
pub async fn short_ttls_expire<F: StoreFixture>() {
    let s = start::<F>(1).await;
    let (store, n1) = (&*s.store, s.node(0));
    let one_second = Ttl::After(Duration::from_secs(1));
    let [by_set, by_add, by_write, by_set_many, by_touch, never, long] =
        ["set", "add", "write", "set-many", "touch", "never", "long"].map(key);

    store.set(n1, &by_touch, b"v", LONG).await.unwrap();
    store.set(n1, &never, b"never", Ttl::Never).await.unwrap();
    store.set(n1, &long, b"long", LONG).await.unwrap();
    let touch_token = present(store, n1, &by_touch).await.cas;
    assert!(store.touch(n1, &by_touch, one_second).await.unwrap());
    store.set(n1, &by_set, b"v", one_second).await.unwrap();
    assert_eq!(
        store.add(n1, &by_add, b"v", one_second).await.unwrap(),
        AddOutcome::Stored
    );
    let write_token = stored(
        store
            .write(n1, &by_write, b"v", one_second, Precondition::Absent)
            .await
            .unwrap(),
        "write",
    );
    let set_items = [SetItem {
        key: &by_set_many,
        value: b"v",
        ttl: one_second,
    }];
    assert_eq!(store.set_many(n1, &set_items).await, [Ok(())]);

    tokio::time::sleep(PAST_EXPIRY).await;

    for k in [&by_set, &by_add, &by_write, &by_set_many, &by_touch] {
        assert_eq!(store.get(n1, k).await.unwrap(), None, "get {k}");
        assert_eq!(
            store.get_with_ttl(n1, k).await.unwrap(),
            None,
            "get_with_ttl {k}"
        );
        assert_eq!(
            store.get_and_touch(n1, k, LONG).await.unwrap(),
            None,
            "get_and_touch {k}"
        );
        assert!(!store.touch(n1, k, LONG).await.unwrap(), "touch {k}");
    }
    assert!(!store.delete(n1, &by_set).await.unwrap(), "delete");
    assert_eq!(
        store
            .cas(n1, &by_touch, b"x", LONG, touch_token)
            .await
            .unwrap(),
        CasOutcome::NotFound,
        "cas with the token it had"
    );
    let token = write_token.unwrap_or(CasToken(u64::MAX));
    assert_eq!(
        store
            .write(n1, &by_write, b"x", LONG, Precondition::Cas(token))
            .await
            .unwrap(),
        WriteOutcome::NotFound,
        "write over the token it had"
    );
    assert_eq!(
        store.delete_if(n1, &by_write, token).await.unwrap(),
        CasOutcome::NotFound,
        "delete_if with the token it had"
    );
    assert_eq!(
        store.add(n1, &by_add, b"again", LONG).await.unwrap(),
        AddOutcome::Stored,
        "add over an expired item"
    );
    assert_eq!(value(store, n1, &by_add).await.unwrap(), b"again");
    store
        .append(n1, &by_set_many, b"fresh", LONG)
        .await
        .unwrap();
    assert_eq!(
        value(store, n1, &by_set_many).await.unwrap(),
        b"fresh",
        "append to an expired item"
    );
    assert!(absent(store, n1, &by_set).await);

    assert_eq!(value(store, n1, &never).await.unwrap(), b"never");
    assert_eq!(value(store, n1, &long).await.unwrap(), b"long");
}

/// `touch` and `get_and_touch` extend an item's life: two items given 2 s and
/// touched at once to 60 s report about 60 s left and are still there 2.5 s later
/// (with their values), when an item given 1 s and not touched is gone.
pub async fn touch_and_get_and_touch_extend_the_ttl<F: StoreFixture>() {
    let s = start::<F>(1).await;
    let (store, n1) = (&*s.store, s.node(0));
    let [touched, gat, untouched] = ["touched", "gat", "untouched"].map(key);
    let two_seconds = Ttl::After(Duration::from_secs(2));

    store
        .set(n1, &touched, b"touched", two_seconds)
        .await
        .unwrap();
    store.set(n1, &gat, b"gat", two_seconds).await.unwrap();
    store
        .set(
            n1,
            &untouched,
            b"untouched",
            Ttl::After(Duration::from_secs(1)),
        )
        .await
        .unwrap();
    assert!(store.touch(n1, &touched, LONG).await.unwrap(), "touch");
    let read = store.get_and_touch(n1, &gat, LONG).await.unwrap();
    assert_eq!(
        read.map(|item| item.value),
        Some(b"gat".to_vec()),
        "get_and_touch"
    );
    assert_about(ttl_of(store, n1, &touched).await, 60, "touched");
    assert_about(ttl_of(store, n1, &gat).await, 60, "get_and_touch");

    tokio::time::sleep(PAST_EXPIRY).await;

    assert!(
        absent(store, n1, &untouched).await,
        "the untouched item is still there"
    );
    assert_eq!(
        value(store, n1, &touched).await.as_deref(),
        Some(&b"touched"[..])
    );
    assert_eq!(value(store, n1, &gat).await.as_deref(), Some(&b"gat"[..]));
}
