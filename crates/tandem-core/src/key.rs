//! Storage keys.
//!
//! Every key a remote store sees is a [`StoreKey`]: at most [`MAX_KEY_LEN`] bytes of
//! printable ASCII without spaces, which is what memcached accepts. Session keys are
//! built from a [`KeyPrefix`] and a validated [`SessionId`], so no byte of a key ever
//! comes unchecked from a client.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::id::SessionId;

/// memcached's key length limit.
pub const MAX_KEY_LEN: usize = 250;
/// Longest accepted key prefix, in bytes. With the longest storage id and the longest
/// derived-key marker this keeps every session key far below [`MAX_KEY_LEN`].
pub const MAX_PREFIX_LEN: usize = 64;

/// Why a key or key prefix was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The key was empty.
    #[error("empty key")]
    Empty,
    /// The key or prefix was longer than allowed.
    #[error("key is {len} bytes long, the limit is {max}")]
    TooLong {
        /// Length of the rejected input in bytes.
        len: usize,
        /// The limit that applied.
        max: usize,
    },
    /// The key contained a space, a control character or a non-ASCII byte.
    #[error("keys may only contain printable ASCII without spaces")]
    InvalidByte,
    /// A [`KeySecret`] shorter than [`MIN_SECRET_LEN`] bytes.
    #[error("a storage key secret needs at least {MIN_SECRET_LEN} bytes, got {len}")]
    SecretTooShort {
        /// The length given.
        len: usize,
    },
}

fn is_key_byte(byte: u8) -> bool {
    byte.is_ascii_graphic()
}

/// A key a remote store accepts: 1 to [`MAX_KEY_LEN`] bytes of printable ASCII without
/// spaces or control characters.
///
/// ```
/// use tandem_core::StoreKey;
///
/// assert!(StoreKey::new("app:session").is_ok());
/// assert!(StoreKey::new("two words").is_err());
/// assert!(StoreKey::new("line\r\nbreak").is_err());
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StoreKey(Box<str>);

impl StoreKey {
    /// Validates `text` as a key.
    pub fn new(text: &str) -> Result<StoreKey, KeyError> {
        if text.is_empty() {
            return Err(KeyError::Empty);
        }
        if text.len() > MAX_KEY_LEN {
            return Err(KeyError::TooLong {
                len: text.len(),
                max: MAX_KEY_LEN,
            });
        }
        if !text.bytes().all(is_key_byte) {
            return Err(KeyError::InvalidByte);
        }
        Ok(StoreKey(text.into()))
    }

    /// The key text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for StoreKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for StoreKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StoreKey({:?})", &*self.0)
    }
}

/// Which of a session's keys to build.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum KeySpace {
    /// The session itself: `<prefix><storage id>`.
    Session,
    /// The backup copy (non-sticky mode): `<prefix>bak:<storage id>`.
    Backup,
    /// The session lock (non-sticky lock mode): `<prefix>lock:<storage id>`.
    Lock,
    /// The deletion marker of an ended session, beside its backup copy (non-sticky
    /// mode): `<prefix>gone:<storage id>`.
    Gone,
}

impl KeySpace {
    fn marker(self) -> &'static str {
        match self {
            KeySpace::Session => "",
            KeySpace::Backup => "bak:",
            KeySpace::Lock => "lock:",
            KeySpace::Gone => "gone:",
        }
    }

    /// Every space, for tests that check keys are distinct.
    #[cfg(test)]
    const ALL: [KeySpace; 4] = [
        KeySpace::Session,
        KeySpace::Backup,
        KeySpace::Lock,
        KeySpace::Gone,
    ];
}

/// The shortest accepted [`KeySecret`], in bytes.
pub const MIN_SECRET_LEN: usize = 32;

