//! Codec and envelope cost for a representative session: about 20 attributes, about
//! 2 KiB stored.
//!
//! Baseline: the same values written and read with plain speedy (one struct, no
//! envelope, no attribute table), so that the envelope's and each codec's overhead
//! are ratios against a figure measured in the same run.
//!
//! `encode/envelope_*` goes from typed values to stored bytes (insert every attribute
//! into a new session, then write the envelope); `decode/envelope_*` goes back (read
//! the envelope, then `get` every attribute). The `envelope_only_*` lines measure just
//! the envelope step, which is what a backup of an already-populated session costs.
//! Run with `scripts/bench-codec.sh`, which prints the ratios.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::{Duration, SystemTime};

use criterion::{Criterion, criterion_group, criterion_main};
use serde::{Deserialize, Serialize};
use speedy::{Readable, Writable};
use tandem::{
    Codec, Decodes, Encodes, JsonCodec, NodeId, Session, SessionId, SpeedyCodec, envelope,
};

#[derive(Clone, PartialEq, Debug, Serialize, Deserialize, Readable, Writable)]
struct User {
    id: u64,
    email: String,
    display_name: String,
    roles: Vec<String>,
}

#[derive(Clone, PartialEq, Debug, Serialize, Deserialize, Readable, Writable)]
struct CartLine {
    sku: String,
    quantity: u32,
    unit_price_cents: u64,
    title: String,
}

#[derive(Clone, PartialEq, Debug, Serialize, Deserialize, Readable, Writable)]
struct Address {
    name: String,
    street: String,
    city: String,
    postcode: String,
    country: String,
}

/// The 20 attribute values, as one struct for the raw-speedy baseline.
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize, Readable, Writable)]
struct Values {
    user: User,
    cart: Vec<CartLine>,
    shipping: Address,
    billing: Address,
    csrf_token: String,
    locale: String,
    currency: String,
    theme: String,
    visits: u64,
    last_order_id: Option<u64>,
    newsletter: bool,
    cookie_consent: bool,
    recently_viewed: Vec<u64>,
    search_history: Vec<String>,
    preferences: BTreeMap<String, String>,
    ab_groups: BTreeMap<String, u32>,
    flash_message: Option<String>,
    login_time_ms: u64,
    referrer: String,
    wishlist: Vec<String>,
}

