//! Codecs for Tandem sessions: how attribute values become bytes.
//!
//! - [`SpeedyCodec`] (the default): speedy's compact little-endian binary format, for
//!   types that implement `speedy::Writable` and `speedy::Readable`.
//! - [`JsonCodec`]: serde JSON, for types that implement `serde::Serialize` and
//!   `serde::Deserialize`. Larger and slower, but readable by anything.
//!
//! A codec is chosen by type (`Session<SpeedyCodec>`), so swapping the serializer is a
//! change of one type parameter. A type that derives both sets of traits works with
//! either:
//!
//! ```
//! use std::time::SystemTime;
//! use tandem_codec::{JsonCodec, SpeedyCodec};
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
//! ```
//!
//! Both decoders treat their input as untrusted: malformed bytes are a
//! [`CodecError`](tandem_core::CodecError), never a panic, and bytes left over after
//! the value are an error too (they would mean the bytes are not what was written).
//!
//! This crate is not the envelope (that lives in `tandem-core`); it only encodes
//! attribute values.

mod json;
mod speedy_codec;

pub use json::JsonCodec;
pub use speedy_codec::SpeedyCodec;
