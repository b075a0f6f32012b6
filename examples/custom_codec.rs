//! Writing your own codec: a tiny hand-rolled binary format for values of a trait of
//! your own, plugged into sessions by type, migrated to from speedy, and stored through
//! the compression and encryption layers.
//!
//! ```sh
//! cargo run --example custom_codec
//! ```
//!
//! A codec is a zero-sized type with an id and a name ([`Codec`]), plus [`Encodes`] /
//! [`Decodes`] impls saying which value types it handles: usually blanket impls over
//! the serializer's own traits, here over the `Wire` trait defined below.

use std::error::Error;
use std::time::{Duration, SystemTime};

use speedy::{Readable, Writable};
use tandem::layers::BlobLayer;
use tandem::{
    Codec, NodeId, Session, SessionId, SpeedyCodec, envelope,
    model::{CodecError, CodecId, Decodes, Encodes},
};
use tandem_codec::{Compression, Encryption, EncryptionKey, Migrating};

/// The application's own serialization trait: write to a buffer (`Err` for a value
/// the format cannot hold), read from the front of a slice (advancing it; `None` on
/// malformed input).
trait Wire: Sized {
    fn write(&self, out: &mut Vec<u8>) -> Result<(), &'static str>;
    fn read(input: &mut &[u8]) -> Option<Self>;
}

/// Lengths are 32 bits on the wire.
fn write_len(len: usize, out: &mut Vec<u8>) -> Result<(), &'static str> {
    u32::try_from(len)
        .map_err(|_| "longer than 2^32 - 1")?
        .write(out)
}

fn take<'a>(input: &mut &'a [u8], len: usize) -> Option<&'a [u8]> {
    if input.len() < len {
        return None;
    }
    let (taken, rest) = input.split_at(len);
    *input = rest;
    Some(taken)
}

impl Wire for u32 {
    fn write(&self, out: &mut Vec<u8>) -> Result<(), &'static str> {
        out.extend_from_slice(&self.to_be_bytes());
        Ok(())
    }

    fn read(input: &mut &[u8]) -> Option<u32> {
        Some(u32::from_be_bytes(take(input, 4)?.try_into().ok()?))
    }
}

impl Wire for String {
    fn write(&self, out: &mut Vec<u8>) -> Result<(), &'static str> {
        write_len(self.len(), out)?;
        out.extend_from_slice(self.as_bytes());
        Ok(())
    }

    fn read(input: &mut &[u8]) -> Option<String> {
        let len = u32::read(input)? as usize;
        // The length is checked against the input before anything is allocated.
        String::from_utf8(take(input, len)?.to_vec()).ok()
    }
}

impl<T: Wire> Wire for Vec<T> {
    fn write(&self, out: &mut Vec<u8>) -> Result<(), &'static str> {
        write_len(self.len(), out)?;
        self.iter().try_for_each(|item| item.write(out))
    }

    fn read(input: &mut &[u8]) -> Option<Vec<T>> {
        let len = u32::read(input)? as usize;
        // Every element takes at least one byte: a longer claim is malformed.
        if len > input.len() {
            return None;
        }
        (0..len).map(|_| T::read(input)).collect()
    }
}

/// An application type, serializable with both the custom format and speedy (the
/// codec the cluster migrates from).
#[derive(Debug, Clone, PartialEq, Readable, Writable)]
struct Cart {
    items: Vec<String>,
    total_cents: u32,
}

impl Wire for Cart {
    fn write(&self, out: &mut Vec<u8>) -> Result<(), &'static str> {
        self.items.write(out)?;
        self.total_cents.write(out)
    }

    fn read(input: &mut &[u8]) -> Option<Cart> {
        Some(Cart {
            items: Vec::read(input)?,
            total_cents: u32::read(input)?,
        })
    }
}

/// The codec: ids from 128 up are free for codecs outside Tandem.
struct WireCodec;

impl Codec for WireCodec {
    const ID: CodecId = CodecId::new(CodecId::FIRST_USER + 1);
    const NAME: &'static str = "wire";
}

