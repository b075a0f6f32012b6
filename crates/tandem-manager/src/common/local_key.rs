//! The key of a session in this process's maps (the local tier, the transit copies,
//! the caches of unknown and ended ids).

use std::sync::Arc;

use tandem_core::SessionId;

/// A session's key in this process: the session id without its route (the route is not part of
/// the stored identity, so a takeover keeps the key).
///
/// A view of the id's own shared text rather than a copy of its storage part: one
/// allocation fewer per resident session. Hashes and compares as that `str`, so the
/// tier can be searched with a plain `&str`.
#[derive(Clone)]
pub(crate) struct LocalKey {
    text: Arc<str>,
    len: u8,
}

impl LocalKey {
    pub(crate) fn as_str(&self) -> &str {
        &self.text[..usize::from(self.len)]
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
    let (text, len) = id.shared_text();
    LocalKey {
        text: Arc::clone(text),
        len,
    }
}
