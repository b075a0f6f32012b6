//! Stored-bytes layers: what happens to an envelope between [`envelope::encode`] and
//! the remote store, and back before [`envelope::decode`].
//!
//! A [`BlobLayer`] *seals* an envelope into the bytes that are stored (compressing or
//! encrypting it) and *opens* stored bytes back into an envelope. This crate defines the
//! trait, the framing every sealed blob shares, [`NoLayer`] (stores envelopes as they
//! are) and stacking (a pair `(first, second)` is itself a layer); the compression and
//! encryption layers live in `tandem-codec`, so that this crate stays free of
//! compression and crypto dependencies.
//!
//! # Framing
//!
//! A sealed blob starts like an envelope, with the magic `TNDM` and format version 1,
//! but its next byte (the envelope's flags byte, always 0 in a plain envelope) names the
//! layer that sealed it ([`LayerKind`]). What follows is the layer's own format; the
//! payload of a layer is usually another blob (a plain envelope, or a blob sealed by the
//! layer below), so layers nest.
//!
//! | bytes | meaning |
//! |---|---|
//! | 0..4 | magic `TNDM` |
//! | 4 | version, 1 |
//! | 5 | [`LayerKind`]: 0 for a plain envelope, anything else for a sealed blob |
//!
//! Every layer opens bytes it did not seal unchanged (except where it is configured to
//! refuse them, like an encryption layer that requires encryption). That is what makes
//! layers safe to turn on in a running cluster: sessions stored before, as plain
//! envelopes, still open; and a layer that decides not to seal a blob (too small to be
//! worth compressing) just hands the envelope through.
//!
//! # How a manager uses a layer
//!
//! ```
//! use std::time::SystemTime;
//! use tandem_core::layers::{BlobLayer, NoLayer};
//! # use tandem_core::{envelope, Codec, CodecError, CodecId, Encodes, NodeId, Session, SessionId};
//! # struct Raw;
//! # impl Codec for Raw { const ID: CodecId = CodecId::new(250); const NAME: &'static str = "raw"; }
//! # impl Encodes<[u8]> for Raw { fn encode(v: &[u8]) -> Result<Vec<u8>, CodecError> { Ok(v.to_vec()) } }
//!
//! let layer = NoLayer; // or tandem_codec's Compression, Encryption, or a pair of them
//! let id = SessionId::generate(&NodeId::new("n1").unwrap(), None);
//! let mut session: Session<Raw> = Session::new(id.clone(), SystemTime::now(), None);
//! session.insert("blob", &b"\x01\x02"[..]).unwrap();
//!
//! // Writing: envelope, then seal; the sealed bytes are what the store gets.
//! let stored = layer.seal(&id, envelope::encode(&session)).unwrap();
//! // Reading: open, then envelope.
//! let opened = layer.open(&id, &stored).unwrap();
//! let loaded: Session<Raw> = envelope::decode(id, &opened).unwrap();
//! assert_eq!(loaded.value("blob").unwrap().bytes(), b"\x01\x02");
//! ```
//!
//! Both directions take the session's id: a layer may bind the blob to it (the
//! encryption layer authenticates the id's random part), so a blob copied under
//! another session's key does not open. The random part survives relocation and
//! takeover, so stored bytes may be copied verbatim when only the node or route part of
//! an id changes; when the random part changes (id cycling), re-seal.
//!
//! [`envelope::encode`]: crate::envelope::encode
//! [`envelope::decode`]: crate::envelope::decode

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::envelope::MAGIC;
use crate::id::SessionId;

/// The version byte of sealed blobs (byte 4, where an envelope keeps its format
/// version).
pub const SEALED_VERSION: u8 = 1;
/// Length of the header every sealed blob starts with: magic, version, layer kind.
pub const SEALED_HEADER_LEN: usize = MAGIC.len() + 2;

