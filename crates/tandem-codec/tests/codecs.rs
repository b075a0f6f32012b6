//! Sessions through every codec and the envelope.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use proptest::prelude::*;
use serde::{Deserialize, Serialize};
use speedy::{Readable, Writable};
use tandem_codec::{JsonCodec, MsgpackCodec, PostcardCodec, SpeedyCodec};
use tandem_core::{
    AttributeError, CodecError, CodecId, Decodes, Encodes, EnvelopeError, NodeId, Session,
    SessionId, envelope,
};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Readable, Writable)]
struct Cart {
    items: BTreeMap<String, u32>,
    coupon: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Readable, Writable)]
struct User {
    id: u64,
    name: String,
    roles: Vec<String>,
}

fn cart() -> Cart {
    Cart {
        items: [("apple".to_owned(), 3), ("pear".to_owned(), 1)].into(),
        coupon: Some("WINTER".to_owned()),
    }
}

fn user() -> User {
    User {
        id: 42,
        name: "Ann Example".to_owned(),
        roles: vec!["customer".to_owned(), "beta".to_owned()],
    }
}

fn new_session<C: tandem_core::Codec>() -> Session<C> {
    let id = SessionId::generate(&NodeId::new("n1").unwrap(), None);
    Session::new(id, SystemTime::now(), Some(Duration::from_secs(1800)))
}

/// Fills a session, stores it as an envelope, reads it back and checks every value.
fn round_trip<C>()
where
    C: Encodes<Cart> + Decodes<Cart> + Encodes<User> + Decodes<User>,
    C: Encodes<str> + Decodes<String> + Encodes<u64> + Decodes<u64> + Encodes<bool> + Decodes<bool>,
{
    let mut session = new_session::<C>();
    session.insert("cart", &cart()).unwrap();
    session.insert("user", &user()).unwrap();
    session.insert("csrf", "d41d8cd98f00b204").unwrap();
    session.insert("visits", &7u64).unwrap();
    session.insert("admin", &false).unwrap();

    let bytes = envelope::encode(&session);
    assert_eq!(envelope::header(&bytes).unwrap().codec, C::ID);
    let loaded: Session<C> = envelope::decode(session.id().clone(), &bytes).unwrap();

    assert_eq!(loaded.get::<Cart>("cart").unwrap(), Some(cart()));
    assert_eq!(loaded.get::<User>("user").unwrap(), Some(user()));
    assert_eq!(
        loaded.get::<String>("csrf").unwrap().as_deref(),
        Some("d41d8cd98f00b204")
    );
    assert_eq!(loaded.get::<u64>("visits").unwrap(), Some(7));
    assert_eq!(loaded.get::<bool>("admin").unwrap(), Some(false));
    assert_eq!(loaded.created(), session.created());
    assert_eq!(loaded.max_inactive(), Some(Duration::from_secs(1800)));
    assert!(!loaded.is_modified());

    // Writing the same values again is not a change.
    let mut again = loaded.clone();
    assert!(!again.insert("cart", &cart()).unwrap());
    assert!(!again.insert("visits", &7u64).unwrap());
    assert!(!again.is_modified());
    assert!(again.insert("visits", &8u64).unwrap());
    assert_eq!(
        again
            .changes()
            .map(|change| change.name)
            .collect::<Vec<_>>(),
        ["visits"]
    );
}

#[test]
fn a_session_round_trips_through_speedy() {
    round_trip::<SpeedyCodec>();
}

#[test]
fn a_session_round_trips_through_json() {
    round_trip::<JsonCodec>();
}

#[test]
fn a_session_round_trips_through_msgpack() {
    round_trip::<MsgpackCodec>();
}

#[test]
fn a_session_round_trips_through_postcard() {
    round_trip::<PostcardCodec>();
}

