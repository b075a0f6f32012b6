//! The serde JSON codec.

use serde::Serialize;
use serde::de::DeserializeOwned;
use tandem_core::{Codec, CodecError, CodecId, Decodes, Encodes};

/// serde JSON: any `Serialize` value in, any `DeserializeOwned` type out.
///
/// Larger and slower than [`SpeedyCodec`](crate::SpeedyCodec), but stored values are
/// readable by other languages, and serde's attributes (`#[serde(default)]`) let a
/// stored type gain fields without breaking older values.
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonCodec;

impl Codec for JsonCodec {
    const ID: CodecId = CodecId::JSON;
    const NAME: &'static str = "json";
}

impl<T> Encodes<T> for JsonCodec
where
    T: Serialize + ?Sized,
{
    fn encode(value: &T) -> Result<Vec<u8>, CodecError> {
        serde_json::to_vec(value).map_err(|error| CodecError::encode(Self::ID, error))
    }
}

impl<T> Decodes<T> for JsonCodec
where
    T: DeserializeOwned,
{
    fn decode(bytes: &[u8]) -> Result<T, CodecError> {
        // serde_json rejects trailing data and bounds its recursion depth, so hostile
        // input is an error, not a stack overflow.
        serde_json::from_slice(bytes).map_err(|error| CodecError::decode(Self::ID, error))
    }
}
