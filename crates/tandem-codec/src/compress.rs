//! The compression layer.

use std::borrow::Cow;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

use tandem_core::SessionId;
use tandem_core::layers::{
    BlobLayer, LayerCounters, LayerError, LayerKind, LayerStats, SEALED_HEADER_LEN, sealed_kind,
};

/// Envelopes smaller than this are stored as they are by default: below about a
/// kilobyte, compression saves little and costs a round of work on every write.
pub const DEFAULT_THRESHOLD: usize = 1024;

/// The largest envelope a compressed blob may open to by default. Well above what fits
/// in one memcached item even at a high compression ratio, and small enough that a
/// hostile blob claiming more is refused before anything is allocated.
pub const DEFAULT_MAX_OPENED_SIZE: usize = 8 * 1024 * 1024;

/// Bytes after the sealed header: the original length, u32 little-endian.
const LENGTH_LEN: usize = 4;
const PREFIX_LEN: usize = SEALED_HEADER_LEN + LENGTH_LEN;

/// An LZ4 block expands at most about 255-fold: a longer claim is corrupt, whatever the
/// configured limit.
const LZ4_MAX_RATIO: usize = 255;

/// The compression algorithm a [`Compression`] layer seals with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Algorithm {
    /// LZ4 (block format, via `lz4_flex`): very fast both ways, moderate ratio.
    Lz4,
    /// zstd at the given level (1 to 22; 3 is zstd's default): a better ratio than
    /// LZ4 for more CPU. Needs the `zstd` feature (on by default).
    #[cfg(feature = "zstd")]
    Zstd {
        /// The compression level.
        level: i32,
    },
}

impl Algorithm {
    fn kind(self) -> LayerKind {
        match self {
            Algorithm::Lz4 => LayerKind::LZ4,
            #[cfg(feature = "zstd")]
            Algorithm::Zstd { .. } => LayerKind::ZSTD,
        }
    }
}

/// A snapshot of a [`Compression`] layer's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CompressionStats {
    /// Totals: blobs sealed and opened, envelope bytes in, stored bytes out, rejected
    /// blobs. `layer.ratio()` is the stored size over the envelope size.
    pub layer: LayerStats,
    /// Envelopes stored compressed.
    pub compressed: u64,
    /// Envelopes stored as they are because they were below the threshold.
    pub below_threshold: u64,
    /// Envelopes stored as they are because compressing them saved nothing.
    pub incompressible: u64,
    /// Blobs decompressed by `open` (the others were plain and passed through).
    pub decompressed: u64,
}

/// A [`BlobLayer`] that compresses envelopes of at least a threshold size (LZ4 by
/// default, or zstd), and stores them compressed only when that saves space.
///
/// Opening is bounded: a blob that claims to open to more than
/// [`max_opened_size`](Compression::max_opened_size) bytes is refused before anything
/// is allocated, so a hostile blob cannot make a server allocate gigabytes. Blobs the
/// layer did not compress (plain envelopes, small or incompressible ones) pass through
/// unchanged, and a layer reads both LZ4 and zstd blobs whichever algorithm it writes,
/// so both turning compression on and switching algorithms keep every stored session.
///
/// ```
/// use tandem_codec::Compression;
/// use tandem_core::layers::BlobLayer;
/// # let id = tandem_core::SessionId::generate(&tandem_core::NodeId::new("n1").unwrap(), None);
///
/// let layer = Compression::lz4().threshold(512);
/// let envelope = b"TNDM\x01\x00".iter().chain(&[b'a'; 4096]).copied().collect::<Vec<u8>>();
/// let stored = layer.seal(&id, envelope.clone()).unwrap();
/// assert!(stored.len() < 100);
/// assert_eq!(*layer.open(&id, &stored).unwrap(), envelope[..]);
///
/// let stats = layer.compression_stats();
/// assert_eq!(stats.compressed, 1);
/// assert!(stats.layer.ratio().unwrap() < 0.05);
/// ```
pub struct Compression {
    algorithm: Algorithm,
    threshold: usize,
    max_opened_size: usize,
    counters: LayerCounters,
    compressed: AtomicU64,
    below_threshold: AtomicU64,
    incompressible: AtomicU64,
    decompressed: AtomicU64,
}

impl fmt::Debug for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Compression")
            .field("algorithm", &self.algorithm)
            .field("threshold", &self.threshold)
            .field("max_opened_size", &self.max_opened_size)
            .finish_non_exhaustive()
    }
}