#[test]
fn msgpack_attributes_carry_field_names() {
    let bytes = <MsgpackCodec as Encodes<User>>::encode(&user()).unwrap();
    assert!(bytes.windows(4).any(|window| window == b"name"));
    assert!(bytes.windows(5).any(|window| window == b"roles"));
    // A reader that takes the fields positionally sees a map, not an array.
    assert_eq!(bytes[0] & 0xf0, 0x80, "fixmap");
}

#[test]
fn postcard_is_the_most_compact_serde_format() {
    let postcard = <PostcardCodec as Encodes<User>>::encode(&user()).unwrap();
    let msgpack = <MsgpackCodec as Encodes<User>>::encode(&user()).unwrap();
    let json = <JsonCodec as Encodes<User>>::encode(&user()).unwrap();
    assert!(postcard.len() < msgpack.len(), "{postcard:?}");
    assert!(msgpack.len() < json.len());
}

#[test]
fn json_attributes_are_plain_json() {
    let mut session = new_session::<JsonCodec>();
    session.insert("user", &user()).unwrap();
    let stored = session.value("user").unwrap();
    assert_eq!(stored.codec(), CodecId::JSON);
    let json: serde_json::Value = serde_json::from_slice(stored.bytes()).unwrap();
    assert_eq!(json["name"], "Ann Example");
}

#[test]
fn speedy_is_more_compact_than_json() {
    let mut speedy = new_session::<SpeedyCodec>();
    let mut json = new_session::<JsonCodec>();
    speedy.insert("user", &user()).unwrap();
    json.insert("user", &user()).unwrap();
    assert!(envelope::encode(&speedy).len() < envelope::encode(&json).len());
}

#[test]
fn an_envelope_written_by_one_codec_is_a_mismatch_for_the_other() {
    let mut speedy = new_session::<SpeedyCodec>();
    speedy.insert("cart", &cart()).unwrap();
    let bytes = envelope::encode(&speedy);
    let error = envelope::decode::<JsonCodec>(speedy.id().clone(), &bytes).unwrap_err();
    assert_eq!(
        error,
        EnvelopeError::CodecMismatch {
            written_by: CodecId::SPEEDY,
            reader: CodecId::JSON
        }
    );
    assert_eq!(
        error.to_string(),
        "session was written by speedy (codec 1), which json (codec 2) cannot read"
    );

    let mut json = new_session::<JsonCodec>();
    json.insert("cart", &cart()).unwrap();
    let bytes = envelope::encode(&json);
    assert!(matches!(
        envelope::decode::<SpeedyCodec>(json.id().clone(), &bytes),
        Err(EnvelopeError::CodecMismatch {
            written_by: CodecId::JSON,
            reader: CodecId::SPEEDY
        })
    ));
}

#[test]
fn reading_bytes_of_the_other_codec_is_a_mismatch() {
    let bytes = <JsonCodec as Encodes<Cart>>::encode(&cart()).unwrap();
    let error =
        <SpeedyCodec as Decodes<Cart>>::decode_written_by(CodecId::JSON, &bytes).unwrap_err();
    assert_eq!(
        error,
        CodecError::Mismatch {
            written_by: CodecId::JSON,
            reader: CodecId::SPEEDY
        }
    );
}

#[test]
fn a_wrong_type_is_an_error_for_that_attribute_only() {
    fn check<C>()
    where
        C: Encodes<Cart> + Decodes<User> + Decodes<Cart> + Encodes<str> + Decodes<String>,
    {
        let mut session = new_session::<C>();
        session.insert("cart", &cart()).unwrap();
        session.insert("name", "ann").unwrap();
        let error = session.get::<User>("cart").unwrap_err();
        assert!(
            matches!(&error, AttributeError::Codec { name, source: CodecError::Decode { .. } } if name == "cart"),
            "{error:?}"
        );
        assert_eq!(session.get::<Cart>("cart").unwrap(), Some(cart()));
        assert_eq!(
            session.get::<String>("name").unwrap().as_deref(),
            Some("ann")
        );
    }
    check::<SpeedyCodec>();
    check::<JsonCodec>();
    check::<MsgpackCodec>();
}

