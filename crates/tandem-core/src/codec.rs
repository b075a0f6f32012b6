//! The codec trait: how attribute values become bytes.
//!
//! A codec is a type, chosen by type on the session (and later on the manager):
//! `Session<SpeedyCodec>` or `Session<JsonCodec>`. Which value types a codec can handle
//! is said by the [`Encodes`] and [`Decodes`] traits, implemented with blanket impls
//! over the serializer's own traits (speedy's `Writable`/`Readable`, serde's
//! `Serialize`/`Deserialize`). Swapping the serializer is therefore a change of one type
//! parameter, checked by the compiler; there is no `dyn Any` anywhere.
//!
//! Every stored attribute records the [`CodecId`] of the codec that wrote it, so that a
//! reader can tell bytes it understands from bytes another codec wrote.
//!
//! ```
//! use tandem_core::{Codec, CodecError, CodecId, Decodes, Encodes};
//!
//! /// A codec for UTF-8 strings only.
//! struct Utf8Codec;
//!
//! impl Codec for Utf8Codec {
//!     const ID: CodecId = CodecId::new(200);
//!     const NAME: &'static str = "utf8";
//! }
//!
//! impl Encodes<str> for Utf8Codec {
//!     fn encode(value: &str) -> Result<Vec<u8>, CodecError> {
//!         Ok(value.as_bytes().to_vec())
//!     }
//! }
//!
//! impl Decodes<String> for Utf8Codec {
//!     fn decode(bytes: &[u8]) -> Result<String, CodecError> {
//!         String::from_utf8(bytes.to_vec()).map_err(|e| CodecError::decode(Self::ID, e))
//!     }
//! }
//!
//! let bytes = Utf8Codec::encode("hi").unwrap();
//! assert_eq!(Utf8Codec::decode(&bytes).unwrap(), "hi");
//! ```

use std::fmt;

/// Identifies the codec that wrote an attribute or a session envelope.
///
/// Ids 1 to 127 are reserved for the codecs Tandem ships; user codecs take 128 and up.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CodecId(u16);

impl CodecId {
    /// The speedy codec (Tandem's default).
    pub const SPEEDY: CodecId = CodecId(1);
    /// The serde JSON codec.
    pub const JSON: CodecId = CodecId(2);
    /// The MessagePack codec.
    pub const MSGPACK: CodecId = CodecId(3);
    /// The postcard codec.
    pub const POSTCARD: CodecId = CodecId(4);
    /// First id available to codecs outside Tandem.
    pub const FIRST_USER: u16 = 128;

    /// A codec id from its number.
    pub const fn new(id: u16) -> CodecId {
        CodecId(id)
    }

    /// The number stored in envelopes.
    pub const fn get(self) -> u16 {
        self.0
    }

    /// The name of a codec Tandem ships, if this is one.
    pub fn well_known_name(self) -> Option<&'static str> {
        match self {
            CodecId::SPEEDY => Some("speedy"),
            CodecId::JSON => Some("json"),
            CodecId::MSGPACK => Some("msgpack"),
            CodecId::POSTCARD => Some("postcard"),
            _ => None,
        }
    }
}

impl fmt::Display for CodecId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.well_known_name() {
            Some(name) => write!(f, "{name} (codec {})", self.0),
            None => write!(f, "codec {}", self.0),
        }
    }
}

impl fmt::Debug for CodecId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CodecId({self})")
    }
}

/// Why a value could not be encoded or decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// The serializer failed to encode the value.
    #[error("{codec} could not encode the value: {message}")]
    Encode {
        /// The codec that failed.
        codec: CodecId,
        /// The serializer's message.
        message: String,
    },
    /// The bytes are not a valid encoding of the requested type.
    #[error("{codec} could not decode the value: {message}")]
    Decode {
        /// The codec that failed.
        codec: CodecId,
        /// The serializer's message.
        message: String,
    },
    /// The bytes were written by a codec this reader does not understand.
    #[error("value was written by {written_by}, which {reader} cannot read")]
    Mismatch {
        /// The codec recorded with the bytes.
        written_by: CodecId,
        /// The codec asked to read them.
        reader: CodecId,
    },
}

impl CodecError {
    /// An [`Encode`](CodecError::Encode) error from any displayable cause.
    pub fn encode(codec: CodecId, cause: impl fmt::Display) -> CodecError {
        CodecError::Encode {
            codec,
            message: cause.to_string(),
        }
    }

    /// A [`Decode`](CodecError::Decode) error from any displayable cause.
    pub fn decode(codec: CodecId, cause: impl fmt::Display) -> CodecError {
        CodecError::Decode {
            codec,
            message: cause.to_string(),
        }
    }
}

/// A serializer for attribute values, identified by a [`CodecId`].
///
/// Codecs are types, not values: they hold no state, so a session carries its codec
/// for free and a change of codec is a change of type.
pub trait Codec: Send + Sync + 'static {
    /// The id recorded in envelopes and attribute tables written by this codec.
    const ID: CodecId;
    /// A short human-readable name for logs and errors.
    const NAME: &'static str;

    /// Whether this codec can read bytes that `written_by` wrote. The default is its
    /// own id only; a codec that migrates from another format widens it.
    fn reads(written_by: CodecId) -> bool {
        written_by == Self::ID
    }
}

/// A codec that can encode values of type `T`.
pub trait Encodes<T: ?Sized>: Codec {
    /// Encodes `value`.
    fn encode(value: &T) -> Result<Vec<u8>, CodecError>;
}

/// A codec that can decode values of type `T`.
pub trait Decodes<T>: Codec {
    /// Decodes bytes this codec wrote.
    fn decode(bytes: &[u8]) -> Result<T, CodecError>;

    /// Decodes bytes that codec `written_by` wrote. The default accepts only this
    /// codec's own bytes and reports anything else as a
    /// [`Mismatch`](CodecError::Mismatch) instead of misreading it.
    fn decode_written_by(written_by: CodecId, bytes: &[u8]) -> Result<T, CodecError> {
        if written_by == Self::ID {
            Self::decode(bytes)
        } else {
            Err(CodecError::Mismatch {
                written_by,
                reader: Self::ID,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_display_their_names() {
        assert_eq!(CodecId::SPEEDY.to_string(), "speedy (codec 1)");
        assert_eq!(CodecId::new(300).to_string(), "codec 300");
        assert_eq!(CodecId::JSON.get(), 2);
        assert_eq!(CodecId::POSTCARD.to_string(), "postcard (codec 4)");
    }
}