/// A secret from which storage keys are derived, so that reading the remote tier does
/// not yield session ids.
///
/// Session ids are credentials: whoever presents one is the session's owner. With
/// plain keys (`<prefix><id>`), anyone who can list the keys of a memcached node (it
/// has no access control) holds every live session's cookie. With a secret, a key is
/// `<prefix><marker>h<HMAC-SHA256(secret, id)>` (32 characters of unpadded base64url,
/// 192 bits), from which the id cannot be recovered. Every server of a deployment
/// needs the same secret; changing it (or turning it on) makes every stored session
/// unreachable, as if all users had been logged out.
///
/// ```
/// use tandem_core::{KeyPrefix, KeySecret, KeySpace, SessionId};
///
/// let secret = KeySecret::new(&[7u8; 32]).unwrap();
/// let id: SessionId = "abcdefghijABCDEFGHIJ01-n1.a1".parse().unwrap();
/// let key = KeyPrefix::new("shop:").unwrap().hashed_key(KeySpace::Session, &id, &secret);
/// assert!(key.as_str().starts_with("shop:h"));
/// assert!(!key.as_str().contains(id.random()));
/// assert!(KeySecret::new(b"too short").is_err());
/// ```
#[derive(Clone)]
pub struct KeySecret {
    mac: Hmac<Sha256>,
}

impl KeySecret {
    /// A secret of at least [`MIN_SECRET_LEN`] random bytes (from a secret store, not
    /// typed in).
    pub fn new(secret: &[u8]) -> Result<KeySecret, KeyError> {
        if secret.len() < MIN_SECRET_LEN {
            return Err(KeyError::SecretTooShort { len: secret.len() });
        }
        let mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret)
            .map_err(|_| KeyError::SecretTooShort { len: secret.len() })?;
        Ok(KeySecret { mac })
    }

    /// HMAC-SHA256 of `context` and `data` under the secret, with the context length
    /// in front so that two (context, data) pairs never hash the same bytes: a
    /// key for one purpose (say, sealing the peer feed) that reveals nothing of the
    /// secret or of the keys derived for other contexts.
    pub fn derive(&self, context: &[u8], data: &[u8]) -> [u8; 32] {
        let mut mac = self.mac.clone();
        mac.update(
            &u32::try_from(context.len())
                .unwrap_or(u32::MAX)
                .to_le_bytes(),
        );
        mac.update(context);
        mac.update(data);
        mac.finalize().into_bytes().into()
    }
}

impl fmt::Debug for KeySecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeySecret(..)")
    }
}

/// The namespace in front of every key, so that several applications can share one
/// memcached. Empty by default.
///
/// ```
/// use tandem_core::{KeyPrefix, KeySpace, SessionId};
///
/// let prefix = KeyPrefix::new("shop:").unwrap();
/// let id: SessionId = "abcdefghijABCDEFGHIJ01-n1.a1".parse().unwrap();
/// assert_eq!(prefix.key(KeySpace::Session, &id).as_str(), "shop:abcdefghijABCDEFGHIJ01-n1");
/// assert_eq!(prefix.key(KeySpace::Lock, &id).as_str(), "shop:lock:abcdefghijABCDEFGHIJ01-n1");
/// ```
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct KeyPrefix(Box<str>);

impl KeyPrefix {
    /// Validates `prefix`: up to [`MAX_PREFIX_LEN`] bytes of printable ASCII without
    /// spaces (empty is allowed).
    pub fn new(prefix: &str) -> Result<KeyPrefix, KeyError> {
        if prefix.len() > MAX_PREFIX_LEN {
            return Err(KeyError::TooLong {
                len: prefix.len(),
                max: MAX_PREFIX_LEN,
            });
        }
        if !prefix.bytes().all(is_key_byte) {
            return Err(KeyError::InvalidByte);
        }
        Ok(KeyPrefix(prefix.into()))
    }

    /// The prefix text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The key of `id` in `space`. The route is not part of it.
    pub fn key(&self, space: KeySpace, id: &SessionId) -> StoreKey {
        let mut key = String::with_capacity(self.0.len() + 5 + id.storage_id().len());
        key.push_str(&self.0);
        key.push_str(space.marker());
        key.push_str(id.storage_id());
        // Every part is validated printable ASCII and the lengths are capped (prefix,
        // marker and id), so the result is always a valid key.
        StoreKey(key.into_boxed_str())
    }
}

impl KeyPrefix {
    /// The key of `id` in `space`, derived from `secret` (see [`KeySecret`]): the id
    /// cannot be read back from it. The route is not part of it.
    pub fn hashed_key(&self, space: KeySpace, id: &SessionId, secret: &KeySecret) -> StoreKey {
        let digest = secret.derive(b"tandem storage key", id.storage_id().as_bytes());
        // 24 of the 32 bytes: 192 bits, 32 characters.
        let encoded = URL_SAFE_NO_PAD.encode(&digest[..24]);
        let mut key = String::with_capacity(self.0.len() + 6 + encoded.len());
        key.push_str(&self.0);
        key.push_str(space.marker());
        key.push('h');
        key.push_str(&encoded);
        // Prefix, marker and base64url are printable ASCII, and the length is capped.
        StoreKey(key.into_boxed_str())
    }
}

