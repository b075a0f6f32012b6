//! What storing a session costs, per codec and stored-bytes layer, for three session
//! sizes: bytes stored, encode time and decode time.
//!
//! - Sizes: `small` (5 attributes, about 200 bytes stored), `medium` (20 attributes:
//!   a user, a six-line cart, two addresses, tokens, flags, lists and maps; about
//!   2 KiB) and `large` (the same 20 attributes with long lists: a 180-line cart,
//!   2,500 recently viewed ids, ...; about 50 KiB).
//! - Codecs: speedy, JSON, MessagePack, postcard.
//! - Layers: `none`, `lz4` and `zstd` (compression above the default 1 KiB
//!   threshold, so small sessions stay as they are), `aes` (AES-256-GCM) and
//!   `lz4+aes` (compression, then encryption).
//!
//! `encode/<size>/<codec>/<layer>` goes from typed values to stored bytes: insert every
//! attribute into a new session, write the envelope, seal it with the layer.
//! `decode/<size>/<codec>/<layer>` goes back: open, read the envelope, `get` every
//! attribute. Baseline: `raw_speedy`, the same values as one plain speedy struct (no
//! envelope, no attribute table, no layer), measured in the same run.
//!
//! Stored sizes are printed first, as `stored <size> <codec> <layer> <bytes>` lines.
//! Run with `scripts/bench-codec.sh`, which prints the table with ratios.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::hint::black_box;
use std::time::{Duration, SystemTime};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use serde::{Deserialize, Serialize};
use speedy::{LittleEndian, Readable, Writable};
use tandem::layers::{BlobLayer, NoLayer};
use tandem::{
    Codec, NodeId, Session, SessionId, envelope,
    model::{Decodes, Encodes},
};
use tandem_codec::{
    Compression, Encryption, EncryptionKey, JsonCodec, MsgpackCodec, PostcardCodec, SpeedyCodec,
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

/// The small session: what a logged-in visitor who has not shopped yet carries.
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize, Readable, Writable)]
struct Small {
    user_id: u64,
    csrf_token: String,
    locale: String,
    visits: u64,
    cookie_consent: bool,
}

/// The 20 attribute values of the medium and large sessions, as one struct for the
/// raw-speedy baseline.
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

fn small() -> Small {
    Small {
        user_id: 1_234_567,
        csrf_token: "5f2b8c1e9a7d4f3b8e6c2a1d9f0e7b3c".to_owned(),
        locale: "en-GB".to_owned(),
        visits: 42,
        cookie_consent: true,
    }
}

/// How long the lists of a [`Values`] are.
struct Scale {
    cart_lines: u32,
    viewed: u64,
    searches: usize,
    wishlist: u32,
    preferences: usize,
}

const MEDIUM: Scale = Scale {
    cart_lines: 6,
    viewed: 24,
    searches: 5,
    wishlist: 8,
    preferences: 4,
};

const LARGE: Scale = Scale {
    cart_lines: 180,
    viewed: 2_500,
    searches: 300,
    wishlist: 400,
    preferences: 120,
};