/// Names the layer that sealed a blob: byte 5 of the stored bytes.
///
/// Kind 0 is reserved for plain envelopes. Kinds 1 to 127 are reserved for the layers
/// Tandem ships; layers outside Tandem take 128 and up.
///
/// ```
/// use tandem_core::layers::{LayerKind, sealed_kind};
///
/// let kind = LayerKind::new(200).unwrap();
/// let mut blob = kind.header().to_vec();
/// blob.extend_from_slice(b"payload");
/// assert_eq!(sealed_kind(&blob), Some(kind));
/// assert_eq!(LayerKind::new(0), None); // 0 is a plain envelope
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LayerKind(u8);

impl LayerKind {
    /// LZ4 block compression.
    pub const LZ4: LayerKind = LayerKind(1);
    /// zstd compression.
    pub const ZSTD: LayerKind = LayerKind(2);
    /// AES-256-GCM encryption.
    pub const AES_256_GCM: LayerKind = LayerKind(16);
    /// First kind available to layers outside Tandem.
    pub const FIRST_USER: u8 = 128;

    /// A layer kind from its number; `None` for 0, which marks a plain envelope.
    pub const fn new(kind: u8) -> Option<LayerKind> {
        if kind == 0 {
            None
        } else {
            Some(LayerKind(kind))
        }
    }

    /// The number stored in byte 5.
    pub const fn get(self) -> u8 {
        self.0
    }

    /// The header a blob sealed by this layer starts with.
    pub const fn header(self) -> [u8; SEALED_HEADER_LEN] {
        [
            MAGIC[0],
            MAGIC[1],
            MAGIC[2],
            MAGIC[3],
            SEALED_VERSION,
            self.0,
        ]
    }

    /// The name of a layer Tandem ships, if this is one.
    pub fn well_known_name(self) -> Option<&'static str> {
        match self {
            LayerKind::LZ4 => Some("lz4"),
            LayerKind::ZSTD => Some("zstd"),
            LayerKind::AES_256_GCM => Some("aes-256-gcm"),
            _ => None,
        }
    }
}

impl fmt::Display for LayerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.well_known_name() {
            Some(name) => write!(f, "{name} (layer {})", self.0),
            None => write!(f, "layer {}", self.0),
        }
    }
}

impl fmt::Debug for LayerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LayerKind({self})")
    }
}

/// The layer that sealed `stored`; `None` for a plain envelope and for bytes that are
/// not a Tandem blob at all (the envelope decoder reports those).
pub fn sealed_kind(stored: &[u8]) -> Option<LayerKind> {
    match stored {
        [m0, m1, m2, m3, SEALED_VERSION, kind, ..] if [*m0, *m1, *m2, *m3] == MAGIC => {
            LayerKind::new(*kind)
        }
        _ => None,
    }
}

/// What follows the header of `stored`, if `stored` was sealed by `kind`.
///
/// ```
/// use tandem_core::layers::{LayerKind, sealed_payload};
///
/// let mut blob = LayerKind::LZ4.header().to_vec();
/// blob.extend_from_slice(b"rest");
/// assert_eq!(sealed_payload(&blob, LayerKind::LZ4), Some(&b"rest"[..]));
/// assert_eq!(sealed_payload(&blob, LayerKind::ZSTD), None);
/// ```
pub fn sealed_payload(stored: &[u8], kind: LayerKind) -> Option<&[u8]> {
    (sealed_kind(stored) == Some(kind)).then(|| &stored[SEALED_HEADER_LEN..])
}