impl Compression {
    /// A layer compressing with `algorithm` envelopes of at least
    /// [`DEFAULT_THRESHOLD`] bytes.
    pub fn new(algorithm: Algorithm) -> Compression {
        Compression {
            algorithm,
            threshold: DEFAULT_THRESHOLD,
            max_opened_size: DEFAULT_MAX_OPENED_SIZE,
            counters: LayerCounters::default(),
            compressed: AtomicU64::new(0),
            below_threshold: AtomicU64::new(0),
            incompressible: AtomicU64::new(0),
            decompressed: AtomicU64::new(0),
        }
    }

    /// An LZ4 layer.
    pub fn lz4() -> Compression {
        Compression::new(Algorithm::Lz4)
    }

    /// A zstd layer at `level` (1 to 22; 3 is zstd's default).
    ///
    /// ```
    /// use tandem_codec::Compression;
    /// use tandem_core::layers::BlobLayer;
    /// # let id = tandem_core::SessionId::generate(&tandem_core::NodeId::new("n1").unwrap(), None);
    /// let zstd = Compression::zstd(3);
    /// let stored = zstd.seal(&id, vec![b'z'; 2048]).unwrap();
    /// // Any compression layer opens what another wrote.
    /// assert_eq!(*Compression::lz4().open(&id, &stored).unwrap(), [b'z'; 2048]);
    /// ```
    #[cfg(feature = "zstd")]
    pub fn zstd(level: i32) -> Compression {
        Compression::new(Algorithm::Zstd { level })
    }

    /// Compresses envelopes of at least `bytes` bytes; smaller ones are stored as they
    /// are. Default: [`DEFAULT_THRESHOLD`].
    pub fn threshold(mut self, bytes: usize) -> Compression {
        self.threshold = bytes;
        self
    }

    /// Refuses blobs that would open to more than `bytes` bytes. Default:
    /// [`DEFAULT_MAX_OPENED_SIZE`].
    pub fn max_opened_size(mut self, bytes: usize) -> Compression {
        self.max_opened_size = bytes;
        self
    }

    /// The algorithm this layer seals with.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// What this layer has done so far, in detail ([`BlobLayer::stats`] gives the
    /// totals).
    pub fn compression_stats(&self) -> CompressionStats {
        CompressionStats {
            layer: self.counters.snapshot(),
            compressed: self.compressed.load(Ordering::Relaxed),
            below_threshold: self.below_threshold.load(Ordering::Relaxed),
            incompressible: self.incompressible.load(Ordering::Relaxed),
            decompressed: self.decompressed.load(Ordering::Relaxed),
        }
    }

    fn compress(&self, envelope: &[u8]) -> Result<Vec<u8>, LayerError> {
        let kind = self.algorithm.kind();
        let original_len = u32::try_from(envelope.len()).map_err(|_| LayerError::Seal {
            layer: layer_name(kind),
            reason: format!("{} bytes do not fit a 32-bit length", envelope.len()),
        })?;
        let mut out = Vec::new();
        match self.algorithm {
            Algorithm::Lz4 => {
                out.resize(
                    PREFIX_LEN + lz4_flex::block::get_maximum_output_size(envelope.len()),
                    0,
                );
                let written = lz4_flex::block::compress_into(envelope, &mut out[PREFIX_LEN..])
                    .map_err(|error| LayerError::Seal {
                        layer: layer_name(kind),
                        reason: error.to_string(),
                    })?;
                out.truncate(PREFIX_LEN + written);
            }
            #[cfg(feature = "zstd")]
            Algorithm::Zstd { level } => {
                let compressed =
                    zstd_context::compress(envelope, level).map_err(|error| LayerError::Seal {
                        layer: layer_name(kind),
                        reason: error.to_string(),
                    })?;
                out.reserve_exact(PREFIX_LEN + compressed.len());
                out.resize(PREFIX_LEN, 0);
                out.extend_from_slice(&compressed);
            }
        }
        out[..SEALED_HEADER_LEN].copy_from_slice(&kind.header());
        out[SEALED_HEADER_LEN..PREFIX_LEN].copy_from_slice(&original_len.to_le_bytes());
        Ok(out)
    }