fn values(scale: &Scale) -> Values {
    let address = |name: &str| Address {
        name: name.to_owned(),
        street: "221B Baker Street, Flat 3".to_owned(),
        city: "London".to_owned(),
        postcode: "NW1 6XE".to_owned(),
        country: "GB".to_owned(),
    };
    let searches = [
        "winter jacket",
        "wool socks",
        "rain boots size 38",
        "gift card",
        "scarf",
    ];
    let preferences = [
        ("sort", "price-asc"),
        ("page_size", "48"),
        ("units", "metric"),
        ("emails", "weekly"),
    ];
    Values {
        user: User {
            id: 1_234_567,
            email: "ann.example@example.com".to_owned(),
            display_name: "Ann Example".to_owned(),
            roles: vec!["customer".to_owned(), "beta-tester".to_owned()],
        },
        cart: (0..scale.cart_lines)
            .map(|i| CartLine {
                sku: format!("SKU-{:08}", 1000 + i),
                quantity: 1 + i % 5,
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
        recently_viewed: (0..scale.viewed).map(|i| 100_000 + i * 37).collect(),
        search_history: (0..scale.searches)
            .map(|i| match i {
                0..5 => searches[i].to_owned(),
                _ => format!("{} {i}", searches[i % searches.len()]),
            })
            .collect(),
        preferences: (0..scale.preferences)
            .map(|i| match i {
                0..4 => (preferences[i].0.to_owned(), preferences[i].1.to_owned()),
                _ => (format!("filter_{i}"), format!("value-{}", i * 7)),
            })
            .collect(),
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
        wishlist: (0..scale.wishlist)
            .map(|i| format!("SKU-{:08}", 5000 + i))
            .collect(),
    }
}

/// A codec that can store every attribute of the benchmark sessions.
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
impl BenchCodec for MsgpackCodec {}
impl BenchCodec for PostcardCodec {}

/// Session contents that go in as attributes and come back out.
trait Shape:
    Clone + PartialEq + Debug + Writable<LittleEndian> + for<'a> Readable<'a, LittleEndian>
{
    fn fill<C: BenchCodec>(&self, session: &mut Session<C>);
    fn read<C: BenchCodec>(session: &Session<C>) -> Self;
}

const PUT: &str = "benchmark attributes encode";

fn get<C: Decodes<T>, T>(session: &Session<C>, name: &str) -> T {
    session
        .get(name)
        .expect("benchmark attribute decodes")
        .expect("benchmark attribute exists")
}

impl Shape for Small {
    fn fill<C: BenchCodec>(&self, s: &mut Session<C>) {
        s.insert("user_id", &self.user_id).expect(PUT);
        s.insert("csrf_token", &self.csrf_token).expect(PUT);
        s.insert("locale", &self.locale).expect(PUT);
        s.insert("visits", &self.visits).expect(PUT);
        s.insert("cookie_consent", &self.cookie_consent).expect(PUT);
    }

    fn read<C: BenchCodec>(s: &Session<C>) -> Small {
        Small {
            user_id: get(s, "user_id"),
            csrf_token: get(s, "csrf_token"),
            locale: get(s, "locale"),
            visits: get(s, "visits"),
            cookie_consent: get(s, "cookie_consent"),
        }
    }
}

impl Shape for Values {
    fn fill<C: BenchCodec>(&self, s: &mut Session<C>) {
        s.insert("user", &self.user).expect(PUT);
        s.insert("cart", &self.cart).expect(PUT);
        s.insert("shipping", &self.shipping).expect(PUT);
        s.insert("billing", &self.billing).expect(PUT);
        s.insert("csrf_token", &self.csrf_token).expect(PUT);
        s.insert("locale", &self.locale).expect(PUT);
        s.insert("currency", &self.currency).expect(PUT);
        s.insert("theme", &self.theme).expect(PUT);
        s.insert("visits", &self.visits).expect(PUT);
        s.insert("last_order_id", &self.last_order_id).expect(PUT);
        s.insert("newsletter", &self.newsletter).expect(PUT);
        s.insert("cookie_consent", &self.cookie_consent).expect(PUT);
        s.insert("recently_viewed", &self.recently_viewed)
            .expect(PUT);
        s.insert("search_history", &self.search_history).expect(PUT);
        s.insert("preferences", &self.preferences).expect(PUT);
        s.insert("ab_groups", &self.ab_groups).expect(PUT);
        s.insert("flash_message", &self.flash_message).expect(PUT);
        s.insert("login_time_ms", &self.login_time_ms).expect(PUT);
        s.insert("referrer", &self.referrer).expect(PUT);
        s.insert("wishlist", &self.wishlist).expect(PUT);
    }

    fn read<C: BenchCodec>(s: &Session<C>) -> Values {
        Values {
            user: get(s, "user"),
            cart: get(s, "cart"),
            shipping: get(s, "shipping"),
            billing: get(s, "billing"),
            csrf_token: get(s, "csrf_token"),
            locale: get(s, "locale"),
            currency: get(s, "currency"),
            theme: get(s, "theme"),
            visits: get(s, "visits"),
            last_order_id: get(s, "last_order_id"),
            newsletter: get(s, "newsletter"),
            cookie_consent: get(s, "cookie_consent"),
            recently_viewed: get(s, "recently_viewed"),
            search_history: get(s, "search_history"),
            preferences: get(s, "preferences"),
            ab_groups: get(s, "ab_groups"),
            flash_message: get(s, "flash_message"),
            login_time_ms: get(s, "login_time_ms"),
            referrer: get(s, "referrer"),
            wishlist: get(s, "wishlist"),
        }
    }
}

/// Typed values to stored bytes: session, envelope, layer.
fn store<C: BenchCodec, S: Shape>(layer: &dyn BlobLayer, id: &SessionId, values: &S) -> Vec<u8> {
    let mut session: Session<C> = Session::new(
        id.clone(),
        SystemTime::UNIX_EPOCH,
        Some(Duration::from_secs(1800)),
    );
    values.fill(&mut session);
    layer
        .seal(id, envelope::encode(&session))
        .expect("benchmark layer seals")
}

/// Stored bytes back to typed values: layer, envelope, session.
fn load<C: BenchCodec, S: Shape>(layer: &dyn BlobLayer, id: &SessionId, stored: &[u8]) -> S {
    let opened = layer.open(id, stored).expect("benchmark layer opens");
    let session: Session<C> =
        envelope::decode(id.clone(), &opened).expect("benchmark envelope decodes");
    S::read(&session)
}

fn layers() -> Vec<(&'static str, Box<dyn BlobLayer>)> {
    let key = || EncryptionKey::new(1, [7; EncryptionKey::LEN]);
    vec![
        ("none", Box::new(NoLayer)),
        ("lz4", Box::new(Compression::lz4())),
        ("zstd", Box::new(Compression::zstd(3))),
        ("aes", Box::new(Encryption::new(key()))),
        (
            "lz4+aes",
            Box::new((Compression::lz4(), Encryption::new(key()))),
        ),
    ]
}

fn bench_codec<C: BenchCodec, S: Shape>(
    c: &mut Criterion,
    size: &str,
    codec: &str,
    values: &S,
    id: &SessionId,
) {
    for (layer_name, layer) in layers() {
        let layer = &*layer;
        let stored = store::<C, S>(layer, id, values);
        assert_eq!(&load::<C, S>(layer, id, &stored), values);
        println!("stored {size} {codec} {layer_name} {}", stored.len());
        let name = format!("{codec}/{layer_name}");
        c.benchmark_group(format!("encode/{size}"))
            .bench_function(BenchmarkId::from_parameter(&name), |b| {
                b.iter(|| store::<C, S>(layer, id, black_box(values)))
            });
        c.benchmark_group(format!("decode/{size}"))
            .bench_function(BenchmarkId::from_parameter(&name), |b| {
                b.iter(|| load::<C, S>(layer, id, black_box(&stored)))
            });
    }
}

fn bench_size<S: Shape>(c: &mut Criterion, size: &str, values: S) {
    let id = SessionId::generate(&NodeId::new("n1").expect("valid node id"), None);
    let raw = values.write_to_vec().expect("raw speedy encodes");
    assert_eq!(
        S::read_from_buffer(&raw).expect("raw speedy decodes"),
        values
    );
    println!("stored {size} raw_speedy none {}", raw.len());
    c.benchmark_group(format!("encode/{size}"))
        .bench_function("raw_speedy", |b| {
            b.iter(|| {
                black_box(&values)
                    .write_to_vec()
                    .expect("raw speedy encodes")
            })
        });
    c.benchmark_group(format!("decode/{size}"))
        .bench_function("raw_speedy", |b| {
            b.iter(|| S::read_from_buffer(black_box(&raw)).expect("raw speedy decodes"))
        });
    bench_codec::<SpeedyCodec, S>(c, size, "speedy", &values, &id);
    bench_codec::<JsonCodec, S>(c, size, "json", &values, &id);
    bench_codec::<MsgpackCodec, S>(c, size, "msgpack", &values, &id);
    bench_codec::<PostcardCodec, S>(c, size, "postcard", &values, &id);
}

fn codec_benches(c: &mut Criterion) {
    bench_size(c, "small", small());
    bench_size(c, "medium", values(&MEDIUM));
    bench_size(c, "large", values(&LARGE));
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2));
    targets = codec_benches
}
criterion_main!(benches);