/// Why a layer could not seal or open a blob.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LayerError {
    /// The blob names this layer but its content is not what the layer writes
    /// (truncated, bad lengths, corrupt compressed data).
    #[error("{layer} blob is malformed: {reason}")]
    Malformed {
        /// The layer that refused the blob.
        layer: &'static str,
        /// What was wrong.
        reason: String,
    },
    /// Opening the blob would produce more bytes than the layer is configured to
    /// allow (a decompression bomb, or a session far larger than any this cluster
    /// writes).
    #[error("{layer} blob would open to {size} bytes, over the limit of {limit}")]
    TooLarge {
        /// The layer that refused the blob.
        layer: &'static str,
        /// The size the blob claims.
        size: u64,
        /// The configured limit.
        limit: usize,
    },
    /// The blob failed authentication: it was changed after it was sealed, copied from
    /// another session id, or encrypted by another cluster with a different key under
    /// the same key id.
    #[error(
        "encrypted blob failed authentication under key id {key_id} (tampered, moved from another session, or foreign)"
    )]
    Tampered {
        /// The key id the blob names.
        key_id: u32,
    },
    /// The blob was encrypted with a key id this layer has no key for.
    #[error("blob was encrypted with key id {key_id}, which is not configured")]
    UnknownKey {
        /// The key id the blob names.
        key_id: u32,
    },
    /// The blob is not encrypted, and the layer is configured to require encryption.
    #[error("blob is not encrypted, and encryption is required")]
    Unencrypted,
    /// The layer could not seal the blob.
    #[error("{layer} could not seal the blob: {reason}")]
    Seal {
        /// The layer that failed.
        layer: &'static str,
        /// What went wrong.
        reason: String,
    },
}

/// A snapshot of what a layer has done, for the manager's statistics.
///
/// For a stack of layers, `bytes_in` is what the first layer was given (envelope
/// bytes) and `bytes_out` what the last one produced (stored bytes), so
/// [`ratio`](LayerStats::ratio) is the whole stack's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LayerStats {
    /// Blobs sealed.
    pub sealed: u64,
    /// Bytes given to `seal`.
    pub bytes_in: u64,
    /// Bytes `seal` returned.
    pub bytes_out: u64,
    /// Blobs opened successfully, including blobs passed through unchanged.
    pub opened: u64,
    /// Blobs `open` refused (malformed, too large, tampered, unknown key, not
    /// encrypted when encryption is required).
    pub rejected: u64,
}

impl LayerStats {
    /// Stored bytes per envelope byte over everything sealed (below 1.0: the layer
    /// saves space); `None` before anything was sealed.
    ///
    /// ```
    /// let stats = tandem_core::layers::LayerStats { sealed: 2, bytes_in: 4000, bytes_out: 1000, ..Default::default() };
    /// assert_eq!(stats.ratio(), Some(0.25));
    /// ```
    pub fn ratio(&self) -> Option<f64> {
        (self.bytes_in > 0).then(|| self.bytes_out as f64 / self.bytes_in as f64)
    }
}

/// Lock-free counters behind [`LayerStats`], for layer implementations to embed.
///
/// ```
/// use tandem_core::layers::LayerCounters;
///
/// let counters = LayerCounters::default();
/// counters.record_seal(2048, 600);
/// counters.record_open();
/// counters.record_rejected();
/// let stats = counters.snapshot();
/// assert_eq!((stats.sealed, stats.bytes_in, stats.bytes_out), (1, 2048, 600));
/// assert_eq!((stats.opened, stats.rejected), (1, 1));
/// ```
#[derive(Debug, Default)]
pub struct LayerCounters {
    sealed: AtomicU64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    opened: AtomicU64,
    rejected: AtomicU64,
}

impl LayerCounters {
    /// Records one sealed blob: `bytes_in` given, `bytes_out` returned.
    pub fn record_seal(&self, bytes_in: usize, bytes_out: usize) {
        self.sealed.fetch_add(1, Ordering::Relaxed);
        self.bytes_in.fetch_add(bytes_in as u64, Ordering::Relaxed);
        self.bytes_out
            .fetch_add(bytes_out as u64, Ordering::Relaxed);
    }

    /// Records one blob opened (or passed through).
    pub fn record_open(&self) {
        self.opened.fetch_add(1, Ordering::Relaxed);
    }

    /// Records one blob refused by `open`.
    pub fn record_rejected(&self) {
        self.rejected.fetch_add(1, Ordering::Relaxed);
    }

    /// The counts so far.
    pub fn snapshot(&self) -> LayerStats {
        LayerStats {
            sealed: self.sealed.load(Ordering::Relaxed),
            bytes_in: self.bytes_in.load(Ordering::Relaxed),
            bytes_out: self.bytes_out.load(Ordering::Relaxed),
            opened: self.opened.load(Ordering::Relaxed),
            rejected: self.rejected.load(Ordering::Relaxed),
        }
    }
}

