//! Schema evolution: what each codec does when a stored attribute's type gains or
//! loses a field, as documented in the crate docs. Whatever happens, a failure stays
//! confined to the one attribute.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use speedy::{Readable, Writable};
use tandem_codec::{JsonCodec, MsgpackCodec, PostcardCodec, SpeedyCodec};
use tandem_core::{
    AttributeError, Codec, CodecError, Decodes, Encodes, NodeId, Session, SessionId, envelope,
};

/// The type as the previous release stored it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Readable, Writable)]
struct UserV1 {
    id: u64,
    name: String,
    nickname: String,
}

/// A field removed (`nickname`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Readable, Writable)]
struct UserRemoved {
    id: u64,
    name: String,
}

/// A field added, with a default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Readable, Writable)]
struct UserAddedDefault {
    id: u64,
    name: String,
    nickname: String,
    #[serde(default)]
    #[speedy(default_on_eof)]
    admin: bool,
}

/// A field added as an `Option`, without a serde default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Readable, Writable)]
struct UserAddedOption {
    id: u64,
    name: String,
    nickname: String,
    email: Option<String>,
}

/// A field added with neither a default nor an `Option`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Readable, Writable)]
struct UserAddedRequired {
    id: u64,
    name: String,
    nickname: String,
    visits: u32,
}

/// Two fields of the same type swapped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Readable, Writable)]
struct UserReordered {
    id: u64,
    nickname: String,
    name: String,
}

/// What a stored `v1()` reads as when `admin` was added with a default.
fn added_default() -> UserAddedDefault {
    UserAddedDefault {
        id: 7,
        name: "Ann Example".into(),
        nickname: "ann".into(),
        admin: false,
    }
}

fn v1() -> UserV1 {
    UserV1 {
        id: 7,
        name: "Ann Example".into(),
        nickname: "ann".into(),
    }
}

/// A session stored by the previous release: the user and a second attribute, through
/// the envelope and back as the next release would load it.
fn stored<C>() -> Session<C>
where
    C: Encodes<UserV1> + Encodes<str> + Codec,
{
    let id = SessionId::generate(&NodeId::new("n1").unwrap(), None);
    let mut session: Session<C> = Session::new(id.clone(), SystemTime::now(), None);
    session.insert("user", &v1()).unwrap();
    session.insert("locale", "en-GB").unwrap();
    envelope::decode(id, &envelope::encode(&session)).unwrap()
}

/// Reads `user` as `T` and checks that `locale` is unaffected whatever happened.
fn read<C, T>(session: &Session<C>) -> Result<Option<T>, AttributeError>
where
    C: Decodes<T> + Decodes<String>,
{
    let result = session.get::<T>("user");
    assert_eq!(
        session.get::<String>("locale").unwrap().as_deref(),
        Some("en-GB")
    );
    result
}

fn assert_decode_error<T: std::fmt::Debug>(result: Result<Option<T>, AttributeError>) {
    match result {
        Err(AttributeError::Codec {
            name,
            source: CodecError::Decode { .. },
        }) => assert_eq!(name, "user"),
        other => panic!("expected a decode error for `user`, got {other:?}"),
    }
}

/// The named-field codecs forgive additions with defaults and removals.
fn named_fields<C>()
where
    C: Encodes<UserV1> + Encodes<str> + Decodes<String>,
    C: Decodes<UserRemoved> + Decodes<UserAddedDefault> + Decodes<UserAddedOption>,
    C: Decodes<UserAddedRequired> + Decodes<UserReordered>,
{
    let session = stored::<C>();
    assert_eq!(
        read::<C, UserRemoved>(&session).unwrap(),
        Some(UserRemoved {
            id: 7,
            name: "Ann Example".into()
        })
    );
    assert_eq!(
        read::<C, UserAddedDefault>(&session).unwrap(),
        Some(added_default())
    );
    assert_eq!(
        read::<C, UserAddedOption>(&session).unwrap().unwrap().email,
        None
    );
    assert_decode_error(read::<C, UserAddedRequired>(&session));
    let reordered = read::<C, UserReordered>(&session).unwrap().unwrap();
    assert_eq!(
        (reordered.name.as_str(), reordered.nickname.as_str()),
        ("Ann Example", "ann")
    );

    // The session stays usable: writing the attribute anew replaces the stale value.
    let mut session = session;
    session
        .insert(
            "user",
            &UserV1 {
                nickname: "annie".into(),
                ..v1()
            },
        )
        .unwrap();
    assert!(session.is_modified());
}

#[test]
fn json_tolerates_added_defaults_and_removed_fields() {
    named_fields::<JsonCodec>();
}

#[test]
fn msgpack_tolerates_added_defaults_and_removed_fields() {
    named_fields::<MsgpackCodec>();
}

#[test]
fn postcard_refuses_any_change_of_fields() {
    let session = stored::<PostcardCodec>();
    assert_decode_error(read::<PostcardCodec, UserRemoved>(&session));
    assert_decode_error(read::<PostcardCodec, UserAddedDefault>(&session));
    assert_decode_error(read::<PostcardCodec, UserAddedOption>(&session));
    assert_decode_error(read::<PostcardCodec, UserAddedRequired>(&session));
    // Same types in a new order: misread silently, as documented.
    let reordered = read::<PostcardCodec, UserReordered>(&session)
        .unwrap()
        .unwrap();
    assert_eq!(reordered.name, "ann");
}

/// Only a field added at the end with `#[speedy(default_on_eof)]` survives.
#[test]
fn speedy_refuses_changes_except_defaults_at_the_end() {
    let session = stored::<SpeedyCodec>();
    assert_decode_error(read::<SpeedyCodec, UserRemoved>(&session));
    assert_eq!(
        read::<SpeedyCodec, UserAddedDefault>(&session).unwrap(),
        Some(added_default())
    );
    assert_decode_error(read::<SpeedyCodec, UserAddedOption>(&session));
    assert_decode_error(read::<SpeedyCodec, UserAddedRequired>(&session));
    let reordered = read::<SpeedyCodec, UserReordered>(&session)
        .unwrap()
        .unwrap();
    assert_eq!(reordered.name, "ann");
}
