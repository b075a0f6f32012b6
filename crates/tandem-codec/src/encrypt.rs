//! The encryption layer: AES-256-GCM at rest, with key ids and rotation.

use std::borrow::Cow;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

use aes_gcm::aead::{AeadInOut, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce, Tag};
use tandem_core::SessionId;
use tandem_core::layers::{
    BlobLayer, LayerCounters, LayerError, LayerKind, LayerStats, SEALED_HEADER_LEN, sealed_kind,
};
use zeroize::Zeroizing;

const LAYER: &str = "aes-256-gcm";
const KEY_ID_LEN: usize = 4;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
/// Header and key id: authenticated, not encrypted.
const CLEAR_LEN: usize = SEALED_HEADER_LEN + KEY_ID_LEN;
const PREFIX_LEN: usize = CLEAR_LEN + NONCE_LEN;
/// The nonce is a 96-bit counter.
const NONCE_MASK: u128 = (1 << 96) - 1;

/// A 256-bit AES key and the id stored with everything it encrypts.
///
/// The key bytes are wiped from memory when the key is dropped, and never printed:
/// `Debug` shows the id only.
///
/// ```
/// use tandem_codec::EncryptionKey;
///
/// let key = EncryptionKey::from_hex(1, &"0f".repeat(32)).unwrap();
/// assert_eq!(key.id(), 1);
/// assert_eq!(format!("{key:?}"), "EncryptionKey { id: 1, .. }");
/// assert!(EncryptionKey::from_hex(1, "abc").is_err());
/// ```
#[derive(Clone)]
pub struct EncryptionKey {
    id: u32,
    bytes: Zeroizing<[u8; EncryptionKey::LEN]>,
}

impl fmt::Debug for EncryptionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EncryptionKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl EncryptionKey {
    /// Key length in bytes.
    pub const LEN: usize = 32;

    /// A key with id `id` from its bytes.
    pub fn new(id: u32, bytes: [u8; EncryptionKey::LEN]) -> EncryptionKey {
        EncryptionKey {
            id,
            bytes: Zeroizing::new(bytes),
        }
    }

    /// A fresh random key from the thread-local CSPRNG (seeded from the operating
    /// system).
    pub fn generate(id: u32) -> EncryptionKey {
        let mut bytes = Zeroizing::new([0; EncryptionKey::LEN]);
        rand::fill(&mut bytes[..]);
        EncryptionKey { id, bytes }
    }

    /// A key from 64 hexadecimal digits (`openssl rand -hex 32`). Surrounding
    /// whitespace is ignored.
    pub fn from_hex(id: u32, hex: &str) -> Result<EncryptionKey, KeyError> {
        let hex = hex.trim().as_bytes();
        if hex.len() != 2 * EncryptionKey::LEN {
            return Err(KeyError::Length { id, len: hex.len() });
        }
        let mut bytes = Zeroizing::new([0; EncryptionKey::LEN]);
        for (byte, pair) in bytes.iter_mut().zip(hex.chunks_exact(2)) {
            let (Some(high), Some(low)) = (hex_digit(pair[0]), hex_digit(pair[1])) else {
                return Err(KeyError::NotHex { id });
            };
            *byte = high << 4 | low;
        }
        Ok(EncryptionKey { id, bytes })
    }

    /// The key id.
    pub fn id(&self) -> u32 {
        self.id
    }
}

fn hex_digit(digit: u8) -> Option<u8> {
    char::from(digit)
        .to_digit(16)
        .and_then(|value| u8::try_from(value).ok())
}

/// Why keys could not be configured. Never contains key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// A hex key has the wrong length.
    #[error("key {id}: expected 64 hexadecimal digits (32 bytes), got {len} characters")]
    Length {
        /// The key's id.
        id: u32,
        /// The number of characters given.
        len: usize,
    },
    /// A hex key has a character that is not a hexadecimal digit.
    #[error("key {id}: not hexadecimal")]
    NotHex {
        /// The key's id.
        id: u32,
    },
    /// An entry of a key list is not `id:hex`, or its id is not a number.
    #[error("key list entry {index}: expected `id:hex` with a numeric id")]
    Entry {
        /// Zero-based position of the entry in the list.
        index: usize,
    },
    /// Two keys have the same id.
    #[error("key id {id} is configured twice")]
    DuplicateId {
        /// The repeated id.
        id: u32,
    },
    /// The key list names no key.
    #[error("key list is empty")]
    Empty,
}