/// A transformation of the stored bytes: seals envelopes on the way to the remote store
/// and opens stored bytes on the way back.
///
/// Implementations must:
/// - open every blob they sealed, under the same session id;
/// - open bytes they did not seal unchanged ([`Cow::Borrowed`]), unless configured to
///   refuse them, so that plain envelopes stored before the layer was turned on still
///   open;
/// - treat stored bytes as hostile: malformed input is a [`LayerError`], never a panic,
///   and nothing is allocated on the strength of an unchecked length;
/// - count what they do ([`stats`](BlobLayer::stats)).
///
/// The trait is object safe: a manager may hold an `Arc<dyn BlobLayer>`.
///
/// ```
/// use std::borrow::Cow;
/// use tandem_core::SessionId;
/// use tandem_core::layers::{BlobLayer, LayerCounters, LayerError, LayerKind, LayerStats, sealed_payload};
///
/// /// Reverses the bytes (a stand-in for a real transformation).
/// #[derive(Default)]
/// struct Reverse(LayerCounters);
///
/// const REVERSE: LayerKind = LayerKind::new(130).unwrap();
///
/// impl BlobLayer for Reverse {
///     fn seal(&self, _id: &SessionId, envelope: Vec<u8>) -> Result<Vec<u8>, LayerError> {
///         let mut out = REVERSE.header().to_vec();
///         out.extend(envelope.iter().rev());
///         self.0.record_seal(envelope.len(), out.len());
///         Ok(out)
///     }
///
///     fn open<'a>(&self, _id: &SessionId, stored: &'a [u8]) -> Result<Cow<'a, [u8]>, LayerError> {
///         self.0.record_open();
///         Ok(match sealed_payload(stored, REVERSE) {
///             Some(payload) => Cow::Owned(payload.iter().rev().copied().collect()),
///             None => Cow::Borrowed(stored),
///         })
///     }
///
///     fn stats(&self) -> LayerStats {
///         self.0.snapshot()
///     }
/// }
///
/// let id = SessionId::generate(&tandem_core::NodeId::new("n1").unwrap(), None);
/// let layer = Reverse::default();
/// let stored = layer.seal(&id, b"TNDM\x01\x00abc".to_vec()).unwrap();
/// assert_eq!(&*layer.open(&id, &stored).unwrap(), b"TNDM\x01\x00abc");
/// assert_eq!(&*layer.open(&id, b"TNDM\x01\x00plain").unwrap(), b"TNDM\x01\x00plain");
/// ```
pub trait BlobLayer: Send + Sync + 'static {
    /// Seals an envelope (or a blob sealed by the layer below) into the bytes to store.
    fn seal(&self, id: &SessionId, envelope: Vec<u8>) -> Result<Vec<u8>, LayerError>;

    /// Opens stored bytes into what was given to [`seal`](BlobLayer::seal); bytes this
    /// layer did not seal come back unchanged.
    fn open<'a>(&self, id: &SessionId, stored: &'a [u8]) -> Result<Cow<'a, [u8]>, LayerError>;

    /// What this layer has done so far. The default reports nothing.
    fn stats(&self) -> LayerStats {
        LayerStats::default()
    }

    /// The most bytes [`seal`](BlobLayer::seal) may add to what it is given (a header
    /// and a tag, say): the manager counts them in when it checks a session against
    /// the store's item limit, so that a session it accepts is never refused by the
    /// store. The default, 0, is right for layers that never make a blob larger
    /// (compression that keeps incompressible blobs as they are).
    fn max_overhead(&self) -> usize {
        0
    }
}

/// The layer that stores envelopes as they are.
///
/// ```
/// use tandem_core::layers::{BlobLayer, NoLayer};
/// # let id = tandem_core::SessionId::generate(&tandem_core::NodeId::new("n1").unwrap(), None);
/// assert_eq!(NoLayer.seal(&id, b"abc".to_vec()).unwrap(), b"abc");
/// assert_eq!(&*NoLayer.open(&id, b"abc").unwrap(), b"abc");
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NoLayer;

