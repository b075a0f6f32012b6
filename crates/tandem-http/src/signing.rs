//! HMAC-signed cookie values: a forged or altered cookie is refused before the session
//! manager sees it, so it costs no remote operation at all.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// Length of a signature in a cookie value: HMAC-SHA256, 32 bytes, unpadded base64url.
pub(crate) const SIGNATURE_LEN: usize = 43;

/// What the MAC covers besides the id, so that a signature is worth nothing in another
/// cookie or in another protocol that happens to share the key.
const CONTEXT: &[u8] = b"tandem-session-cookie-v1\0";

/// Why a signing key was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SigningKeyError {
    /// The key is shorter than [`CookieSigner::MIN_KEY_LEN`] bytes.
    #[error("a cookie signing key needs at least {min} bytes, got {len}", min = CookieSigner::MIN_KEY_LEN)]
    TooShort {
        /// The length of the refused key.
        len: usize,
    },
}

/// Signs session cookie values with HMAC-SHA256 and checks them.
///
/// A signed value is `<session id>.<signature>`, the signature being 43 characters of
/// unpadded base64url. The session id stays readable at the front, so a load balancer
/// can still find the route in it (`<random>-<node>.<route>.<signature>`).
///
/// The first key signs; every key verifies, so keys can be rotated: deploy the new key
/// with the old one as a [`previous key`](Self::with_previous_key), and drop the old one
/// once the sessions signed with it have expired.
///
/// Verification runs in constant time and before anything else: a cookie that does not
/// verify is no session, and neither the local nor the remote tier is asked about it.
///
/// ```
/// use tandem_http::CookieSigner;
///
/// let signer = CookieSigner::new(b"a secret of at least thirty-two bytes!!")?;
/// let value = signer.sign("session", "Ab3xYz0123456789abcdef-n1.a1");
/// assert_eq!(signer.verify("session", &value), Some("Ab3xYz0123456789abcdef-n1.a1"));
///
/// // One changed character, or another cookie name, and it no longer verifies.
/// let forged = value.replacen("n1", "n2", 1);
/// assert_eq!(signer.verify("session", &forged), None);
/// assert_eq!(signer.verify("other", &value), None);
/// # Ok::<(), tandem_http::SigningKeyError>(())
/// ```
#[derive(Clone)]
pub struct CookieSigner {
    /// Keyed MAC states; the first signs. Cloning one is cheaper than keying anew.
    keys: Vec<Hmac<Sha256>>,
}

impl fmt::Debug for CookieSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never show key material.
        f.debug_struct("CookieSigner")
            .field("keys", &self.keys.len())
            .finish()
    }
}

impl CookieSigner {
    /// The shortest key accepted: 32 bytes, the output size of SHA-256. Use random
    /// bytes, not a password.
    pub const MIN_KEY_LEN: usize = 32;

    /// A signer that signs and verifies with `key`.
    pub fn new(key: &[u8]) -> Result<CookieSigner, SigningKeyError> {
        Ok(CookieSigner {
            keys: vec![keyed(key)?],
        })
    }

    /// Also accepts values signed with `key` (a key being rotated out). Values are
    /// still signed with the first key.
    ///
    /// ```
    /// use tandem_http::CookieSigner;
    ///
    /// let old = CookieSigner::new(&[1; 32])?;
    /// let value = old.sign("sid", "Ab3xYz0123456789abcdef-n1");
    /// let rotated = CookieSigner::new(&[2; 32])?.with_previous_key(&[1; 32])?;
    /// assert!(rotated.verify("sid", &value).is_some());
    /// assert_ne!(rotated.sign("sid", "Ab3xYz0123456789abcdef-n1"), value);
    /// # Ok::<(), tandem_http::SigningKeyError>(())
    /// ```
    pub fn with_previous_key(mut self, key: &[u8]) -> Result<CookieSigner, SigningKeyError> {
        self.keys.push(keyed(key)?);
        Ok(self)
    }

    /// The cookie value for session id `id` in the cookie named `cookie_name`.
    pub fn sign(&self, cookie_name: &str, id: &str) -> String {
        let mut value = String::with_capacity(id.len() + 1 + SIGNATURE_LEN);
        self.sign_into(cookie_name, id, &mut value);
        value
    }

    /// Appends the cookie value for session id `id` (what [`sign`](Self::sign)
    /// returns) to `out`, so that a `Set-Cookie` header is written in one buffer.
    pub(crate) fn sign_into(&self, cookie_name: &str, id: &str, out: &mut String) {
        let tag = mac(&self.keys[0], cookie_name, id).finalize().into_bytes();
        out.push_str(id);
        out.push('.');
        URL_SAFE_NO_PAD.encode_string(tag, out);
    }