/// A snapshot of an [`Encryption`] layer's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EncryptionStats {
    /// Totals: blobs sealed and opened, bytes in and out, blobs rejected.
    pub layer: LayerStats,
    /// Blobs encrypted.
    pub encrypted: u64,
    /// Blobs decrypted and authenticated.
    pub decrypted: u64,
    /// Blobs decrypted with a key other than the current one: what is left to
    /// re-encrypt before an old key can be removed.
    pub decrypted_with_previous_key: u64,
    /// Unencrypted blobs passed through (plain envelopes written before encryption was
    /// turned on). When this stays at zero, [`Encryption::require_encrypted`] can be
    /// turned on.
    pub plaintext_passed: u64,
    /// Unencrypted blobs refused because encryption is required.
    pub plaintext_refused: u64,
    /// Blobs that failed authentication: tampered, moved from another session, or
    /// encrypted elsewhere with another key under the same key id.
    pub tampered: u64,
    /// Blobs encrypted with a key id that is not configured.
    pub unknown_key: u64,
    /// Blobs too short to be what this layer writes.
    pub malformed: u64,
}

/// A [`BlobLayer`] that encrypts and authenticates stored bytes with AES-256-GCM.
///
/// memcached has no access control: anyone who reaches it can read and write every
/// item. With this layer they can do neither usefully: blobs are encrypted, and a blob
/// that was changed, forged, or copied under another session's id fails
/// authentication (the id's random part is authenticated with each blob) and is
/// refused with [`LayerError::Tampered`] and counted. What remains possible is
/// replaying an older blob of the same session, and deleting blobs.
///
/// # Keys and rotation
///
/// Each key has an id, stored in the clear with every blob it encrypts. The layer
/// encrypts with its current key and decrypts with any key it has. To rotate:
///
/// 1. add the new key to every server as a previous key
///    ([`with_previous_key`](Encryption::with_previous_key)), so all can read it;
/// 2. make it the current key everywhere (the old one becomes a previous key);
/// 3. once the sessions encrypted with the old key have expired or been rewritten
///    ([`EncryptionStats::decrypted_with_previous_key`] stops growing), remove it.
///
/// # Turning encryption on in a running cluster
///
/// Unencrypted blobs (plain envelopes, or blobs of a compression layer) pass through
/// unchanged by default, so sessions stored before encryption was turned on still
/// load and are encrypted on their next write. That also means a forged *unencrypted*
/// blob is accepted: once [`EncryptionStats::plaintext_passed`] stops growing, turn on
/// [`require_encrypted`](Encryption::require_encrypted).
///
/// # Nonces
///
/// AES-GCM breaks if a nonce repeats under one key. Instead of drawing each 96-bit
/// nonce at random (safe for only about 2³² blobs per key), a layer draws one random
/// starting point and counts up from it: nonces never repeat within a layer, and two
/// layers (servers, restarts) collide only if their ranges overlap somewhere in a
/// 2⁹⁶ space.
///
/// ```
/// use tandem_codec::{Compression, Encryption, EncryptionKey};
/// use tandem_core::layers::BlobLayer;
/// use tandem_core::{LayerError, NodeId, SessionId};
///
/// let id = SessionId::generate(&NodeId::new("n1").unwrap(), None);
/// let layer = Encryption::new(EncryptionKey::generate(2));
///
/// let stored = layer.seal(&id, b"TNDM\x01\x00 an envelope".to_vec()).unwrap();
/// assert!(!stored.windows(8).any(|w| w == b"envelope"));
/// assert_eq!(&*layer.open(&id, &stored).unwrap(), b"TNDM\x01\x00 an envelope");
///
/// // Copied under another session's key: refused.
/// let other = SessionId::generate(&NodeId::new("n1").unwrap(), None);
/// assert_eq!(layer.open(&other, &stored), Err(LayerError::Tampered { key_id: 2 }));
/// assert_eq!(layer.encryption_stats().tampered, 1);
///
/// // Compression first, then encryption.
/// let stack = (Compression::lz4(), Encryption::new(EncryptionKey::generate(2)));
/// let stored = stack.seal(&id, vec![7; 4096]).unwrap();
/// assert!(stored.len() < 200);
/// assert_eq!(*stack.open(&id, &stored).unwrap(), [7; 4096]);
/// ```
pub struct Encryption {
    /// Every configured key; the first one is the current key.
    keys: Vec<(u32, Aes256Gcm)>,
    require_encrypted: bool,
    nonce_start: u128,
    nonce_next: AtomicU64,
    counters: LayerCounters,
    encrypted: AtomicU64,
    decrypted: AtomicU64,
    decrypted_with_previous_key: AtomicU64,
    plaintext_passed: AtomicU64,
    plaintext_refused: AtomicU64,
    tampered: AtomicU64,
    unknown_key: AtomicU64,
    malformed: AtomicU64,
}

