//! How items are laid out in Redis: the value followed by an 8-byte CAS token, and
//! TTLs in milliseconds.
//!
//! The token is 8 random bytes, new on every write, stored after the value so that
//! reads (`GET`, `GETEX`) and touches (`PEXPIRE`) stay plain commands that keep it,
//! while the conditional writes compare it in a script in O(1) (`GETRANGE key -8 -1`)
//! whatever the value's size. Two writes of one key draw the same token with a
//! chance of 2⁻⁶⁴.

use std::time::Duration;

use tandem_core::{CasToken, Item, NodeId, StoreError, Ttl};

/// Bytes of the CAS token after each value.
pub const TOKEN_LEN: usize = 8;

/// The longest TTL the store sends: `u32::MAX` seconds (about 136 years), in
/// milliseconds. Longer ones are clamped to it. Redis refuses an expiry whose
/// absolute time in milliseconds would overflow a signed 64-bit number ("invalid
/// expire time"), which [`Duration::MAX`] would; this bound is far below that and
/// still beyond any session's life, and it is what memcached-like stores count
/// `Duration::MAX` as too.
pub const MAX_TTL_MILLIS: u64 = u32::MAX as u64 * 1000;

/// A fresh token.
pub(crate) fn new_token() -> [u8; TOKEN_LEN] {
    rand::random::<u64>().to_le_bytes()
}

/// The token as the trait reports it.
pub(crate) fn cas_token(token: [u8; TOKEN_LEN]) -> CasToken {
    CasToken(u64::from_le_bytes(token))
}

/// The bytes a [`CasToken`] stands for, as stored.
pub(crate) fn token_bytes(cas: CasToken) -> [u8; TOKEN_LEN] {
    cas.0.to_le_bytes()
}

/// `value` followed by `token`: what is stored.
pub(crate) fn with_token(value: &[u8], token: [u8; TOKEN_LEN]) -> Vec<u8> {
    let mut stored = Vec::with_capacity(value.len() + TOKEN_LEN);
    stored.extend_from_slice(value);
    stored.extend_from_slice(&token);
    stored
}

/// Splits what Redis holds into value and token. Shorter than a token: not written
/// by this store (a refusal of this item; the node is fine).
pub(crate) fn item(node: &NodeId, mut stored: Vec<u8>) -> Result<Item, StoreError> {
    let Some(split) = stored.len().checked_sub(TOKEN_LEN) else {
        return Err(StoreError::Server {
            node: node.clone(),
            message: format!(
                "the item holds {} bytes, fewer than a CAS token: it was not written by tandem",
                stored.len()
            ),
        });
    };
    let mut token = [0; TOKEN_LEN];
    token.copy_from_slice(&stored[split..]);
    stored.truncate(split);
    Ok(Item {
        value: stored,
        cas: cas_token(token),
    })
}

/// The TTL to send with `PX` (or `PEXPIRE`, `GETEX PX`): milliseconds, rounded up,
/// at least 1, at most [`MAX_TTL_MILLIS`]; `None` for [`Ttl::Never`], which the
/// store sends as no expiry (`SET` without `PX`, `PERSIST`), clearing any TTL the
/// item had.
///
/// ```
/// use std::time::Duration;
/// use tandem_core::Ttl;
/// use tandem_redis::{MAX_TTL_MILLIS, wire_ttl_millis};
///
/// assert_eq!(wire_ttl_millis(Ttl::Never), None);
/// assert_eq!(wire_ttl_millis(Ttl::After(Duration::from_micros(1500))), Some(2));
/// let forty_days = Duration::from_secs(40 * 24 * 3600);
/// assert_eq!(wire_ttl_millis(Ttl::After(forty_days)), Some(3_456_000_000));
/// assert_eq!(wire_ttl_millis(Ttl::After(Duration::MAX)), Some(MAX_TTL_MILLIS));
/// ```
pub fn wire_ttl_millis(ttl: Ttl) -> Option<u64> {
    ttl.millis().map(|millis| millis.min(MAX_TTL_MILLIS))
}

/// The TTL an item has left, from `PTTL`: `-1` never expires; `-2` (missing) is
/// `None`.
pub(crate) fn remaining_ttl(pttl: i64) -> Option<Ttl> {
    match pttl {
        -1 => Some(Ttl::Never),
        millis if millis >= 0 => Some(Ttl::After(Duration::from_millis(millis.unsigned_abs()))),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls_round_up_to_milliseconds_within_bounds() {
        let after = |duration| wire_ttl_millis(Ttl::After(duration));
        assert_eq!(after(Duration::ZERO), Some(1), "never 'expired at once'");
        assert_eq!(after(Duration::from_nanos(1)), Some(1));
        assert_eq!(after(Duration::from_millis(1)), Some(1));
        assert_eq!(after(Duration::from_nanos(1_000_001)), Some(2));
        assert_eq!(after(Duration::from_secs(60)), Some(60_000));
        assert_eq!(
            after(Duration::from_secs(u64::from(u32::MAX))),
            Some(MAX_TTL_MILLIS)
        );
        assert_eq!(after(Duration::from_secs(u64::MAX)), Some(MAX_TTL_MILLIS));
        assert_eq!(after(Duration::MAX), Some(MAX_TTL_MILLIS));
        // Far below the overflow Redis checks for: now (ms since 1970) + TTL < i64::MAX.
        assert!(MAX_TTL_MILLIS < (i64::MAX as u64) / 1000);
    }

    #[test]
    fn pttl_answers_are_read() {
        assert_eq!(remaining_ttl(-2), None);
        assert_eq!(remaining_ttl(-1), Some(Ttl::Never));
        assert_eq!(remaining_ttl(0), Some(Ttl::After(Duration::ZERO)));
        assert_eq!(
            remaining_ttl(1500),
            Some(Ttl::After(Duration::from_millis(1500)))
        );
    }

    #[test]
    fn tokens_follow_the_value() {
        let node = NodeId::new("r1").unwrap();
        let token = new_token();
        let stored = with_token(b"value", token);
        assert_eq!(stored.len(), 5 + TOKEN_LEN);
        let read = item(&node, stored).unwrap();
        assert_eq!(read.value, b"value");
        assert_eq!(token_bytes(read.cas), token);
        let empty = item(&node, with_token(b"", token)).unwrap();
        assert!(empty.value.is_empty());
        let foreign = item(&node, b"short".to_vec()).unwrap_err();
        assert!(!foreign.is_node_failure());
        assert!(foreign.to_string().contains("not written by tandem"));
        assert_ne!(new_token(), new_token());
    }
}