    fn decompress(&self, kind: LayerKind, stored: &[u8]) -> Result<Vec<u8>, LayerError> {
        let layer = layer_name(kind);
        let malformed = |reason: String| LayerError::Malformed { layer, reason };
        let Some(length) = stored.get(SEALED_HEADER_LEN..PREFIX_LEN) else {
            return Err(malformed("truncated before the original length".into()));
        };
        let original_len = u32::from_le_bytes(length.try_into().expect("four bytes"));
        let payload = &stored[PREFIX_LEN..];
        let original_len_usize = original_len as usize;
        if original_len_usize > self.max_opened_size {
            return Err(LayerError::TooLarge {
                layer,
                size: u64::from(original_len),
                limit: self.max_opened_size,
            });
        }
        if kind == LayerKind::LZ4
            && original_len_usize > payload.len().saturating_mul(LZ4_MAX_RATIO)
        {
            return Err(malformed(format!(
                "{} compressed bytes cannot hold {original_len} bytes",
                payload.len()
            )));
        }
        let mut out = vec![0; original_len_usize];
        let written = match kind {
            LayerKind::LZ4 => lz4_flex::block::decompress_into(payload, &mut out)
                .map_err(|error| malformed(error.to_string()))?,
            #[cfg(feature = "zstd")]
            LayerKind::ZSTD => zstd_context::decompress_to_buffer(payload, &mut out)
                .map_err(|error| malformed(error.to_string()))?,
            _ => {
                return Err(malformed(
                    "this build cannot decompress it (zstd support is the `zstd` feature)".into(),
                ));
            }
        };
        if written != original_len_usize {
            return Err(malformed(format!(
                "opened to {written} bytes, {original_len} were recorded"
            )));
        }
        Ok(out)
    }
}

/// zstd contexts, kept per thread: creating one costs more than compressing a
/// session of a few kilobytes with it.
#[cfg(feature = "zstd")]
mod zstd_context {
    use std::cell::RefCell;
    use std::io;

    use zstd::bulk::{Compressor, Decompressor};

    thread_local! {
        static COMPRESSOR: RefCell<Option<(i32, Compressor<'static>)>> = const { RefCell::new(None) };
        static DECOMPRESSOR: RefCell<Option<Decompressor<'static>>> = const { RefCell::new(None) };
    }

    pub(super) fn compress(data: &[u8], level: i32) -> io::Result<Vec<u8>> {
        COMPRESSOR.with(|slot| {
            let mut compressor = match slot.take() {
                Some((kept, compressor)) if kept == level => compressor,
                _ => Compressor::new(level)?,
            };
            let result = compressor.compress(data);
            slot.replace(Some((level, compressor)));
            result
        })
    }

    pub(super) fn decompress_to_buffer(data: &[u8], out: &mut [u8]) -> io::Result<usize> {
        DECOMPRESSOR.with(|slot| {
            let mut decompressor = match slot.take() {
                Some(decompressor) => decompressor,
                None => Decompressor::new()?,
            };
            let result = decompressor.decompress_to_buffer(data, out);
            slot.replace(Some(decompressor));
            result
        })
    }
}

fn layer_name(kind: LayerKind) -> &'static str {
    kind.well_known_name().unwrap_or("compression")
}

impl BlobLayer for Compression {
    fn seal(&self, _id: &SessionId, envelope: Vec<u8>) -> Result<Vec<u8>, LayerError> {
        let stored = if envelope.len() < self.threshold {
            self.below_threshold.fetch_add(1, Ordering::Relaxed);
            envelope
        } else {
            let compressed = self.compress(&envelope)?;
            if compressed.len() < envelope.len() {
                self.compressed.fetch_add(1, Ordering::Relaxed);
                self.counters.record_seal(envelope.len(), compressed.len());
                return Ok(compressed);
            }
            self.incompressible.fetch_add(1, Ordering::Relaxed);
            envelope
        };
        self.counters.record_seal(stored.len(), stored.len());
        Ok(stored)
    }

    fn open<'a>(&self, _id: &SessionId, stored: &'a [u8]) -> Result<Cow<'a, [u8]>, LayerError> {
        let kind = match sealed_kind(stored) {
            Some(kind) if kind == LayerKind::LZ4 || kind == LayerKind::ZSTD => kind,
            _ => {
                self.counters.record_open();
                return Ok(Cow::Borrowed(stored));
            }
        };
        match self.decompress(kind, stored) {
            Ok(opened) => {
                self.counters.record_open();
                self.decompressed.fetch_add(1, Ordering::Relaxed);
                Ok(Cow::Owned(opened))
            }
            Err(error) => {
                self.counters.record_rejected();
                Err(error)
            }
        }
    }

    fn stats(&self) -> LayerStats {
        self.counters.snapshot()
    }
}
