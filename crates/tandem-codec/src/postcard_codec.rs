//! The postcard codec.

use serde::Serialize;
use serde::de::DeserializeOwned;
use tandem_core::{Codec, CodecError, CodecId, Decodes, Encodes};

/// [postcard](https://docs.rs/postcard): a compact, fast serde binary format with a
/// documented wire format that is stable across postcard 1.x releases, so stored
/// sessions stay readable after a dependency upgrade.
///
/// Values are written positionally (varint integers, no field names), much like
/// [`SpeedyCodec`](crate::SpeedyCodec) but for serde types: any `Serialize` value in,
/// any `DeserializeOwned` type out. Like speedy, it does not tolerate a stored type
/// gaining or losing a field (see the [crate docs](crate#schema-evolution)), and since
/// its bytes carry no types, a value read as the wrong type whose shape happens to
/// line up (integers where integers were, strings where strings were) decodes into
/// nonsense instead of failing. Features
/// that need a self-describing format (`#[serde(flatten)]`, untagged enums,
/// `serde_json::Value`) fail with a decode error.
///
/// ```
/// use tandem_codec::PostcardCodec;
/// use tandem_core::{Decodes, Encodes};
///
/// let stored = PostcardCodec::encode(&(7u32, "seven")).unwrap();
/// assert_eq!(stored, [7, 5, b's', b'e', b'v', b'e', b'n']);
/// let read: (u32, String) = PostcardCodec::decode(&stored).unwrap();
/// assert_eq!(read, (7, "seven".to_string()));
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct PostcardCodec;

impl Codec for PostcardCodec {
    const ID: CodecId = CodecId::POSTCARD;
    const NAME: &'static str = "postcard";
}

impl<T> Encodes<T> for PostcardCodec
where
    T: Serialize + ?Sized,
{
    fn encode(value: &T) -> Result<Vec<u8>, CodecError> {
        postcard::to_allocvec(value).map_err(|error| CodecError::encode(Self::ID, error))
    }
}

impl<T> Decodes<T> for PostcardCodec
where
    T: DeserializeOwned,
{
    fn decode(bytes: &[u8]) -> Result<T, CodecError> {
        let (value, rest) = postcard::take_from_bytes(bytes)
            .map_err(|error| CodecError::decode(Self::ID, error))?;
        if !rest.is_empty() {
            return Err(CodecError::decode(
                Self::ID,
                format!("{} bytes left after the value", rest.len()),
            ));
        }
        Ok(value)
    }
}