#[test]
fn postcard_may_misread_a_wrong_type_whose_shape_lines_up() {
    // Positional varints carry no types: a cart (map length, strings, numbers) reads
    // as a user (number, string, strings). The crate docs warn about this; named
    // formats and speedy's fixed-width integers catch it.
    let bytes = <PostcardCodec as Encodes<Cart>>::encode(&cart()).unwrap();
    let misread = <PostcardCodec as Decodes<User>>::decode(&bytes).unwrap();
    assert_eq!(misread.name, "apple");
}

#[test]
fn trailing_bytes_are_rejected() {
    let mut bytes = <SpeedyCodec as Encodes<u32>>::encode(&7).unwrap();
    bytes.push(0);
    assert!(<SpeedyCodec as Decodes<u32>>::decode(&bytes).is_err());
    assert!(<JsonCodec as Decodes<u32>>::decode(b"7 8").is_err());
    let mut bytes = <MsgpackCodec as Encodes<User>>::encode(&user()).unwrap();
    bytes.push(0);
    assert!(<MsgpackCodec as Decodes<User>>::decode(&bytes).is_err());
    let mut bytes = <PostcardCodec as Encodes<User>>::encode(&user()).unwrap();
    bytes.push(0);
    assert!(<PostcardCodec as Decodes<User>>::decode(&bytes).is_err());
}

#[test]
fn a_huge_length_prefix_is_an_error_not_an_allocation() {
    // A Vec<u64> claiming 2^32-1 elements, followed by nothing.
    let bytes = u32::MAX.to_le_bytes();
    assert!(<SpeedyCodec as Decodes<Vec<u64>>>::decode(&bytes).is_err());
    assert!(<SpeedyCodec as Decodes<String>>::decode(&bytes).is_err());
    assert!(<SpeedyCodec as Decodes<Cart>>::decode(&bytes).is_err());
    // postcard: a varint of 2^63 elements.
    let varint = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f];
    assert!(<PostcardCodec as Decodes<Vec<u64>>>::decode(&varint).is_err());
    assert!(<PostcardCodec as Decodes<String>>::decode(&varint).is_err());
    // MessagePack: an array32, a bin32 and a str32 claiming 2^32-1 entries or bytes.
    for marker in [0xdd, 0xc6, 0xdb] {
        let bytes = [marker, 0xff, 0xff, 0xff, 0xff];
        assert!(<MsgpackCodec as Decodes<Vec<u64>>>::decode(&bytes).is_err());
        assert!(<MsgpackCodec as Decodes<String>>::decode(&bytes).is_err());
    }
}

#[test]
fn deeply_nested_json_is_an_error_not_a_stack_overflow() {
    let nested = "[".repeat(100_000);
    assert!(<JsonCodec as Decodes<serde_json::Value>>::decode(nested.as_bytes()).is_err());
}

/// A recursive type, to probe nesting limits.
#[derive(Debug, Serialize, Deserialize)]
enum Tree {
    Leaf,
    Node(Vec<Tree>),
}