impl fmt::Debug for Encryption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Encryption")
            .field("current_key_id", &self.current_key_id())
            .field("key_ids", &self.key_ids().collect::<Vec<_>>())
            .field("require_encrypted", &self.require_encrypted)
            .finish_non_exhaustive()
    }
}

impl Encryption {
    /// A layer that encrypts with `current` (and decrypts with it).
    pub fn new(current: EncryptionKey) -> Encryption {
        let mut start = [0; 16];
        rand::fill(&mut start[..]);
        Encryption {
            keys: vec![(current.id, cipher(&current))],
            require_encrypted: false,
            nonce_start: u128::from_le_bytes(start) & NONCE_MASK,
            nonce_next: AtomicU64::new(0),
            counters: LayerCounters::default(),
            encrypted: AtomicU64::new(0),
            decrypted: AtomicU64::new(0),
            decrypted_with_previous_key: AtomicU64::new(0),
            plaintext_passed: AtomicU64::new(0),
            plaintext_refused: AtomicU64::new(0),
            tampered: AtomicU64::new(0),
            unknown_key: AtomicU64::new(0),
            malformed: AtomicU64::new(0),
        }
    }

    /// Also decrypts with `key` (a key being rotated in or out); it never encrypts.
    pub fn with_previous_key(mut self, key: EncryptionKey) -> Result<Encryption, KeyError> {
        if self.key_ids().any(|id| id == key.id) {
            return Err(KeyError::DuplicateId { id: key.id });
        }
        self.keys.push((key.id, cipher(&key)));
        Ok(self)
    }

    /// A layer from a one-line key list, `id:hex,id:hex,...`: the first key is the
    /// current one, the others are previous keys. Each key is 64 hexadecimal digits;
    /// spaces around entries are ignored. Errors never contain key material.
    ///
    /// ```
    /// use tandem_codec::{Encryption, KeyError};
    ///
    /// let list = format!("2:{},1:{}", "ab".repeat(32), "cd".repeat(32));
    /// let layer = Encryption::from_key_list(&list).unwrap();
    /// assert_eq!(layer.current_key_id(), 2);
    /// assert_eq!(layer.key_ids().collect::<Vec<_>>(), [2, 1]);
    ///
    /// assert_eq!(Encryption::from_key_list("").unwrap_err(), KeyError::Empty);
    /// assert_eq!(Encryption::from_key_list("x:00").unwrap_err(), KeyError::Entry { index: 0 });
    /// ```
    pub fn from_key_list(list: &str) -> Result<Encryption, KeyError> {
        let mut keys = list
            .split(',')
            .map(str::trim)
            .filter(|entry| !entry.is_empty())
            .enumerate()
            .map(|(index, entry)| {
                let (id, hex) = entry.split_once(':').ok_or(KeyError::Entry { index })?;
                let id = id.trim().parse().map_err(|_| KeyError::Entry { index })?;
                EncryptionKey::from_hex(id, hex)
            });
        let current = keys.next().ok_or(KeyError::Empty)??;
        keys.try_fold(Encryption::new(current), |layer, key| {
            layer.with_previous_key(key?)
        })
    }

    /// Refuses unencrypted blobs with [`LayerError::Unencrypted`] instead of passing
    /// them through. Turn it on once no unencrypted session is left (see
    /// [`EncryptionStats::plaintext_passed`]). Default: off.
    pub fn require_encrypted(mut self, require: bool) -> Encryption {
        self.require_encrypted = require;
        self
    }

    /// The id of the key new blobs are encrypted with.
    pub fn current_key_id(&self) -> u32 {
        self.keys[0].0
    }