impl fmt::Debug for KeyPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyPrefix({:?})", &*self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::{MAX_NODE_ID_LEN, MAX_ROUTE_LEN};

    #[test]
    fn keys_reject_what_memcached_rejects() {
        assert_eq!(StoreKey::new(""), Err(KeyError::Empty));
        assert_eq!(StoreKey::new("a b"), Err(KeyError::InvalidByte));
        assert_eq!(StoreKey::new("a\tb"), Err(KeyError::InvalidByte));
        assert_eq!(StoreKey::new("a\x7fb"), Err(KeyError::InvalidByte));
        assert_eq!(StoreKey::new("ключ"), Err(KeyError::InvalidByte));
        assert!(matches!(
            StoreKey::new(&"k".repeat(251)),
            Err(KeyError::TooLong { .. })
        ));
        assert!(StoreKey::new(&"k".repeat(250)).is_ok());
        assert_eq!(KeyPrefix::new("a b"), Err(KeyError::InvalidByte));
        assert!(KeyPrefix::new(&"p".repeat(MAX_PREFIX_LEN + 1)).is_err());
        assert!(KeyPrefix::new("").is_ok());
    }

    #[test]
    fn longest_key_stays_valid() {
        let prefix = KeyPrefix::new(&"p".repeat(MAX_PREFIX_LEN)).unwrap();
        let id = SessionId::parse(&format!(
            "abcdefghijABCDEFGHIJ01-{}.{}",
            "n".repeat(MAX_NODE_ID_LEN),
            "r".repeat(MAX_ROUTE_LEN)
        ))
        .unwrap();
        let secret = KeySecret::new(&[1; MIN_SECRET_LEN]).unwrap();
        for space in KeySpace::ALL {
            for key in [
                prefix.key(space, &id),
                prefix.hashed_key(space, &id, &secret),
            ] {
                assert!(StoreKey::new(key.as_str()).is_ok(), "{key:?}");
                assert!(!key.as_str().contains(&"r".repeat(MAX_ROUTE_LEN)));
            }
        }
    }

    #[test]
    fn spaces_give_distinct_keys() {
        let prefix = KeyPrefix::default();
        let id = SessionId::parse("abcdefghijABCDEFGHIJ01-n1").unwrap();
        let keys: std::collections::HashSet<_> = KeySpace::ALL
            .into_iter()
            .map(|space| prefix.key(space, &id))
            .collect();
        assert_eq!(keys.len(), KeySpace::ALL.len());
    }

    #[test]
    fn hashed_keys_hide_the_id_and_depend_on_the_secret() {
        let prefix = KeyPrefix::new("app:").unwrap();
        let id = SessionId::parse("abcdefghijABCDEFGHIJ01-n1.a1").unwrap();
        let moved = SessionId::parse("abcdefghijABCDEFGHIJ01-n2.a2").unwrap();
        let first = KeySecret::new(&[1; MIN_SECRET_LEN]).unwrap();
        let second = KeySecret::new(&[2; MIN_SECRET_LEN]).unwrap();
        let keys: std::collections::HashSet<_> = KeySpace::ALL
            .into_iter()
            .map(|space| prefix.hashed_key(space, &id, &first))
            .collect();
        assert_eq!(keys.len(), KeySpace::ALL.len());
        let key = prefix.hashed_key(KeySpace::Session, &id, &first);
        assert!(!key.as_str().contains(id.random()));
        assert!(!key.as_str().contains(&id.random()[..8]));
        assert_eq!(key, prefix.hashed_key(KeySpace::Session, &id, &first));
        assert_ne!(key, prefix.hashed_key(KeySpace::Session, &id, &second));
        // The node is part of the storage id: a moved session has a new key.
        assert_ne!(key, prefix.hashed_key(KeySpace::Session, &moved, &first));
        assert_eq!(
            KeySecret::new(&[0; MIN_SECRET_LEN - 1]).unwrap_err(),
            KeyError::SecretTooShort {
                len: MIN_SECRET_LEN - 1
            }
        );
        assert_eq!(format!("{first:?}"), "KeySecret(..)");
    }
}
