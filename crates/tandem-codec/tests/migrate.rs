//! Rolling codec migration: `Migrating<Writer, Readers>` reads what every codec of the
//! set wrote, writes with the writer, and refuses anything else with a typed error.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use speedy::{Readable, Writable};
use tandem_codec::{JsonCodec, Migrating, MsgpackCodec, PostcardCodec, SpeedyCodec};
use tandem_core::{
    AttributeError, Codec, CodecError, CodecId, Decodes, Encodes, EnvelopeError, NodeId, Session,
    SessionId, envelope,
};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Readable, Writable)]
struct Cart {
    items: Vec<(String, u32)>,
    coupon: Option<String>,
}

fn cart(items: u32) -> Cart {
    Cart {
        items: vec![("apple".into(), items)],
        coupon: None,
    }
}

type FromJsonAndMsgpack = Migrating<SpeedyCodec, (JsonCodec, MsgpackCodec)>;

fn id() -> SessionId {
    SessionId::generate(&NodeId::new("n1").unwrap(), None)
}

/// The stored bytes of a session `C` wrote, with a cart and a counter.
fn written_by<C>(id: &SessionId) -> Vec<u8>
where
    C: Encodes<Cart> + Encodes<u64>,
{
    let mut session: Session<C> = Session::new(id.clone(), SystemTime::now(), None);
    session.insert("cart", &cart(2)).unwrap();
    session.insert("visits", &9u64).unwrap();
    envelope::encode(&session)
}

#[test]
fn reads_sessions_written_by_the_writer_and_every_reader() {
    for stored in [
        written_by::<SpeedyCodec>,
        written_by::<JsonCodec>,
        written_by::<MsgpackCodec>,
    ] {
        let id = id();
        let session: Session<FromJsonAndMsgpack> = envelope::decode(id.clone(), &stored(&id))
            .expect("a migrating codec reads every codec it lists");
        assert_eq!(session.get::<Cart>("cart").unwrap(), Some(cart(2)));
        assert_eq!(session.get::<u64>("visits").unwrap(), Some(9));
    }
}

#[test]
fn an_unlisted_codec_is_a_codec_mismatch() {
    let id = id();
    let stored = written_by::<PostcardCodec>(&id);
    assert_eq!(
        envelope::decode::<FromJsonAndMsgpack>(id, &stored).unwrap_err(),
        EnvelopeError::CodecMismatch {
            written_by: CodecId::POSTCARD,
            reader: CodecId::SPEEDY,
        }
    );
    // And for an attribute read directly.
    let bytes = <PostcardCodec as Encodes<Cart>>::encode(&cart(1)).unwrap();
    assert_eq!(
        <FromJsonAndMsgpack as Decodes<Cart>>::decode_written_by(CodecId::POSTCARD, &bytes)
            .unwrap_err(),
        CodecError::Mismatch {
            written_by: CodecId::POSTCARD,
            reader: CodecId::SPEEDY,
        }
    );
}

#[test]
fn it_writes_as_the_writer_so_plain_writer_servers_read_it() {
    assert_eq!(FromJsonAndMsgpack::ID, CodecId::SPEEDY);
    assert_eq!(FromJsonAndMsgpack::NAME, "speedy");
    let id = id();
    let stored = written_by::<FromJsonAndMsgpack>(&id);
    assert_eq!(envelope::header(&stored).unwrap().codec, CodecId::SPEEDY);
    let plain: Session<SpeedyCodec> = envelope::decode(id, &stored).unwrap();
    assert_eq!(plain.get::<Cart>("cart").unwrap(), Some(cart(2)));
}

#[test]
fn attributes_move_to_the_writer_as_they_change() {
    let id = id();
    let mut session: Session<FromJsonAndMsgpack> =
        envelope::decode(id.clone(), &written_by::<JsonCodec>(&id)).unwrap();
    assert_eq!(
        FromJsonAndMsgpack::not_yet_migrated(&session).collect::<Vec<_>>(),
        ["cart", "visits"]
    );

    // The same value again, now in speedy: a change, since the stored bytes differ.
    assert!(session.insert("cart", &cart(2)).unwrap());
    assert_eq!(session.value("cart").unwrap().codec(), CodecId::SPEEDY);
    assert_eq!(
        FromJsonAndMsgpack::not_yet_migrated(&session).collect::<Vec<_>>(),
        ["visits"]
    );
    assert!(FromJsonAndMsgpack::upgrade::<u64>(&mut session, "visits").unwrap());
    assert_eq!(FromJsonAndMsgpack::not_yet_migrated(&session).count(), 0);

    // Once everything is rewritten, a server that runs plain speedy reads it all.
    let stored = envelope::encode(&session);
    let plain: Session<SpeedyCodec> = envelope::decode(id, &stored).unwrap();
    assert_eq!(plain.get::<u64>("visits").unwrap(), Some(9));
}

#[test]
fn a_half_migrated_session_needs_the_readers() {
    let id = id();
    let mut session: Session<FromJsonAndMsgpack> =
        envelope::decode(id.clone(), &written_by::<MsgpackCodec>(&id)).unwrap();
    session.insert("cart", &cart(5)).unwrap();
    let stored = envelope::encode(&session);
    // Header says speedy, but "visits" is still MessagePack: plain speedy refuses the
    // session instead of misreading the attribute.
    assert_eq!(
        envelope::decode::<SpeedyCodec>(id.clone(), &stored).unwrap_err(),
        EnvelopeError::CodecMismatch {
            written_by: CodecId::MSGPACK,
            reader: CodecId::SPEEDY,
        }
    );
    let again: Session<FromJsonAndMsgpack> = envelope::decode(id, &stored).unwrap();
    assert_eq!(again.get::<Cart>("cart").unwrap(), Some(cart(5)));
    assert_eq!(again.get::<u64>("visits").unwrap(), Some(9));
}

#[test]
fn a_reader_decode_failure_is_an_error_for_that_attribute_only() {
    let id = id();
    let mut old: Session<JsonCodec> = Session::new(id.clone(), SystemTime::now(), None);
    old.insert("cart", "not a cart").unwrap();
    old.insert("visits", &3u64).unwrap();
    let session: Session<FromJsonAndMsgpack> =
        envelope::decode(id, &envelope::encode(&old)).unwrap();
    let error = session.get::<Cart>("cart").unwrap_err();
    assert!(
        matches!(&error, AttributeError::Codec { name, source: CodecError::Decode { codec, .. } }
            if name == "cart" && *codec == CodecId::JSON),
        "{error:?}"
    );
    assert_eq!(session.get::<u64>("visits").unwrap(), Some(3));
}

#[test]
fn migrations_nest_and_the_first_matching_reader_wins() {
    // A reader set may hold another migrating codec.
    type Nested = Migrating<PostcardCodec, (Migrating<JsonCodec, (MsgpackCodec,)>,)>;
    for stored in [
        written_by::<JsonCodec>,
        written_by::<MsgpackCodec>,
        written_by::<PostcardCodec>,
    ] {
        let id = id();
        let session: Session<Nested> = envelope::decode(id.clone(), &stored(&id)).unwrap();
        assert_eq!(session.get::<Cart>("cart").unwrap(), Some(cart(2)));
    }
    // With no readers it is just the writer.
    type Alone = Migrating<JsonCodec, ()>;
    assert!(<Alone as Codec>::reads(CodecId::JSON));
    assert!(!<Alone as Codec>::reads(CodecId::SPEEDY));
}