    /// The ids of every configured key, the current one first.
    pub fn key_ids(&self) -> impl Iterator<Item = u32> + '_ {
        self.keys.iter().map(|(id, _)| *id)
    }

    /// What this layer has done so far, in detail ([`BlobLayer::stats`] gives the
    /// totals).
    pub fn encryption_stats(&self) -> EncryptionStats {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        EncryptionStats {
            layer: self.counters.snapshot(),
            encrypted: load(&self.encrypted),
            decrypted: load(&self.decrypted),
            decrypted_with_previous_key: load(&self.decrypted_with_previous_key),
            plaintext_passed: load(&self.plaintext_passed),
            plaintext_refused: load(&self.plaintext_refused),
            tampered: load(&self.tampered),
            unknown_key: load(&self.unknown_key),
            malformed: load(&self.malformed),
        }
    }

    fn next_nonce(&self) -> Nonce<aes_gcm::aead::consts::U12> {
        let step = self.nonce_next.fetch_add(1, Ordering::Relaxed);
        let counter = self.nonce_start.wrapping_add(u128::from(step)) & NONCE_MASK;
        let bytes: [u8; NONCE_LEN] = counter.to_le_bytes()[..NONCE_LEN]
            .try_into()
            .expect("twelve bytes");
        Nonce::from(bytes)
    }

    fn decrypt(&self, id: &SessionId, stored: &[u8]) -> Result<Vec<u8>, (LayerError, &AtomicU64)> {
        if stored.len() < PREFIX_LEN + TAG_LEN {
            let error = LayerError::Malformed {
                layer: LAYER,
                reason: format!("{} bytes are too short for an encrypted blob", stored.len()),
            };
            return Err((error, &self.malformed));
        }
        let key_id = u32::from_le_bytes(
            stored[SEALED_HEADER_LEN..CLEAR_LEN]
                .try_into()
                .expect("four bytes"),
        );
        let Some(position) = self.keys.iter().position(|(id, _)| *id == key_id) else {
            return Err((LayerError::UnknownKey { key_id }, &self.unknown_key));
        };
        let nonce: [u8; NONCE_LEN] = stored[CLEAR_LEN..PREFIX_LEN]
            .try_into()
            .expect("twelve bytes");
        let (ciphertext, tag) = stored[PREFIX_LEN..].split_at(stored.len() - PREFIX_LEN - TAG_LEN);
        let tag = Tag::try_from(tag).expect("sixteen bytes");
        let mut plaintext = ciphertext.to_vec();
        self.keys[position]
            .1
            .decrypt_inout_detached(
                &Nonce::from(nonce),
                &associated_data(&stored[..CLEAR_LEN], id),
                plaintext.as_mut_slice().into(),
                &tag,
            )
            .map_err(|_| (LayerError::Tampered { key_id }, &self.tampered))?;
        if position != 0 {
            self.decrypted_with_previous_key
                .fetch_add(1, Ordering::Relaxed);
        }
        Ok(plaintext)
    }
}

fn cipher(key: &EncryptionKey) -> Aes256Gcm {
    Aes256Gcm::new((&*key.bytes).into())
}

/// What is authenticated besides the ciphertext: the clear header (so that the key id
/// cannot be swapped) and the session id's random part (so that a blob does not open
/// under another session's id; the node and route parts may change without a rewrite).
fn associated_data(clear: &[u8], id: &SessionId) -> Vec<u8> {
    let mut data = Vec::with_capacity(clear.len() + id.random().len());
    data.extend_from_slice(clear);
    data.extend_from_slice(id.random().as_bytes());
    data
}

impl BlobLayer for Encryption {
    fn seal(&self, id: &SessionId, envelope: Vec<u8>) -> Result<Vec<u8>, LayerError> {
        let (key_id, cipher) = &self.keys[0];
        let nonce = self.next_nonce();
        let mut out = Vec::with_capacity(PREFIX_LEN + envelope.len() + TAG_LEN);
        out.extend_from_slice(&LayerKind::AES_256_GCM.header());
        out.extend_from_slice(&key_id.to_le_bytes());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&envelope);
        let associated = associated_data(&out[..CLEAR_LEN], id);
        let tag = cipher
            .encrypt_inout_detached(&nonce, &associated, (&mut out[PREFIX_LEN..]).into())
            .map_err(|_| LayerError::Seal {
                layer: LAYER,
                reason: format!("{} bytes are too long for AES-GCM", envelope.len()),
            })?;
        out.extend_from_slice(&tag);
        self.encrypted.fetch_add(1, Ordering::Relaxed);
        self.counters.record_seal(envelope.len(), out.len());
        Ok(out)
    }

    fn open<'a>(&self, id: &SessionId, stored: &'a [u8]) -> Result<Cow<'a, [u8]>, LayerError> {
        if sealed_kind(stored) != Some(LayerKind::AES_256_GCM) {
            if self.require_encrypted {
                self.plaintext_refused.fetch_add(1, Ordering::Relaxed);
                self.counters.record_rejected();
                return Err(LayerError::Unencrypted);
            }
            self.plaintext_passed.fetch_add(1, Ordering::Relaxed);
            self.counters.record_open();
            return Ok(Cow::Borrowed(stored));
        }
        match self.decrypt(id, stored) {
            Ok(plaintext) => {
                self.decrypted.fetch_add(1, Ordering::Relaxed);
                self.counters.record_open();
                Ok(Cow::Owned(plaintext))
            }
            Err((error, counter)) => {
                counter.fetch_add(1, Ordering::Relaxed);
                self.counters.record_rejected();
                Err(error)
            }
        }
    }

    fn stats(&self) -> LayerStats {
        self.counters.snapshot()
    }

    /// The header, key id and nonce in front, the tag behind.
    fn max_overhead(&self) -> usize {
        PREFIX_LEN + TAG_LEN
    }
}