    /// The session id in `value` if its signature is valid for `cookie_name` under any
    /// key; `None` for anything else.
    pub fn verify<'a>(&self, cookie_name: &str, value: &'a str) -> Option<&'a str> {
        let (id, signature) = value.rsplit_once('.')?;
        if signature.len() != SIGNATURE_LEN {
            return None;
        }
        let tag = URL_SAFE_NO_PAD.decode(signature).ok()?;
        self.keys
            .iter()
            .any(|key| mac(key, cookie_name, id).verify_slice(&tag).is_ok())
            .then_some(id)
    }
}

fn keyed(key: &[u8]) -> Result<Hmac<Sha256>, SigningKeyError> {
    if key.len() < CookieSigner::MIN_KEY_LEN {
        return Err(SigningKeyError::TooShort { len: key.len() });
    }
    // HMAC takes keys of any length; the length was checked above.
    <Hmac<Sha256> as KeyInit>::new_from_slice(key)
        .map_err(|_| SigningKeyError::TooShort { len: key.len() })
}

fn mac(key: &Hmac<Sha256>, cookie_name: &str, id: &str) -> Hmac<Sha256> {
    let mut mac = key.clone();
    mac.update(CONTEXT);
    // Length-prefixed, so that name and id cannot be shifted into each other.
    mac.update(&(cookie_name.len() as u64).to_be_bytes());
    mac.update(cookie_name.as_bytes());
    mac.update(id.as_bytes());
    mac
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "Ab3xYz0123456789abcdef-n1.a1";

    #[test]
    fn signed_values_have_the_documented_shape() {
        let signer = CookieSigner::new(&[7; 32]).unwrap();
        let value = signer.sign("sid", ID);
        let (id, signature) = value.rsplit_once('.').unwrap();
        assert_eq!(id, ID);
        assert_eq!(signature.len(), SIGNATURE_LEN);
    }

    #[test]
    fn signing_into_a_buffer_appends_the_signed_value() {
        let signer = CookieSigner::new(&[7; 32]).unwrap();
        let mut out = String::from("sid=");
        signer.sign_into("sid", ID, &mut out);
        assert_eq!(out, format!("sid={}", signer.sign("sid", ID)));
        assert_eq!(out.len(), "sid=".len() + ID.len() + 1 + SIGNATURE_LEN);
    }

    #[test]
    fn tampering_anywhere_is_detected() {
        let signer = CookieSigner::new(&[7; 32]).unwrap();
        let value = signer.sign("sid", ID);
        for index in 0..value.len() {
            let mut bytes = value.clone().into_bytes();
            bytes[index] = if bytes[index] == b'A' { b'B' } else { b'A' };
            let tampered = String::from_utf8(bytes).unwrap();
            assert_eq!(signer.verify("sid", &tampered), None, "byte {index}");
        }
        assert_eq!(signer.verify("sid", ID), None, "an unsigned id");
        assert_eq!(signer.verify("sid", ""), None);
        assert_eq!(signer.verify("sid", &format!("{value}x")), None);
        let other = CookieSigner::new(&[8; 32]).unwrap();
        assert_eq!(other.verify("sid", &value), None, "another key");
    }

    #[test]
    fn short_keys_are_refused() {
        assert_eq!(
            CookieSigner::new(&[0; 31]).unwrap_err(),
            SigningKeyError::TooShort { len: 31 }
        );
        let signer = CookieSigner::new(&[0; 32]).unwrap();
        assert!(signer.with_previous_key(b"short").is_err());
    }

    #[test]
    fn debug_shows_no_key() {
        let signer = CookieSigner::new(&[0x41; 32]).unwrap();
        assert_eq!(format!("{signer:?}"), "CookieSigner { keys: 1 }");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(
            tandem_testkit::proptest_cases(2_000)
        ))]

        /// Forged values never verify and never panic; a signed value verifies only
        /// unchanged.
        #[test]
        fn forged_and_tampered_values_never_verify(
            forged in "[ -~]{0,120}",
            flip in proptest::prelude::any::<proptest::sample::Index>(),
        ) {
            let signer = CookieSigner::new(&[7; 32]).unwrap();
            proptest::prop_assert_eq!(signer.verify("sid", &forged), None);
            let signed = signer.sign("sid", ID);
            let mut tampered = signed.clone().into_bytes();
            let at = flip.index(tampered.len());
            tampered[at] = if tampered[at] == b'A' { b'B' } else { b'A' };
            let tampered = String::from_utf8(tampered).unwrap();
            if tampered != signed {
                proptest::prop_assert_eq!(signer.verify("sid", &tampered), None);
            }
            proptest::prop_assert_eq!(signer.verify("sid", &signed), Some(ID));
        }
    }
}
