//! The envelope: Tandem's own small, versioned binary format around a session's
//! attributes. It is what a remote store holds for a session.
//!
//! Layout of format version 1 (all integers little-endian):
//!
//! | field | size | meaning |
//! |---|---|---|
//! | magic | 4 | `TNDM` |
//! | version | 1 | format version, [`FORMAT_VERSION`] |
//! | flags | 1 | 0: a plain envelope (see below) |
//! | codec | 2 | [`CodecId`] of the codec that wrote the session |
//! | created | 8 | creation time, Unix milliseconds |
//! | last access | 8 | last access time, Unix milliseconds |
//! | max inactive | 8 | max inactive interval in milliseconds, 0 = never expires |
//! | count | 4 | number of attributes |
//! | attributes | | `count` entries, in strictly increasing name order |
//!
//! Each attribute entry: name length (2), name (UTF-8), codec id (2), value length (4),
//! value bytes. The per-attribute codec id lets a session carry attributes written by
//! an older codec until they change (rolling codec migration).
//!
//! The flags byte is 0 in every envelope. A non-zero value there marks a *sealed* blob:
//! stored bytes that a [stored-bytes layer](crate::layers) (compression, encryption)
//! produced from an envelope, which start with the same magic and version and name the
//! layer in this byte. [`decode`] refuses them with
//! [`UnsupportedFlags`](EnvelopeError::UnsupportedFlags): they must be opened by the
//! layer first. Because plain envelopes keep flags 0, stored bytes written before
//! layers were turned on still open after.
//!
//! Decoding treats its input as hostile: every length is checked against the bytes
//! that remain before anything is read or allocated, and garbage, truncated or
//! future-version input is a typed [`EnvelopeError`], never a panic.
//!
//! ```
//! # use std::time::{Duration, SystemTime};
//! # use tandem_core::{envelope, Codec, CodecError, CodecId, Encodes, NodeId, Session, SessionId};
//! # struct Raw;
//! # impl Codec for Raw { const ID: CodecId = CodecId::new(250); const NAME: &'static str = "raw"; }
//! # impl Encodes<[u8]> for Raw { fn encode(v: &[u8]) -> Result<Vec<u8>, CodecError> { Ok(v.to_vec()) } }
//! let id = SessionId::generate(&NodeId::new("n1").unwrap(), None);
//! let mut session: Session<Raw> = Session::new(id.clone(), SystemTime::now(), Some(Duration::from_secs(60)));
//! session.insert("blob", &b"\x00\x01"[..]).unwrap();
//!
//! let bytes = envelope::encode(&session);
//! let loaded: Session<Raw> = envelope::decode(id, &bytes).unwrap();
//! assert_eq!(loaded.value("blob").unwrap().bytes(), b"\x00\x01");
//! assert!(envelope::decode::<Raw>(loaded.id().clone(), &bytes[..10]).is_err());
//! ```

use std::sync::Arc;
use std::time::Duration;

use crate::codec::{Codec, CodecId};
use crate::id::SessionId;
use crate::session::{AttributeValue, MAX_ATTRIBUTE_NAME_LEN, Session};

/// The first four bytes of every envelope.
pub const MAGIC: [u8; 4] = *b"TNDM";
/// The envelope format version this build writes and reads.
pub const FORMAT_VERSION: u8 = 1;
/// Size of the fixed header in bytes.
pub const HEADER_LEN: usize = 4 + 1 + 1 + 2 + 8 + 8 + 8 + 4;
/// Smallest possible attribute entry: empty name and value.
const MIN_ENTRY_LEN: usize = 2 + 2 + 4;

