//! The speedy codec.

use speedy::{LittleEndian, Readable, Writable};
use tandem_core::{Codec, CodecError, CodecId, Decodes, Encodes};

/// Tandem's default codec: [speedy](https://docs.rs/speedy)'s compact binary format,
/// little-endian.
///
/// Values need `speedy::Writable<LittleEndian>` to be stored and
/// `speedy::Readable<LittleEndian>` to be read (`#[derive(Readable, Writable)]`).
/// Speedy's format has no field names: adding or removing a field of a stored type
/// makes older stored values fail to decode (a typed error for that attribute only).
#[derive(Debug, Clone, Copy, Default)]
pub struct SpeedyCodec;

impl Codec for SpeedyCodec {
    const ID: CodecId = CodecId::SPEEDY;
    const NAME: &'static str = "speedy";
}

impl<T> Encodes<T> for SpeedyCodec
where
    T: Writable<LittleEndian> + ?Sized,
{
    fn encode(value: &T) -> Result<Vec<u8>, CodecError> {
        value
            .write_to_vec_with_ctx(LittleEndian::default())
            .map_err(|error| CodecError::encode(Self::ID, error))
    }
}

impl<T> Decodes<T> for SpeedyCodec
where
    T: for<'a> Readable<'a, LittleEndian>,
{
    fn decode(bytes: &[u8]) -> Result<T, CodecError> {
        let (value, read) =
            T::read_with_length_from_buffer_with_ctx(LittleEndian::default(), bytes);
        let value = value.map_err(|error| CodecError::decode(Self::ID, error))?;
        if read != bytes.len() {
            return Err(CodecError::decode(
                Self::ID,
                format!("{} bytes left after the value", bytes.len() - read),
            ));
        }
        Ok(value)
    }
}
