//! What the unit tests share: a codec whose values are readable text.

use tandem_core::{Codec, CodecError, CodecId, Decodes, Encodes};

/// A test codec: values are strings, stored as their UTF-8 bytes; `"unencodable"` is
/// refused, so that tests can make an encode fail.
pub(crate) struct TextCodec;

impl Codec for TextCodec {
    const ID: CodecId = CodecId::new(201);
    const NAME: &'static str = "text";
}

impl Encodes<str> for TextCodec {
    fn encode(value: &str) -> Result<Vec<u8>, CodecError> {
        if value == "unencodable" {
            return Err(CodecError::encode(Self::ID, "refused"));
        }
        Ok(value.as_bytes().to_vec())
    }
}

impl Decodes<String> for TextCodec {
    fn decode(bytes: &[u8]) -> Result<String, CodecError> {
        String::from_utf8(bytes.to_vec()).map_err(|error| CodecError::decode(Self::ID, error))
    }
}

impl Decodes<u32> for TextCodec {
    fn decode(bytes: &[u8]) -> Result<u32, CodecError> {
        let text =
            std::str::from_utf8(bytes).map_err(|error| CodecError::decode(Self::ID, error))?;
        text.parse()
            .map_err(|error| CodecError::decode(Self::ID, error))
    }
}
