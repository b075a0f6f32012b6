//! Codecs for Tandem sessions, and the layers on their stored bytes.
//!
//! **Codecs** turn attribute values into bytes:
//!
//! | codec | id | values need | format |
//! |---|---|---|---|
//! | [`SpeedyCodec`] (the default) | 1 | speedy `Readable` + `Writable` | compact positional little-endian binary |
//! | [`JsonCodec`] | 2 | serde `Serialize` + `Deserialize` | JSON text, field names |
//! | [`MsgpackCodec`] | 3 | serde `Serialize` + `Deserialize` | MessagePack, field names |
//! | [`PostcardCodec`] | 4 | serde `Serialize` + `Deserialize` | postcard: compact positional varint binary |
//!
//! [`Migrating`] combines them for a rolling switch from one codec to another: it
//! writes with one and reads what several wrote.
//!
//! **Layers** ([`tandem_core::layers`]) transform the stored bytes of a whole
//! session: [`Compression`] (LZ4 or zstd, above a size threshold) and [`Encryption`]
//! (AES-256-GCM with key ids and rotation). Stack them as `(Compression, Encryption)`.
//!
//! A codec is chosen by type (`Session<SpeedyCodec>`), so swapping the serializer is a
//! change of one type parameter. A type that derives both sets of traits works with
//! every codec:
//!
//! ```
//! use std::time::SystemTime;
//! use tandem_codec::{JsonCodec, MsgpackCodec, PostcardCodec, SpeedyCodec};
//! use tandem_core::{NodeId, Session, SessionId};
//!
//! #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize, speedy::Readable, speedy::Writable)]
//! struct Cart {
//!     items: Vec<(String, u32)>,
//! }
//!
//! fn roundtrip<C>(cart: &Cart) -> Cart
//! where
//!     C: tandem_core::Encodes<Cart> + tandem_core::Decodes<Cart>,
//! {
//!     let id = SessionId::generate(&NodeId::new("n1").unwrap(), None);
//!     let mut session: Session<C> = Session::new(id, SystemTime::now(), None);
//!     session.insert("cart", cart).unwrap();
//!     session.get::<Cart>("cart").unwrap().unwrap()
//! }
//!
//! let cart = Cart { items: vec![("apple".into(), 3)] };
//! assert_eq!(roundtrip::<SpeedyCodec>(&cart), cart);
//! assert_eq!(roundtrip::<JsonCodec>(&cart), cart);
//! assert_eq!(roundtrip::<MsgpackCodec>(&cart), cart);
//! assert_eq!(roundtrip::<PostcardCodec>(&cart), cart);
//! ```
//!
//! Every decoder treats its input as untrusted: malformed bytes are a
//! [`CodecError`](tandem_core::CodecError), never a panic, and bytes left over after
//! the value are an error too (they would mean the bytes are not what was written).
//! Length prefixes are not trusted for allocation. JSON and MessagePack bound nesting
//! at 128 levels; speedy and postcard have no such bound, so a *recursive* attribute
//! type (a tree of `Box`es) decoded from forged bytes could exhaust the stack. Store
//! recursive types with JSON or MessagePack, or encrypt the stored bytes.
//!
//! # Schema evolution
//!
//! Stored sessions outlive deployments: a new release reads attributes that the
//! previous one wrote. What happens when a stored attribute's type gains or loses a
//! field depends on the codec:
//!
//! | change of the type | [`JsonCodec`], [`MsgpackCodec`] (named fields) | [`SpeedyCodec`], [`PostcardCodec`] (positional) |
//! |---|---|---|
//! | a field is removed | old values decode; the stored field is ignored (unless `#[serde(deny_unknown_fields)]`) | old values fail to decode (bytes left over) |
//! | a field is added | old values decode if the field is an `Option` (`None`) or has `#[serde(default)]`; otherwise they fail (missing field) | old values fail to decode (input ends early); speedy only: a field added *at the end* with `#[speedy(default_on_eof)]` decodes with its default |
//! | a field is renamed | fails like a removal plus an addition; `#[serde(alias = "old")]` reads the old name | old values decode, if the type is unchanged: positions matter, names do not |
//! | fields are reordered | old values decode | old values fail or, if the types line up, are **misread** silently |
//! | a field changes type | fails, unless serde can read the old value as the new type | fails or, if the sizes line up, is **misread** silently |
//!
//! A decode failure is confined to the attribute: `session.get::<T>(name)` returns
//! [`AttributeError::Codec`](tandem_core::AttributeError::Codec) for that attribute,
//! every other attribute stays readable, and the session stays usable (writing the
//! attribute anew replaces the stale value). The positional codecs are smaller and
//! faster; the named ones are forgiving. With a positional codec, change a stored
//! type by giving it a new attribute name (`cart_v2`) and falling back to the old
//! one, or use speedy's `default_on_eof` for fields added at the end.
//!
//! ```
//! use std::time::SystemTime;
//! use tandem_codec::{MsgpackCodec, PostcardCodec};
//! use tandem_core::{AttributeError, Encodes, NodeId, Session, SessionId};
//!
//! #[derive(serde::Serialize)]
//! struct UserV1 { name: String }
//! #[derive(Debug, PartialEq, serde::Deserialize)]
//! struct UserV2 { name: String, #[serde(default)] admin: bool }
//!
//! fn stored_v1<C: Encodes<UserV1> + Encodes<str>>() -> Session<C> {
//!     let id = SessionId::generate(&NodeId::new("n1").unwrap(), None);
//!     let mut session = Session::new(id, SystemTime::now(), None);
//!     session.insert("user", &UserV1 { name: "ann".into() }).unwrap();
//!     session.insert("locale", "en-GB").unwrap();
//!     session
//! }
//!
//! // Named fields: the new field takes its default.
//! let session = stored_v1::<MsgpackCodec>();
//! assert_eq!(session.get::<UserV2>("user").unwrap(), Some(UserV2 { name: "ann".into(), admin: false }));
//!
//! // Positional: an error for that attribute only.
//! let session = stored_v1::<PostcardCodec>();
//! assert!(matches!(session.get::<UserV2>("user"), Err(AttributeError::Codec { .. })));
//! assert_eq!(session.get::<String>("locale").unwrap().as_deref(), Some("en-GB"));
//! ```
//!
//! This crate is not the envelope (that lives in `tandem-core`); its codecs encode
//! attribute values and its layers transform stored bytes.

mod compress;
mod encrypt;
mod json;
mod migrate;
mod msgpack;
mod postcard_codec;
mod speedy_codec;

pub use compress::{
    Algorithm, Compression, CompressionStats, DEFAULT_MAX_OPENED_SIZE, DEFAULT_THRESHOLD,
};
pub use encrypt::{Encryption, EncryptionKey, EncryptionStats, KeyError};
pub use json::JsonCodec;
pub use migrate::{Migrating, Readers, ReadersDecode};
pub use msgpack::MsgpackCodec;
pub use postcard_codec::PostcardCodec;
pub use speedy_codec::SpeedyCodec;