/// Why stored bytes are not a session this reader can use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EnvelopeError {
    /// The bytes do not start with [`MAGIC`]: not an envelope at all.
    #[error("not a Tandem envelope (bad magic)")]
    BadMagic,
    /// Written by a newer (or unknown) format version.
    #[error("envelope format version {found} is not supported (this build reads {FORMAT_VERSION})")]
    UnsupportedVersion {
        /// The version found in the bytes.
        found: u8,
    },
    /// Header flags this build does not understand: most likely a blob sealed by a
    /// stored-bytes layer (compression, encryption) that was not opened first.
    #[error(
        "envelope has unsupported flags {flags:#04x} (a blob sealed by a stored-bytes layer must be opened by that layer first)"
    )]
    UnsupportedFlags {
        /// The flags found in the bytes.
        flags: u8,
    },
    /// Written by a codec this reader cannot read.
    #[error("session was written by {written_by}, which {reader} cannot read")]
    CodecMismatch {
        /// The codec recorded in the envelope (or attribute entry).
        written_by: CodecId,
        /// The codec asked to read it.
        reader: CodecId,
    },
    /// The input ended inside a field.
    #[error("envelope truncated in {field}")]
    Truncated {
        /// The field being read.
        field: &'static str,
    },
    /// An attribute name is empty, too long or not UTF-8.
    #[error("envelope has an invalid attribute name")]
    InvalidName,
    /// Attribute names are not in strictly increasing order (a duplicate or a
    /// reordering: neither is ever written).
    #[error("envelope attribute names are duplicated or out of order")]
    UnorderedNames,
    /// Bytes remain after the last attribute.
    #[error("envelope has {count} unexpected trailing bytes")]
    TrailingBytes {
        /// How many bytes remain.
        count: usize,
    },
}

/// The header fields of an envelope, readable without decoding the attributes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Format version.
    pub version: u8,
    /// Codec that wrote the session.
    pub codec: CodecId,
    /// Creation time, Unix milliseconds.
    pub created_ms: u64,
    /// Last access time, Unix milliseconds.
    pub last_accessed_ms: u64,
    /// Max inactive interval; `None` means never expires.
    pub max_inactive: Option<Duration>,
    /// Number of attributes.
    pub attribute_count: u32,
}

/// The length of `session`'s envelope, without encoding it.
///
/// ```
/// # use std::time::SystemTime;
/// # use tandem_core::{envelope, Codec, CodecError, CodecId, Encodes, NodeId, Session, SessionId};
/// # struct Raw;
/// # impl Codec for Raw { const ID: CodecId = CodecId::new(250); const NAME: &'static str = "raw"; }
/// # impl Encodes<[u8]> for Raw { fn encode(v: &[u8]) -> Result<Vec<u8>, CodecError> { Ok(v.to_vec()) } }
/// let id = SessionId::generate(&NodeId::new("n1").unwrap(), None);
/// let mut session: Session<Raw> = Session::new(id, SystemTime::now(), None);
/// session.insert("blob", &[7u8; 100][..]).unwrap();
/// assert_eq!(envelope::encoded_len(&session), envelope::encode(&session).len());
/// ```
pub fn encoded_len<C: Codec>(session: &Session<C>) -> usize {
    HEADER_LEN
        + session
            .values()
            .map(|(name, value)| MIN_ENTRY_LEN + name.len() + value.bytes().len())
            .sum::<usize>()
}

/// Encodes `session` as an envelope. The header records `C` as the writer.
pub fn encode<C: Codec>(session: &Session<C>) -> Vec<u8> {
    let mut out = Vec::with_capacity(encoded_len(session));
    out.extend_from_slice(&MAGIC);
    out.push(FORMAT_VERSION);
    out.push(0);
    out.extend_from_slice(&C::ID.get().to_le_bytes());
    out.extend_from_slice(&session.created_ms().to_le_bytes());
    out.extend_from_slice(&session.last_accessed_ms().to_le_bytes());
    let max_inactive_ms = session.max_inactive().map_or(0, |interval| {
        u64::try_from(interval.as_millis()).unwrap_or(u64::MAX)
    });
    out.extend_from_slice(&max_inactive_ms.to_le_bytes());
    // Counts and lengths fit their fields: names are capped at MAX_ATTRIBUTE_NAME_LEN,
    // and a value or attribute count beyond u32 could never be stored remotely anyway.
    out.extend_from_slice(&u32_len(session.len()).to_le_bytes());
    for (name, value) in session.values() {
        out.extend_from_slice(&(name.len() as u16).to_le_bytes());
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(&value.codec().get().to_le_bytes());
        out.extend_from_slice(&u32_len(value.bytes().len()).to_le_bytes());
        out.extend_from_slice(value.bytes());
    }
    out
}

fn u32_len(len: usize) -> u32 {
    u32::try_from(len).expect("attribute sizes are far below 4 GiB")
}

/// Reads the header of an envelope without decoding the attributes.
pub fn header(bytes: &[u8]) -> Result<Header, EnvelopeError> {
    let mut reader = Reader { rest: bytes };
    read_header(&mut reader)
}