#[test]
fn deeply_nested_msgpack_is_an_error_not_a_stack_overflow() {
    // 100,000 nested one-element arrays (fixarray of 1 = 0x91).
    let nested = vec![0x91; 100_000];
    assert!(<MsgpackCodec as Decodes<Tree>>::decode(&nested).is_err());
    // Within the bound, recursion works.
    let mut tree = Tree::Leaf;
    for _ in 0..20 {
        tree = Tree::Node(vec![tree]);
    }
    let bytes = <MsgpackCodec as Encodes<Tree>>::encode(&tree).unwrap();
    assert!(<MsgpackCodec as Decodes<Tree>>::decode(&bytes).is_ok());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(tandem_testkit::proptest_cases(2_000)))]

    #[test]
    fn random_bytes_never_panic_a_decoder(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = <SpeedyCodec as Decodes<Cart>>::decode(&bytes);
        let _ = <SpeedyCodec as Decodes<User>>::decode(&bytes);
        let _ = <SpeedyCodec as Decodes<String>>::decode(&bytes);
        let _ = <JsonCodec as Decodes<Cart>>::decode(&bytes);
        let _ = <JsonCodec as Decodes<User>>::decode(&bytes);
        let _ = <MsgpackCodec as Decodes<Cart>>::decode(&bytes);
        let _ = <MsgpackCodec as Decodes<User>>::decode(&bytes);
        let _ = <MsgpackCodec as Decodes<String>>::decode(&bytes);
        let _ = <PostcardCodec as Decodes<Cart>>::decode(&bytes);
        let _ = <PostcardCodec as Decodes<User>>::decode(&bytes);
        let _ = <PostcardCodec as Decodes<String>>::decode(&bytes);
    }

    #[test]
    fn mutated_serde_values_never_panic(
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        truncate in any::<Option<prop::sample::Index>>(),
    ) {
        fn mutate(mut bytes: Vec<u8>, flips: &[(prop::sample::Index, u8)], truncate: Option<prop::sample::Index>) -> Vec<u8> {
            for (at, value) in flips {
                let at = at.index(bytes.len());
                bytes[at] = *value;
            }
            if let Some(cut) = truncate {
                bytes.truncate(cut.index(bytes.len() + 1));
            }
            bytes
        }
        let msgpack = mutate(<MsgpackCodec as Encodes<User>>::encode(&user()).unwrap(), &flips, truncate);
        let _ = <MsgpackCodec as Decodes<User>>::decode(&msgpack);
        let _ = <MsgpackCodec as Decodes<Cart>>::decode(&msgpack);
        let postcard = mutate(<PostcardCodec as Encodes<User>>::encode(&user()).unwrap(), &flips, truncate);
        if let Ok(decoded) = <PostcardCodec as Decodes<User>>::decode(&postcard) {
            // Positional and exact: what decodes re-encodes to the same bytes.
            prop_assert_eq!(<PostcardCodec as Encodes<User>>::encode(&decoded).unwrap(), postcard);
        }
    }

    #[test]
    fn mutated_speedy_values_never_panic(
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
    ) {
        let mut bytes = <SpeedyCodec as Encodes<User>>::encode(&user()).unwrap();
        for (at, value) in flips {
            let at = at.index(bytes.len());
            bytes[at] = value;
        }
        if let Ok(decoded) = <SpeedyCodec as Decodes<User>>::decode(&bytes) {
            // What decodes is exactly what the bytes say: re-encoding gives them back.
            prop_assert_eq!(<SpeedyCodec as Encodes<User>>::encode(&decoded).unwrap(), bytes);
        }
    }

    #[test]
    fn values_round_trip_through_every_codec(
        id in any::<u64>(),
        name in ".{0,40}",
        roles in proptest::collection::vec("[a-z]{0,10}", 0..5),
    ) {
        let user = User { id, name, roles };
        let speedy = <SpeedyCodec as Encodes<User>>::encode(&user).unwrap();
        prop_assert_eq!(<SpeedyCodec as Decodes<User>>::decode(&speedy).unwrap(), user.clone());
        let json = <JsonCodec as Encodes<User>>::encode(&user).unwrap();
        prop_assert_eq!(<JsonCodec as Decodes<User>>::decode(&json).unwrap(), user.clone());
        let msgpack = <MsgpackCodec as Encodes<User>>::encode(&user).unwrap();
        prop_assert_eq!(<MsgpackCodec as Decodes<User>>::decode(&msgpack).unwrap(), user.clone());
        let postcard = <PostcardCodec as Encodes<User>>::encode(&user).unwrap();
        prop_assert_eq!(<PostcardCodec as Decodes<User>>::decode(&postcard).unwrap(), user);
    }
}
