//! The key of a session in this process's maps (the local tier, the transit copies,
//! the caches of unknown and ended ids).

use std::sync::Arc;

use tandem_core::{RANDOM_LEN, SessionId};

/// Where an id's node part starts: after the random part and its dash, neither of
/// which contains a dot.
const NODE_START: usize = RANDOM_LEN + 1;

/// A session's key in this process: the session id without its route (the route is not part of
/// the stored identity, so a takeover keeps the key).
///
/// A view of the id's own shared text rather than a copy of its storage part: one
/// allocation fewer per resident session. Only the pointer is kept: the storage part
/// ends where the route's dot is (neither the random part nor the node id contains
/// one), found again when the key is hashed or compared, which saves the local tier
/// eight bytes per session. Hashes and compares as that `str`, so the tier can be
/// searched with a plain `&str`.
#[derive(Clone)]
pub(crate) struct LocalKey {
    text: Arc<str>,
}

impl LocalKey {
    pub(crate) fn as_str(&self) -> &str {
        // A byte loop over the node id (a few characters), not a search of the whole
        // text: this runs on every hash and comparison of a key.
        let len = self
            .text
            .bytes()
            .skip(NODE_START)
            .position(|byte| byte == b'.')
            .map_or(self.text.len(), |at| NODE_START + at);
        &self.text[..len]
    }
}

impl std::borrow::Borrow<str> for LocalKey {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl PartialEq for LocalKey {
    fn eq(&self, other: &LocalKey) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for LocalKey {}

impl std::hash::Hash for LocalKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        // Must hash exactly as the `str` it borrows as.
        self.as_str().hash(state);
    }
}

impl std::fmt::Debug for LocalKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The local key of `id`.
pub(crate) fn local_key(id: &SessionId) -> LocalKey {
    let (text, storage_len) = id.shared_text();
    debug_assert_eq!(
        text.split_once('.')
            .map_or(text.len(), |(storage, _)| storage.len()),
        usize::from(storage_len)
    );
    LocalKey {
        text: Arc::clone(text),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::hash_map::RandomState;
    use std::hash::BuildHasher;

    use tandem_core::{NodeId, Route, SessionId};

    use super::local_key;

    #[test]
    fn the_key_is_the_storage_part_whatever_the_route() {
        let node = NodeId::new("n1").unwrap();
        let route = Route::new("app7").unwrap();
        let routed = SessionId::generate(&node, Some(&route));
        let bare = routed.with_route(None);
        let (with, without) = (local_key(&routed), local_key(&bare));
        assert_eq!(with.as_str(), routed.storage_id());
        assert_eq!(without.as_str(), bare.as_str());
        assert!(with == without);
        let hasher = RandomState::new();
        assert_eq!(hasher.hash_one(&with), hasher.hash_one(routed.storage_id()));
        assert_eq!(std::mem::size_of_val(&with), 16);
    }
}