/// Decodes an envelope stored under `id` into a session for codec `C`.
///
/// The envelope's codec, and every attribute's, must be one `C` reads
/// ([`Codec::reads`]); otherwise the result is
/// [`CodecMismatch`](EnvelopeError::CodecMismatch).
pub fn decode<C: Codec>(id: SessionId, bytes: &[u8]) -> Result<Session<C>, EnvelopeError> {
    let mut reader = Reader { rest: bytes };
    let header = read_header(&mut reader)?;
    check_codec::<C>(header.codec)?;
    // The count is untrusted: it may only claim as many entries as could fit.
    if header.attribute_count as usize > reader.rest.len() / MIN_ENTRY_LEN {
        return Err(EnvelopeError::Truncated {
            field: "attributes",
        });
    }
    let mut attributes = Vec::with_capacity(header.attribute_count as usize);
    let mut previous: Option<&str> = None;
    for _ in 0..header.attribute_count {
        let name_len = usize::from(reader.u16("attribute name length")?);
        let name = reader.take(name_len, "attribute name")?;
        let name = std::str::from_utf8(name).map_err(|_| EnvelopeError::InvalidName)?;
        if name.is_empty() || name.len() > MAX_ATTRIBUTE_NAME_LEN {
            return Err(EnvelopeError::InvalidName);
        }
        if previous.is_some_and(|previous| previous >= name) {
            return Err(EnvelopeError::UnorderedNames);
        }
        previous = Some(name);
        let codec = CodecId::new(reader.u16("attribute codec")?);
        check_codec::<C>(codec)?;
        let value_len = reader.u32("attribute value length")? as usize;
        let value = reader.take(value_len, "attribute value")?;
        attributes.push((Arc::from(name), AttributeValue::new(codec, value)));
    }
    if !reader.rest.is_empty() {
        return Err(EnvelopeError::TrailingBytes {
            count: reader.rest.len(),
        });
    }
    Ok(Session::from_stored(
        id,
        header.created_ms,
        header.last_accessed_ms,
        header.max_inactive,
        attributes,
    ))
}

fn check_codec<C: Codec>(written_by: CodecId) -> Result<(), EnvelopeError> {
    if C::reads(written_by) {
        Ok(())
    } else {
        Err(EnvelopeError::CodecMismatch {
            written_by,
            reader: C::ID,
        })
    }
}

fn read_header(reader: &mut Reader<'_>) -> Result<Header, EnvelopeError> {
    if reader.rest.len() < MAGIC.len() || reader.rest[..MAGIC.len()] != MAGIC {
        return Err(EnvelopeError::BadMagic);
    }
    reader.take(MAGIC.len(), "magic")?;
    let version = reader.u8("version")?;
    if version != FORMAT_VERSION {
        return Err(EnvelopeError::UnsupportedVersion { found: version });
    }
    let flags = reader.u8("flags")?;
    if flags != 0 {
        return Err(EnvelopeError::UnsupportedFlags { flags });
    }
    let codec = CodecId::new(reader.u16("codec")?);
    let created_ms = reader.u64("creation time")?;
    let last_accessed_ms = reader.u64("last access time")?;
    let max_inactive_ms = reader.u64("max inactive interval")?;
    let attribute_count = reader.u32("attribute count")?;
    Ok(Header {
        version,
        codec,
        created_ms,
        last_accessed_ms,
        max_inactive: Some(Duration::from_millis(max_inactive_ms))
            .filter(|interval| !interval.is_zero()),
        attribute_count,
    })
}