impl<T: Wire> Encodes<T> for WireCodec {
    fn encode(value: &T) -> Result<Vec<u8>, CodecError> {
        let mut out = Vec::new();
        value
            .write(&mut out)
            .map_err(|reason| CodecError::encode(Self::ID, reason))?;
        Ok(out)
    }
}

impl<T: Wire> Decodes<T> for WireCodec {
    fn decode(bytes: &[u8]) -> Result<T, CodecError> {
        let mut input = bytes;
        let value =
            T::read(&mut input).ok_or_else(|| CodecError::decode(Self::ID, "malformed value"))?;
        if !input.is_empty() {
            return Err(CodecError::decode(Self::ID, "bytes left after the value"));
        }
        Ok(value)
    }
}

fn main() -> Result<(), Box<dyn Error>> {
    let id = SessionId::generate(&NodeId::new("n1")?, None);
    let cart = Cart {
        items: vec!["apple".into(), "pear".into()],
        total_cents: 480,
    };

    // 1. The custom codec on its own: chosen by type, like any other.
    let mut session: Session<WireCodec> = Session::new(
        id.clone(),
        SystemTime::now(),
        Some(Duration::from_secs(1800)),
    );
    session.insert("cart", &cart)?;
    let stored = envelope::encode(&session);
    let loaded: Session<WireCodec> = envelope::decode(id.clone(), &stored)?;
    assert_eq!(loaded.get::<Cart>("cart")?, Some(cart.clone()));
    println!(
        "wire codec: cart stored in {} bytes (envelope {} bytes)",
        loaded.value("cart").map_or(0, |value| value.bytes().len()),
        stored.len()
    );

    // Malformed bytes are a typed error for that attribute, never a panic.
    let garbage = <WireCodec as Decodes<Cart>>::decode(&[0, 0, 0, 9, 1]);
    println!("decoding garbage: {}", garbage.unwrap_err());

    // 2. Migrating a running cluster from speedy to the custom codec: a session an old
    //    server wrote with speedy is read, and rewritten with the new codec as it
    //    changes.
    let mut old: Session<SpeedyCodec> = Session::new(id.clone(), SystemTime::now(), None);
    old.insert("cart", &cart)?;
    let stored_by_old_server = envelope::encode(&old);

    type Rolling = Migrating<WireCodec, (SpeedyCodec,)>;
    let mut session: Session<Rolling> = envelope::decode(id.clone(), &stored_by_old_server)?;
    assert_eq!(session.get::<Cart>("cart")?, Some(cart.clone()));
    println!(
        "migrating: cart was written by {}, left to migrate: {:?}",
        session
            .value("cart")
            .map_or(CodecId::new(0), |value| value.codec()),
        Rolling::not_yet_migrated(&session).collect::<Vec<_>>()
    );
    Rolling::upgrade::<Cart>(&mut session, "cart")?;
    println!(
        "migrating: cart now written by {}, left to migrate: {:?}",
        session
            .value("cart")
            .map_or(CodecId::new(0), |value| value.codec()),
        Rolling::not_yet_migrated(&session).collect::<Vec<_>>()
    );

    // 3. Stored bytes compressed, then encrypted, whatever the codec.
    let layer = (
        Compression::lz4().threshold(64),
        Encryption::new(EncryptionKey::generate(1)),
    );
    let mut big = cart.clone();
    big.items = (0..200).map(|i| format!("organic apple no. {i}")).collect();
    session.insert("cart", &big)?;
    let envelope_bytes = envelope::encode(&session);
    let sealed = layer.seal(&id, envelope_bytes.clone())?;
    let opened = layer.open(&id, &sealed)?;
    let back: Session<Rolling> = envelope::decode(id, &opened)?;
    assert_eq!(back.get::<Cart>("cart")?, Some(big));
    let stats = layer.stats();
    println!(
        "layers: envelope {} bytes, stored {} bytes (compressed and encrypted; ratio {:.2})",
        envelope_bytes.len(),
        sealed.len(),
        stats.ratio().unwrap_or(1.0)
    );
    Ok(())
}