impl BlobLayer for NoLayer {
    fn seal(&self, _id: &SessionId, envelope: Vec<u8>) -> Result<Vec<u8>, LayerError> {
        Ok(envelope)
    }

    fn open<'a>(&self, _id: &SessionId, stored: &'a [u8]) -> Result<Cow<'a, [u8]>, LayerError> {
        Ok(Cow::Borrowed(stored))
    }
}

/// Two layers stacked: `(first, second)` seals with `first`, then `second`, and opens
/// in the reverse order. Compression goes first and encryption second (encrypted bytes
/// do not compress). Nest pairs for more layers: `((a, b), c)`.
///
/// ```
/// use tandem_core::layers::{BlobLayer, NoLayer};
/// # let id = tandem_core::SessionId::generate(&tandem_core::NodeId::new("n1").unwrap(), None);
/// let stack = (NoLayer, NoLayer);
/// let stored = stack.seal(&id, b"abc".to_vec()).unwrap();
/// assert_eq!(&*stack.open(&id, &stored).unwrap(), b"abc");
/// ```
impl<A: BlobLayer, B: BlobLayer> BlobLayer for (A, B) {
    fn seal(&self, id: &SessionId, envelope: Vec<u8>) -> Result<Vec<u8>, LayerError> {
        self.1.seal(id, self.0.seal(id, envelope)?)
    }

    fn open<'a>(&self, id: &SessionId, stored: &'a [u8]) -> Result<Cow<'a, [u8]>, LayerError> {
        match self.1.open(id, stored)? {
            Cow::Borrowed(inner) => self.0.open(id, inner),
            Cow::Owned(inner) => {
                // `inner` is local: hand it on if the first layer passed it through.
                let opened = match self.0.open(id, &inner)? {
                    Cow::Borrowed(_) => None,
                    Cow::Owned(opened) => Some(opened),
                };
                Ok(Cow::Owned(opened.unwrap_or(inner)))
            }
        }
    }

    fn stats(&self) -> LayerStats {
        let (first, second) = (self.0.stats(), self.1.stats());
        LayerStats {
            sealed: second.sealed,
            bytes_in: first.bytes_in,
            bytes_out: second.bytes_out,
            opened: first.opened,
            rejected: first.rejected + second.rejected,
        }
    }

    fn max_overhead(&self) -> usize {
        self.0.max_overhead().saturating_add(self.1.max_overhead())
    }
}

impl<L: BlobLayer + ?Sized> BlobLayer for Box<L> {
    fn seal(&self, id: &SessionId, envelope: Vec<u8>) -> Result<Vec<u8>, LayerError> {
        (**self).seal(id, envelope)
    }

    fn open<'a>(&self, id: &SessionId, stored: &'a [u8]) -> Result<Cow<'a, [u8]>, LayerError> {
        (**self).open(id, stored)
    }

    fn stats(&self) -> LayerStats {
        (**self).stats()
    }

    fn max_overhead(&self) -> usize {
        (**self).max_overhead()
    }
}

impl<L: BlobLayer + ?Sized> BlobLayer for Arc<L> {
    fn seal(&self, id: &SessionId, envelope: Vec<u8>) -> Result<Vec<u8>, LayerError> {
        (**self).seal(id, envelope)
    }