/// A cursor over untrusted bytes: every read checks the remaining length first.
struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, len: usize, field: &'static str) -> Result<&'a [u8], EnvelopeError> {
        if len > self.rest.len() {
            return Err(EnvelopeError::Truncated { field });
        }
        let (taken, rest) = self.rest.split_at(len);
        self.rest = rest;
        Ok(taken)
    }

    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], EnvelopeError> {
        let bytes = self.take(N, field)?;
        Ok(bytes.try_into().expect("take returned N bytes"))
    }

    fn u8(&mut self, field: &'static str) -> Result<u8, EnvelopeError> {
        Ok(self.array::<1>(field)?[0])
    }

    fn u16(&mut self, field: &'static str) -> Result<u16, EnvelopeError> {
        Ok(u16::from_le_bytes(self.array(field)?))
    }

    fn u32(&mut self, field: &'static str) -> Result<u32, EnvelopeError> {
        Ok(u32::from_le_bytes(self.array(field)?))
    }

    fn u64(&mut self, field: &'static str) -> Result<u64, EnvelopeError> {
        Ok(u64::from_le_bytes(self.array(field)?))
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;
    use crate::codec::{CodecError, Decodes, Encodes};
    use crate::session::tests::{TextCodec, new_session};
    use proptest::prelude::*;

    /// A second test codec, to check mismatch handling.
    struct OtherCodec;

    impl Codec for OtherCodec {
        const ID: CodecId = CodecId::new(202);
        const NAME: &'static str = "other";
    }

    impl Encodes<str> for OtherCodec {
        fn encode(value: &str) -> Result<Vec<u8>, CodecError> {
            Ok(value.as_bytes().to_vec())
        }
    }

    /// Reads both test codecs' bytes, like a codec in the middle of a migration.
    struct BothCodec;

    impl Codec for BothCodec {
        const ID: CodecId = CodecId::new(203);
        const NAME: &'static str = "both";

        fn reads(written_by: CodecId) -> bool {
            [Self::ID, TextCodec::ID, OtherCodec::ID].contains(&written_by)
        }
    }

    impl Decodes<String> for BothCodec {
        fn decode(bytes: &[u8]) -> Result<String, CodecError> {
            String::from_utf8(bytes.to_vec()).map_err(|error| CodecError::decode(Self::ID, error))
        }

        fn decode_written_by(written_by: CodecId, bytes: &[u8]) -> Result<String, CodecError> {
            match written_by {
                w if Self::reads(w) => Self::decode(bytes),
                _ => Err(CodecError::Mismatch {
                    written_by,
                    reader: Self::ID,
                }),
            }
        }
    }

    fn sample() -> Session<TextCodec> {
        let mut session = new_session();
        session.insert("user", "ann").unwrap();
        session.insert("cart", "3 apples").unwrap();
        session.insert("empty", "").unwrap();
        session.insert("ünïcode", "✓").unwrap();
        session
    }

    #[test]
    fn round_trip_keeps_everything() {
        let mut session = sample();
        session.touch(SystemTime::now() + Duration::from_secs(5));
        let bytes = encode(&session);
        let loaded: Session<TextCodec> = decode(session.id().clone(), &bytes).unwrap();
        assert_eq!(loaded.id(), session.id());
        assert_eq!(loaded.created(), session.created());
        assert_eq!(loaded.last_accessed(), session.last_accessed());
        assert_eq!(loaded.max_inactive(), session.max_inactive());
        assert_eq!(
            loaded.values().collect::<Vec<_>>(),
            session.values().collect::<Vec<_>>()
        );
        assert!(!loaded.is_modified());
        assert_eq!(encode(&loaded), bytes);
    }

    #[test]
    fn header_is_readable_alone() {
        let session = sample();
        let header = header(&encode(&session)).unwrap();
        assert_eq!(header.version, FORMAT_VERSION);
        assert_eq!(header.codec, TextCodec::ID);
        assert_eq!(header.attribute_count, 4);
        assert_eq!(header.max_inactive, Some(Duration::from_secs(60)));
    }

    #[test]
    fn never_expiring_sessions_stay_never_expiring() {
        let mut session = sample();
        session.set_max_inactive(None);
        let loaded: Session<TextCodec> = decode(session.id().clone(), &encode(&session)).unwrap();
        assert_eq!(loaded.max_inactive(), None);
        assert_eq!(loaded.expires_at(), None);
    }

    #[test]
    fn another_codec_is_a_mismatch_not_garbage() {
        let session = sample();
        let bytes = encode(&session);
        let error = decode::<OtherCodec>(session.id().clone(), &bytes).unwrap_err();
        assert_eq!(
            error,
            EnvelopeError::CodecMismatch {
                written_by: TextCodec::ID,
                reader: OtherCodec::ID
            }
        );
        assert!(error.to_string().contains("codec 201"), "{error}");
    }

    #[test]
    fn a_migrating_codec_reads_both() {
        let session = sample();
        let loaded: Session<BothCodec> = decode(session.id().clone(), &encode(&session)).unwrap();
        assert_eq!(
            loaded.get::<String>("user").unwrap().as_deref(),
            Some("ann")
        );
        assert_eq!(loaded.value("user").unwrap().codec(), TextCodec::ID);
    }

    #[test]
    fn future_versions_and_flags_are_refused() {
        let mut bytes = encode(&sample());
        bytes[4] = FORMAT_VERSION + 1;
        assert_eq!(
            header(&bytes),
            Err(EnvelopeError::UnsupportedVersion {
                found: FORMAT_VERSION + 1
            })
        );
        let mut bytes = encode(&sample());
        bytes[5] = 0x80;
        assert_eq!(
            header(&bytes),
            Err(EnvelopeError::UnsupportedFlags { flags: 0x80 })
        );
    }

    #[test]
    fn structural_errors_are_typed() {
        let session = sample();
        let id = session.id().clone();
        let bytes = encode(&session);
        assert_eq!(
            decode::<TextCodec>(id.clone(), b"").unwrap_err(),
            EnvelopeError::BadMagic
        );
        assert_eq!(
            decode::<TextCodec>(id.clone(), b"{\"json\":1}").unwrap_err(),
            EnvelopeError::BadMagic
        );
        for cut in [5, HEADER_LEN - 1, HEADER_LEN + 1, bytes.len() - 1] {
            let error = decode::<TextCodec>(id.clone(), &bytes[..cut]).unwrap_err();
            assert!(
                matches!(error, EnvelopeError::Truncated { .. }),
                "cut {cut}: {error:?}"
            );
        }
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert_eq!(
            decode::<TextCodec>(id.clone(), &trailing).unwrap_err(),
            EnvelopeError::TrailingBytes { count: 1 }
        );
        let mut huge_count = bytes.clone();
        huge_count[HEADER_LEN - 4..HEADER_LEN].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            decode::<TextCodec>(id.clone(), &huge_count).unwrap_err(),
            EnvelopeError::Truncated { .. }
        ));
        let mut huge_value = bytes.clone();
        // The first entry is "cart": 2 + 4 name bytes + 2 codec bytes, then its length.
        let value_len_at = HEADER_LEN + 2 + 4 + 2;
        huge_value[value_len_at..value_len_at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(
            decode::<TextCodec>(id, &huge_value).unwrap_err(),
            EnvelopeError::Truncated {
                field: "attribute value"
            }
        );
    }

    #[test]
    fn duplicated_names_are_refused() {
        let mut session = new_session();
        session.insert("aa", "1").unwrap();
        session.insert("ab", "2").unwrap();
        let mut bytes = encode(&session);
        // Turn "ab" into "aa": entry 1 is 2+2+2+4+1 bytes, then the second name.
        let second_name = HEADER_LEN + 11 + 2;
        bytes[second_name + 1] = b'a';
        assert_eq!(
            decode::<TextCodec>(session.id().clone(), &bytes).unwrap_err(),
            EnvelopeError::UnorderedNames
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(tandem_testkit::proptest_cases(2_000)))]

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let id = new_session().id().clone();
            let _ = decode::<TextCodec>(id, &bytes);
        }

        #[test]
        fn random_bytes_behind_a_valid_header_never_panic(
            count in any::<u32>(),
            body in proptest::collection::vec(any::<u8>(), 0..512),
        ) {
            let session = new_session();
            let mut bytes = encode(&session);
            bytes[HEADER_LEN - 4..].copy_from_slice(&count.to_le_bytes());
            bytes.extend_from_slice(&body);
            let _ = decode::<TextCodec>(session.id().clone(), &bytes);
        }

        #[test]
        fn mutated_envelopes_decode_or_fail_cleanly(
            flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
            cut in any::<prop::sample::Index>(),
            truncate in any::<bool>(),
        ) {
            let session = sample();
            let mut bytes = encode(&session);
            for (at, value) in flips {
                let at = at.index(bytes.len());
                bytes[at] = value;
            }
            if truncate {
                bytes.truncate(cut.index(bytes.len() + 1));
            }
            if let Ok(decoded) = decode::<TextCodec>(session.id().clone(), &bytes) {
                // Whatever decodes re-encodes to exactly the input: nothing was misread.
                prop_assert_eq!(encode(&decoded), bytes);
            }
        }
    }
}
