//! The MessagePack codec.

use serde::Serialize;
use serde::de::DeserializeOwned;
use tandem_core::{Codec, CodecError, CodecId, Decodes, Encodes};

/// Deepest nesting a stored value may have: the same bound serde JSON applies, so that
/// hostile bytes cannot exhaust the stack of a recursive type.
const MAX_DEPTH: usize = 128;

/// MessagePack via [rmp-serde](https://docs.rs/rmp-serde), with struct fields stored by
/// name: any `Serialize` value in, any `DeserializeOwned` type out.
///
/// Because fields are named, stored values survive changes of their type the way JSON
/// values do: a field the type no longer has is ignored, and a field it gained is
/// filled by `#[serde(default)]` (or `None` for an `Option`). Smaller and faster than
/// [`JsonCodec`](crate::JsonCodec), larger than the positional formats
/// ([`SpeedyCodec`](crate::SpeedyCodec), [`PostcardCodec`](crate::PostcardCodec)).
///
/// ```
/// use tandem_codec::MsgpackCodec;
/// use tandem_core::{Decodes, Encodes};
///
/// #[derive(serde::Serialize)]
/// struct CartV1 { items: u32, coupon: String }
///
/// #[derive(Debug, PartialEq, serde::Deserialize)]
/// struct CartV2 { items: u32, #[serde(default)] gift_wrap: bool }
///
/// let stored = MsgpackCodec::encode(&CartV1 { items: 3, coupon: "WINTER".into() }).unwrap();
/// let read: CartV2 = MsgpackCodec::decode(&stored).unwrap();
/// assert_eq!(read, CartV2 { items: 3, gift_wrap: false });
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct MsgpackCodec;

impl Codec for MsgpackCodec {
    const ID: CodecId = CodecId::MSGPACK;
    const NAME: &'static str = "msgpack";
}

impl<T> Encodes<T> for MsgpackCodec
where
    T: Serialize + ?Sized,
{
    fn encode(value: &T) -> Result<Vec<u8>, CodecError> {
        rmp_serde::to_vec_named(value).map_err(|error| CodecError::encode(Self::ID, error))
    }
}

impl<T> Decodes<T> for MsgpackCodec
where
    T: DeserializeOwned,
{
    fn decode(bytes: &[u8]) -> Result<T, CodecError> {
        let mut rest = bytes;
        let mut deserializer = rmp_serde::Deserializer::new(&mut rest);
        deserializer.set_max_depth(MAX_DEPTH);
        let value = T::deserialize(&mut deserializer)
            .map_err(|error| CodecError::decode(Self::ID, error))?;
        drop(deserializer);
        if !rest.is_empty() {
            return Err(CodecError::decode(
                Self::ID,
                format!("{} bytes left after the value", rest.len()),
            ));
        }
        Ok(value)
    }
}