    fn open<'a>(&self, id: &SessionId, stored: &'a [u8]) -> Result<Cow<'a, [u8]>, LayerError> {
        (**self).open(id, stored)
    }

    fn stats(&self) -> LayerStats {
        (**self).stats()
    }

    fn max_overhead(&self) -> usize {
        (**self).max_overhead()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::NodeId;

    fn id() -> SessionId {
        SessionId::generate(&NodeId::new("n1").expect("valid node"), None)
    }

    /// Prepends its header and a marker byte; opens only its own blobs.
    struct Tag {
        kind: LayerKind,
        counters: LayerCounters,
    }

    impl Tag {
        fn new(kind: u8) -> Tag {
            Tag {
                kind: LayerKind::new(kind).expect("non-zero kind"),
                counters: LayerCounters::default(),
            }
        }
    }

    impl BlobLayer for Tag {
        fn seal(&self, _id: &SessionId, envelope: Vec<u8>) -> Result<Vec<u8>, LayerError> {
            let mut out = self.kind.header().to_vec();
            out.extend_from_slice(&envelope);
            self.counters.record_seal(envelope.len(), out.len());
            Ok(out)
        }

        fn open<'a>(&self, _id: &SessionId, stored: &'a [u8]) -> Result<Cow<'a, [u8]>, LayerError> {
            match sealed_payload(stored, self.kind) {
                Some([]) => {
                    self.counters.record_rejected();
                    Err(LayerError::Malformed {
                        layer: "tag",
                        reason: "empty".into(),
                    })
                }
                Some(payload) => {
                    self.counters.record_open();
                    Ok(Cow::Owned(payload.to_vec()))
                }
                None => {
                    self.counters.record_open();
                    Ok(Cow::Borrowed(stored))
                }
            }
        }

        fn stats(&self) -> LayerStats {
            self.counters.snapshot()
        }
    }

    #[test]
    fn plain_envelopes_and_garbage_are_not_sealed() {
        assert_eq!(sealed_kind(b""), None);
        assert_eq!(sealed_kind(b"TNDM\x01"), None);
        assert_eq!(sealed_kind(b"TNDM\x01\x00rest"), None);
        assert_eq!(sealed_kind(b"TNDM\x02\x01rest"), None);
        assert_eq!(sealed_kind(b"XNDM\x01\x01rest"), None);
        assert_eq!(sealed_kind(b"TNDM\x01\x01"), Some(LayerKind::LZ4));
        assert_eq!(
            sealed_payload(b"TNDM\x01\x10xy", LayerKind::AES_256_GCM),
            Some(&b"xy"[..])
        );
        assert_eq!(LayerKind::ZSTD.to_string(), "zstd (layer 2)");
        assert_eq!(
            format!("{:?}", LayerKind::new(200).unwrap()),
            "LayerKind(layer 200)"
        );
    }

    #[test]
    fn a_pair_seals_first_then_second_and_opens_in_reverse() {
        let id = id();
        let stack = (Tag::new(200), Tag::new(201));
        let stored = stack.seal(&id, b"env".to_vec()).unwrap();
        assert_eq!(sealed_kind(&stored), LayerKind::new(201));
        assert_eq!(&*stack.open(&id, &stored).unwrap(), b"env");
        // Only the first layer sealed it (as if the second had passed it through).
        let first_only = stack.0.seal(&id, b"env".to_vec()).unwrap();
        assert_eq!(&*stack.open(&id, &first_only).unwrap(), b"env");
        // Neither: borrowed straight through.
        assert!(matches!(
            stack.open(&id, b"plain").unwrap(),
            Cow::Borrowed(b"plain")
        ));
        // The second layer's output passed through by the first stays owned and intact.
        let second_only = stack.1.seal(&id, b"env".to_vec()).unwrap();
        assert_eq!(&*stack.open(&id, &second_only).unwrap(), b"env");

        let stats = stack.stats();
        assert_eq!(stats.bytes_in, 6);
        assert_eq!(stats.bytes_out, 9 + 15);
        assert_eq!(stats.sealed, 2);
        assert_eq!(stats.rejected, 0);
        assert!(stack.open(&id, &Tag::new(201).kind.header()).is_err());
        assert_eq!(stack.stats().rejected, 1);
    }

    #[test]
    fn layers_work_behind_pointers() {
        let id = id();
        let layer: Arc<dyn BlobLayer> = Arc::new((NoLayer, Box::new(Tag::new(202))));
        let stored = layer.seal(&id, b"env".to_vec()).unwrap();
        assert_eq!(&*layer.open(&id, &stored).unwrap(), b"env");
        assert_eq!(layer.stats().sealed, 1);
        assert_eq!(NoLayer.stats(), LayerStats::default());
        assert_eq!(LayerStats::default().ratio(), None);
    }
}