fn values() -> Values {
    let address = |name: &str| Address {
        name: name.to_owned(),
        street: "221B Baker Street, Flat 3".to_owned(),
        city: "London".to_owned(),
        postcode: "NW1 6XE".to_owned(),
        country: "GB".to_owned(),
    };
    Values {
        user: User {
            id: 1_234_567,
            email: "ann.example@example.com".to_owned(),
            display_name: "Ann Example".to_owned(),
            roles: vec!["customer".to_owned(), "beta-tester".to_owned()],
        },
        cart: (0..6)
            .map(|i| CartLine {
                sku: format!("SKU-{:08}", 1000 + i),
                quantity: 1 + i,
                unit_price_cents: 1999 + u64::from(i) * 250,
                title: format!("Organic cotton t-shirt, size M, colour {i}"),
            })
            .collect(),
        shipping: address("Ann Example"),
        billing: address("Ann Example (billing)"),
        csrf_token: "5f2b8c1e9a7d4f3b8e6c2a1d9f0e7b3c".to_owned(),
        locale: "en-GB".to_owned(),
        currency: "GBP".to_owned(),
        theme: "dark".to_owned(),
        visits: 42,
        last_order_id: Some(987_654_321),
        newsletter: true,
        cookie_consent: true,
        recently_viewed: (0..24).map(|i| 100_000 + i * 37).collect(),
        search_history: [
            "winter jacket",
            "wool socks",
            "rain boots size 38",
            "gift card",
            "scarf",
        ]
        .map(str::to_owned)
        .to_vec(),
        preferences: [
            ("sort", "price-asc"),
            ("page_size", "48"),
            ("units", "metric"),
            ("emails", "weekly"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .into(),
        ab_groups: [
            ("checkout-v2", 1),
            ("search-ranking", 3),
            ("free-shipping-banner", 0),
        ]
        .map(|(k, v)| (k.to_owned(), v))
        .into(),
        flash_message: Some("Your address was saved.".to_owned()),
        login_time_ms: 1_763_800_000_000,
        referrer: "https://www.example.com/blog/winter-essentials?utm_source=newsletter".to_owned(),
        wishlist: (0..8).map(|i| format!("SKU-{:08}", 5000 + i)).collect(),
    }
}

/// A codec that can store every attribute of the representative session.
trait BenchCodec:
    Codec
    + Encodes<User>
    + Decodes<User>
    + Encodes<Vec<CartLine>>
    + Decodes<Vec<CartLine>>
    + Encodes<Address>
    + Decodes<Address>
    + Encodes<String>
    + Decodes<String>
    + Encodes<u64>
    + Decodes<u64>
    + Encodes<Option<u64>>
    + Decodes<Option<u64>>
    + Encodes<bool>
    + Decodes<bool>
    + Encodes<Vec<u64>>
    + Decodes<Vec<u64>>
    + Encodes<Vec<String>>
    + Decodes<Vec<String>>
    + Encodes<BTreeMap<String, String>>
    + Decodes<BTreeMap<String, String>>
    + Encodes<BTreeMap<String, u32>>
    + Decodes<BTreeMap<String, u32>>
    + Encodes<Option<String>>
    + Decodes<Option<String>>
{
}

impl BenchCodec for SpeedyCodec {}
impl BenchCodec for JsonCodec {}

fn session_id() -> SessionId {
    SessionId::generate(&NodeId::new("n1").unwrap(), None)
}

/// Typed values to stored bytes through a session and the envelope.
fn encode_session<C: BenchCodec>(id: &SessionId, v: &Values) -> Vec<u8> {
    let mut s: Session<C> = Session::new(
        id.clone(),
        SystemTime::UNIX_EPOCH,
        Some(Duration::from_secs(1800)),
    );
    let put = "benchmark attributes encode";
    s.insert("user", &v.user).expect(put);
    s.insert("cart", &v.cart).expect(put);
    s.insert("shipping", &v.shipping).expect(put);
    s.insert("billing", &v.billing).expect(put);
    s.insert("csrf_token", &v.csrf_token).expect(put);
    s.insert("locale", &v.locale).expect(put);
    s.insert("currency", &v.currency).expect(put);
    s.insert("theme", &v.theme).expect(put);
    s.insert("visits", &v.visits).expect(put);
    s.insert("last_order_id", &v.last_order_id).expect(put);
    s.insert("newsletter", &v.newsletter).expect(put);
    s.insert("cookie_consent", &v.cookie_consent).expect(put);
    s.insert("recently_viewed", &v.recently_viewed).expect(put);
    s.insert("search_history", &v.search_history).expect(put);
    s.insert("preferences", &v.preferences).expect(put);
    s.insert("ab_groups", &v.ab_groups).expect(put);
    s.insert("flash_message", &v.flash_message).expect(put);
    s.insert("login_time_ms", &v.login_time_ms).expect(put);
    s.insert("referrer", &v.referrer).expect(put);
    s.insert("wishlist", &v.wishlist).expect(put);
    envelope::encode(&s)
}

/// Stored bytes back to typed values through the envelope and a session.
fn decode_session<C: BenchCodec>(id: &SessionId, bytes: &[u8]) -> Values {
    let s: Session<C> = envelope::decode(id.clone(), bytes).expect("benchmark envelope decodes");
    fn get<C: Decodes<T>, T>(s: &Session<C>, name: &str) -> T {
        s.get(name)
            .expect("benchmark attribute decodes")
            .expect("benchmark attribute exists")
    }
    Values {
        user: get(&s, "user"),
        cart: get(&s, "cart"),
        shipping: get(&s, "shipping"),
        billing: get(&s, "billing"),
        csrf_token: get(&s, "csrf_token"),
        locale: get(&s, "locale"),
        currency: get(&s, "currency"),
        theme: get(&s, "theme"),
        visits: get(&s, "visits"),
        last_order_id: get(&s, "last_order_id"),
        newsletter: get(&s, "newsletter"),
        cookie_consent: get(&s, "cookie_consent"),
        recently_viewed: get(&s, "recently_viewed"),
        search_history: get(&s, "search_history"),
        preferences: get(&s, "preferences"),
        ab_groups: get(&s, "ab_groups"),
        flash_message: get(&s, "flash_message"),
        login_time_ms: get(&s, "login_time_ms"),
        referrer: get(&s, "referrer"),
        wishlist: get(&s, "wishlist"),
    }
}

fn codec_benches(c: &mut Criterion) {
    let v = values();
    let id = session_id();
    let raw = v.write_to_vec().expect("raw speedy encodes");
    let speedy = encode_session::<SpeedyCodec>(&id, &v);
    let json = encode_session::<JsonCodec>(&id, &v);
    assert_eq!(
        Values::read_from_buffer(&raw).expect("raw speedy decodes"),
        v
    );
    assert_eq!(decode_session::<SpeedyCodec>(&id, &speedy), v);
    assert_eq!(decode_session::<JsonCodec>(&id, &json), v);
    println!(
        "stored bytes: raw_speedy {} | envelope_speedy {} | envelope_json {}",
        raw.len(),
        speedy.len(),
        json.len()
    );

    let mut encode = c.benchmark_group("encode");
    encode.bench_function("raw_speedy", |b| {
        b.iter(|| black_box(&v).write_to_vec().expect("raw speedy encodes"))
    });
    encode.bench_function("envelope_speedy", |b| {
        b.iter(|| encode_session::<SpeedyCodec>(&id, black_box(&v)))
    });
    encode.bench_function("envelope_json", |b| {
        b.iter(|| encode_session::<JsonCodec>(&id, black_box(&v)))
    });
    let speedy_session: Session<SpeedyCodec> =
        envelope::decode(id.clone(), &speedy).expect("decodes");
    let json_session: Session<JsonCodec> = envelope::decode(id.clone(), &json).expect("decodes");
    encode.bench_function("envelope_only_speedy", |b| {
        b.iter(|| envelope::encode(black_box(&speedy_session)))
    });
    encode.bench_function("envelope_only_json", |b| {
        b.iter(|| envelope::encode(black_box(&json_session)))
    });
    encode.finish();

    let mut decode = c.benchmark_group("decode");
    decode.bench_function("raw_speedy", |b| {
        b.iter(|| Values::read_from_buffer(black_box(&raw)).expect("raw speedy decodes"))
    });
    decode.bench_function("envelope_speedy", |b| {
        b.iter(|| decode_session::<SpeedyCodec>(&id, black_box(&speedy)))
    });
    decode.bench_function("envelope_json", |b| {
        b.iter(|| decode_session::<JsonCodec>(&id, black_box(&json)))
    });
    decode.bench_function("envelope_only_speedy", |b| {
        b.iter(|| envelope::decode::<SpeedyCodec>(id.clone(), black_box(&speedy)).expect("decodes"))
    });
    decode.bench_function("envelope_only_json", |b| {
        b.iter(|| envelope::decode::<JsonCodec>(id.clone(), black_box(&json)).expect("decodes"))
    });
    decode.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = codec_benches
}
criterion_main!(benches);
