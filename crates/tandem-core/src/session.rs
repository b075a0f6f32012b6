//! The session: id, times, and typed attributes with per-attribute change tracking.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::codec::{Codec, CodecError, CodecId, Decodes, Encodes};
use crate::id::SessionId;
use crate::time::{from_unix_millis, unix_millis};

/// Longest accepted attribute name, in bytes.
pub const MAX_ATTRIBUTE_NAME_LEN: usize = 256;

/// Why an attribute could not be read or written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AttributeError {
    /// The name was empty or longer than [`MAX_ATTRIBUTE_NAME_LEN`] bytes.
    #[error("attribute names must be 1 to {MAX_ATTRIBUTE_NAME_LEN} bytes, got {len}")]
    InvalidName {
        /// Length of the rejected name in bytes.
        len: usize,
    },
    /// The codec failed on this attribute. Other attributes are unaffected.
    #[error("attribute {name:?}: {source}")]
    Codec {
        /// The attribute's name.
        name: String,
        /// What the codec reported.
        #[source]
        source: CodecError,
    },
}

/// An encoded attribute value and the codec that wrote it.
///
/// The bytes are shared, not copied, when a value is cloned: a manager hands each
/// request its own snapshot of a session, and that must not copy every value.
#[derive(Clone, PartialEq, Eq)]
pub struct AttributeValue {
    codec: CodecId,
    bytes: Arc<[u8]>,
}

impl AttributeValue {
    /// An encoded value written by `codec`.
    pub fn new(codec: CodecId, bytes: impl Into<Arc<[u8]>>) -> AttributeValue {
        AttributeValue {
            codec,
            bytes: bytes.into(),
        }
    }

    /// The codec that wrote the bytes.
    pub fn codec(&self) -> CodecId {
        self.codec
    }

    /// The encoded bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }
}

impl fmt::Debug for AttributeValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Attribute values may hold personal data: show their size, not their content.
        write!(
            f,
            "AttributeValue({}, {} bytes)",
            self.codec,
            self.bytes.len()
        )
    }
}

/// One attribute this session changed since it was loaded (or since
/// [`Session::mark_unchanged`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttributeChange<'a> {
    /// The attribute's name.
    pub name: &'a str,
    /// The value when the session was loaded; `None` if the attribute did not exist.
    pub original: Option<&'a AttributeValue>,
    /// The value now; `None` if the attribute was removed.
    pub current: Option<&'a AttributeValue>,
}

/// An HTTP session: id, creation and last-access times, max inactive interval and
/// named attributes encoded with the codec `C`.
///
/// Attributes are typed at the call site: `insert` takes any value the codec can
/// encode and `get::<T>` any type it can decode. Changes are tracked per attribute,
/// and a write of a value whose encoding equals the stored one is not a change.
///
/// ```
/// # use std::time::{Duration, SystemTime};
/// # use tandem_core::{Codec, CodecError, CodecId, Decodes, Encodes, NodeId, Session, SessionId};
/// # struct Bytes;
/// # impl Codec for Bytes { const ID: CodecId = CodecId::new(250); const NAME: &'static str = "bytes"; }
/// # impl Encodes<str> for Bytes {
/// #     fn encode(v: &str) -> Result<Vec<u8>, CodecError> { Ok(v.as_bytes().to_vec()) }
/// # }
/// # impl Decodes<String> for Bytes {
/// #     fn decode(b: &[u8]) -> Result<String, CodecError> {
/// #         String::from_utf8(b.to_vec()).map_err(|e| CodecError::decode(Self::ID, e))
/// #     }
/// # }
/// let id = SessionId::generate(&NodeId::new("n1").unwrap(), None);
/// let mut session: Session<Bytes> = Session::new(id, SystemTime::now(), Some(Duration::from_secs(1800)));
///
/// assert!(session.insert("user", "ann").unwrap()); // a change
/// session.mark_unchanged();
/// assert!(!session.insert("user", "ann").unwrap()); // same bytes: not a change
/// assert!(!session.is_modified());
/// assert_eq!(session.get::<String>("user").unwrap().as_deref(), Some("ann"));
/// ```
pub struct Session<C> {
    id: SessionId,
    created_ms: u64,
    last_accessed_ms: u64,
    max_inactive: Option<Duration>,
    /// Sorted by name, names unique. A sorted table rather than a map: sessions hold a
    /// handful to a few dozen attributes, and a map's nodes would cost more memory per
    /// resident session than the lookups save.
    attributes: Attributes,
    /// For each attribute changed since the last `mark_unchanged`, sorted by name: its
    /// value back then (`None`: it did not exist).
    originals: Vec<(Arc<str>, Option<AttributeValue>)>,
    max_inactive_changed: bool,
    codec: PhantomData<fn() -> C>,
}

/// One attribute: its name and encoded value.
type Attribute = (Arc<str>, AttributeValue);

/// A session's attribute table. A baseline (what a local tier keeps resident) shares
/// its table with every copy of it, and a copy takes its own table on its first
/// change: each request gets a copy of the resident session, and one that only reads
/// must not copy the table (an allocation and two reference counts per attribute).
#[derive(Clone)]
enum Attributes {
    Shared(Arc<[Attribute]>),
    Owned(Vec<Attribute>),
}

impl Attributes {
    fn as_slice(&self) -> &[Attribute] {
        match self {
            Attributes::Shared(shared) => shared,
            Attributes::Owned(owned) => owned,
        }
    }

    /// The table, made this session's own first.
    fn to_mut(&mut self) -> &mut Vec<Attribute> {
        if let Attributes::Shared(shared) = self {
            *self = Attributes::Owned(shared.to_vec());
        }
        match self {
            Attributes::Owned(owned) => owned,
            Attributes::Shared(_) => unreachable!("made owned above"),
        }
    }

    /// Makes the table shareable (exactly sized), for a baseline.
    fn share(&mut self) {
        if let Attributes::Owned(owned) = self {
            *self = Attributes::Shared(Arc::from(std::mem::take(owned)));
        }
    }
}

/// Normalizes "zero" to "never expires": a zero interval must never mean "expired".
/// `None` for "never expires" (given as `None` or zero); a positive interval shorter
/// than the millisecond the envelope and the local tier count in is rounded up to it,
/// so that a tiny interval expires at once rather than turning into "never".
fn normalize_interval(interval: Option<Duration>) -> Option<Duration> {
    interval
        .filter(|interval| !interval.is_zero())
        .map(|interval| interval.max(Duration::from_millis(1)))
}

fn check_name(name: &str) -> Result<(), AttributeError> {
    if name.is_empty() || name.len() > MAX_ATTRIBUTE_NAME_LEN {
        return Err(AttributeError::InvalidName { len: name.len() });
    }
    Ok(())
}

impl<C: Codec> Session<C> {
    /// A new, empty session created at `now`. A `max_inactive` of `None` or zero means
    /// the session never expires.
    pub fn new(id: SessionId, now: SystemTime, max_inactive: Option<Duration>) -> Session<C> {
        let now_ms = unix_millis(now);
        Session {
            id,
            created_ms: now_ms,
            last_accessed_ms: now_ms,
            max_inactive: normalize_interval(max_inactive),
            attributes: Attributes::Owned(Vec::new()),
            originals: Vec::new(),
            max_inactive_changed: false,
            codec: PhantomData,
        }
    }

    /// A session rebuilt from stored parts, with no changes recorded. `attributes`
    /// must be sorted by name without duplicates.
    pub(crate) fn from_stored(
        id: SessionId,
        created_ms: u64,
        last_accessed_ms: u64,
        max_inactive: Option<Duration>,
        attributes: Vec<(Arc<str>, AttributeValue)>,
    ) -> Session<C> {
        debug_assert!(attributes.windows(2).all(|pair| pair[0].0 < pair[1].0));
        Session {
            id,
            created_ms,
            last_accessed_ms,
            max_inactive: normalize_interval(max_inactive),
            attributes: Attributes::Shared(Arc::from(attributes)),
            originals: Vec::new(),
            max_inactive_changed: false,
            codec: PhantomData,
        }
    }

    /// The session id.
    pub fn id(&self) -> &SessionId {
        &self.id
    }

    /// Replaces the id (relocation, takeover, id cycling). The id is not stored inside
    /// the envelope, so this alone is not an attribute change.
    pub fn set_id(&mut self, id: SessionId) {
        self.id = id;
    }

    /// When the session was created.
    pub fn created(&self) -> SystemTime {
        from_unix_millis(self.created_ms)
    }

    /// When the session was last accessed.
    pub fn last_accessed(&self) -> SystemTime {
        from_unix_millis(self.last_accessed_ms)
    }

    pub(crate) fn created_ms(&self) -> u64 {
        self.created_ms
    }

    pub(crate) fn last_accessed_ms(&self) -> u64 {
        self.last_accessed_ms
    }

    /// Records an access at `now`; the idle timeout restarts from here.
    pub fn touch(&mut self, now: SystemTime) {
        self.last_accessed_ms = self.last_accessed_ms.max(unix_millis(now));
    }

    /// The max inactive interval; `None` means the session never expires.
    pub fn max_inactive(&self) -> Option<Duration> {
        self.max_inactive
    }

    /// Changes the max inactive interval (`None` or zero: never expires). A different
    /// interval counts as a modification.
    pub fn set_max_inactive(&mut self, max_inactive: Option<Duration>) {
        let max_inactive = normalize_interval(max_inactive);
        if max_inactive != self.max_inactive {
            self.max_inactive = max_inactive;
            self.max_inactive_changed = true;
        }
    }

    /// When the session expires if it is not accessed again; `None` if never.
    pub fn expires_at(&self) -> Option<SystemTime> {
        // An instant too far out to represent is as good as never.
        self.max_inactive
            .and_then(|interval| self.last_accessed().checked_add(interval))
    }

    /// Whether the session has been idle longer than its max inactive interval at `now`.
    pub fn is_expired(&self, now: SystemTime) -> bool {
        self.expires_at().is_some_and(|at| now >= at)
    }

    /// Encodes `value` with the codec and stores it under `name`. Returns whether this
    /// was a change: writing a value whose encoding equals the stored one is not.
    pub fn insert<T: ?Sized>(&mut self, name: &str, value: &T) -> Result<bool, AttributeError>
    where
        C: Encodes<T>,
    {
        check_name(name)?;
        let bytes = C::encode(value).map_err(|source| AttributeError::Codec {
            name: name.to_owned(),
            source,
        })?;
        Ok(self.put(name, Some(AttributeValue::new(C::ID, bytes))))
    }

    /// Decodes the attribute `name` as a `T`; `Ok(None)` if there is no such attribute.
    /// A decoding failure is an error for this attribute only.
    pub fn get<T>(&self, name: &str) -> Result<Option<T>, AttributeError>
    where
        C: Decodes<T>,
    {
        let Some(value) = self.value(name) else {
            return Ok(None);
        };
        C::decode_written_by(value.codec, &value.bytes)
            .map(Some)
            .map_err(|source| AttributeError::Codec {
                name: name.to_owned(),
                source,
            })
    }

    /// Removes the attribute `name`; returns whether it existed.
    pub fn remove(&mut self, name: &str) -> bool {
        self.put(name, None)
    }

    /// Sets (`Some`) or removes (`None`) an already encoded value, recording the change
    /// like [`insert`](Self::insert) and [`remove`](Self::remove) do. Returns whether
    /// the stored state changed. This is how a manager applies one request's
    /// attribute changes to the state other requests changed meanwhile.
    pub fn apply(
        &mut self,
        name: &str,
        value: Option<AttributeValue>,
    ) -> Result<bool, AttributeError> {
        check_name(name)?;
        Ok(self.put(name, value))
    }

    /// Removes every attribute.
    pub fn clear(&mut self) {
        for (name, value) in std::mem::take(self.attributes.to_mut()) {
            match self.original_position(&name) {
                // Added by this request: removing it again is no change at all.
                Ok(index) if self.originals[index].1.is_none() => {
                    self.originals.remove(index);
                }
                Ok(_) => {}
                Err(index) => self.originals.insert(index, (name, Some(value))),
            }
        }
    }

    /// Whether the attribute `name` exists.
    pub fn contains(&self, name: &str) -> bool {
        self.position(name).is_ok()
    }

    /// The attribute names, in sorted order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.attributes.as_slice().iter().map(|(name, _)| &**name)
    }

    /// Number of attributes.
    pub fn len(&self) -> usize {
        self.attributes.as_slice().len()
    }

    /// Whether the session has no attributes.
    pub fn is_empty(&self) -> bool {
        self.attributes.as_slice().is_empty()
    }

    /// The encoded value of attribute `name`.
    pub fn value(&self, name: &str) -> Option<&AttributeValue> {
        self.position(name)
            .ok()
            .map(|index| &self.attributes.as_slice()[index].1)
    }

    /// Every attribute with its encoded value, in name order.
    pub fn values(&self) -> impl Iterator<Item = (&str, &AttributeValue)> {
        self.attributes
            .as_slice()
            .iter()
            .map(|(name, value)| (&**name, value))
    }

    /// Whether anything that is stored changed: an attribute's bytes or the max
    /// inactive interval.
    pub fn is_modified(&self) -> bool {
        !self.originals.is_empty() || self.max_inactive_changed
    }

    /// Whether the max inactive interval changed since the session was loaded (or
    /// since [`mark_unchanged`](Self::mark_unchanged)).
    pub fn is_max_inactive_modified(&self) -> bool {
        self.max_inactive_changed
    }

    /// The attributes changed since the session was loaded, with their original and
    /// current values, in name order.
    pub fn changes(&self) -> impl Iterator<Item = AttributeChange<'_>> {
        self.originals
            .iter()
            .map(|(name, original)| AttributeChange {
                name,
                original: original.as_ref(),
                current: self.value(name),
            })
    }

    /// Forgets the recorded changes: the current state becomes the baseline (after it
    /// was stored). Also gives back the memory the change records and spare attribute
    /// slots held: a baseline is what a local tier keeps resident.
    pub fn mark_unchanged(&mut self) {
        self.originals = Vec::new();
        self.attributes.share();
        self.max_inactive_changed = false;
    }

    /// Where attribute `name` is (`Ok`) or would be inserted (`Err`).
    fn position(&self, name: &str) -> Result<usize, usize> {
        self.attributes
            .as_slice()
            .binary_search_by(|(probe, _)| (**probe).cmp(name))
    }

    /// Sets (or with `None` removes) an encoded value and records the change. Returns
    /// whether the stored state changed.
    fn put(&mut self, name: &str, value: Option<AttributeValue>) -> bool {
        let position = self.position(name);
        let current = position
            .ok()
            .map(|index| &self.attributes.as_slice()[index].1);
        if current == value.as_ref() {
            return false;
        }
        // Decide the change record before the value moves into place, so that no value
        // is cloned and no name is looked up twice.
        let original = self.original_position(name);
        if let Ok(index) = original
            && self.originals[index].1 == value
        {
            // Back to what was loaded: no longer a change.
            self.originals.remove(index);
        }
        let attributes = self.attributes.to_mut();
        let previous = match (position, value) {
            (Ok(index), Some(value)) => Some(std::mem::replace(&mut attributes[index].1, value)),
            (Ok(index), None) => Some(attributes.remove(index).1),
            (Err(index), Some(value)) => {
                attributes.insert(index, (name.into(), value));
                None
            }
            (Err(_), None) => unreachable!("absent attribute removed: returned as unchanged above"),
        };
        if let Err(index) = original {
            self.originals.insert(index, (name.into(), previous));
        }
        true
    }

    /// Where the change record of `name` is (`Ok`) or would be inserted (`Err`).
    fn original_position(&self, name: &str) -> Result<usize, usize> {
        self.originals
            .binary_search_by(|(probe, _)| (**probe).cmp(name))
    }
}

impl<C> Clone for Session<C> {
    fn clone(&self) -> Session<C> {
        Session {
            id: self.id.clone(),
            created_ms: self.created_ms,
            last_accessed_ms: self.last_accessed_ms,
            max_inactive: self.max_inactive,
            attributes: self.attributes.clone(),
            originals: self.originals.clone(),
            max_inactive_changed: self.max_inactive_changed,
            codec: PhantomData,
        }
    }
}

impl<C> fmt::Debug for Session<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("id", &self.id)
            .field("created_ms", &self.created_ms)
            .field("last_accessed_ms", &self.last_accessed_ms)
            .field("max_inactive", &self.max_inactive)
            .field("attributes", &self.attributes.as_slice())
            .field(
                "changed",
                &self
                    .originals
                    .iter()
                    .map(|(name, _)| name)
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::id::NodeId;

    /// A test codec: values are strings, stored as their UTF-8 bytes.
    pub(crate) struct TextCodec;

    impl Codec for TextCodec {
        const ID: CodecId = CodecId::new(201);
        const NAME: &'static str = "text";
    }

    impl Encodes<str> for TextCodec {
        fn encode(value: &str) -> Result<Vec<u8>, CodecError> {
            if value == "unencodable" {
                return Err(CodecError::encode(Self::ID, "refused"));
            }
            Ok(value.as_bytes().to_vec())
        }
    }

    impl Decodes<String> for TextCodec {
        fn decode(bytes: &[u8]) -> Result<String, CodecError> {
            String::from_utf8(bytes.to_vec()).map_err(|error| CodecError::decode(Self::ID, error))
        }
    }

    impl Decodes<u32> for TextCodec {
        fn decode(bytes: &[u8]) -> Result<u32, CodecError> {
            let text =
                std::str::from_utf8(bytes).map_err(|error| CodecError::decode(Self::ID, error))?;
            text.parse()
                .map_err(|error| CodecError::decode(Self::ID, error))
        }
    }

    pub(crate) fn new_session() -> Session<TextCodec> {
        let id = SessionId::generate(&NodeId::new("n1").unwrap(), None);
        Session::new(id, SystemTime::now(), Some(Duration::from_secs(60)))
    }

    #[test]
    fn insert_get_remove() {
        let mut session = new_session();
        assert!(session.insert("a", "1").unwrap());
        assert!(session.insert("b", "two").unwrap());
        assert_eq!(session.get::<String>("a").unwrap().as_deref(), Some("1"));
        assert_eq!(session.get::<u32>("a").unwrap(), Some(1));
        assert_eq!(session.get::<String>("missing").unwrap(), None);
        assert_eq!(session.names().collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(session.len(), 2);
        assert!(session.remove("a"));
        assert!(!session.remove("a"));
        assert!(!session.contains("a"));
        session.clear();
        assert!(session.is_empty());
    }

    #[test]
    fn copies_of_a_baseline_share_its_table_until_they_change() {
        let mut baseline = new_session();
        baseline.insert("a", "1").unwrap();
        baseline.insert("b", "2").unwrap();
        baseline.mark_unchanged();
        let reader = baseline.clone();
        let mut writer = baseline.clone();
        let shared = |session: &Session<TextCodec>| match &session.attributes {
            Attributes::Shared(table) => Some(Arc::as_ptr(table).cast::<u8>()),
            Attributes::Owned(_) => None,
        };
        assert!(shared(&baseline).is_some());
        assert_eq!(
            shared(&reader),
            shared(&baseline),
            "a read-only copy copied the table"
        );

        // Writing the same bytes is no change and keeps sharing.
        assert!(!writer.insert("a", "1").unwrap());
        assert_eq!(shared(&writer), shared(&baseline));
        assert!(writer.insert("a", "changed").unwrap());
        writer.clear();
        assert!(shared(&writer).is_none());
        assert!(writer.is_empty());
        assert_eq!(writer.changes().count(), 2);
        // The baseline and the other copy still see the table as it was.
        for session in [&baseline, &reader] {
            assert_eq!(session.get::<String>("a").unwrap().as_deref(), Some("1"));
            assert_eq!(session.get::<String>("b").unwrap().as_deref(), Some("2"));
            assert!(!session.is_modified());
        }
    }

    #[test]
    fn decode_failure_is_confined_to_one_attribute() {
        let mut session = new_session();
        session.insert("count", "not a number").unwrap();
        session.insert("name", "ann").unwrap();
        let error = session.get::<u32>("count").unwrap_err();
        assert!(matches!(&error, AttributeError::Codec { name, .. } if name == "count"));
        assert_eq!(
            session.get::<String>("name").unwrap().as_deref(),
            Some("ann")
        );
    }

    #[test]
    fn failed_encoding_changes_nothing() {
        let mut session = new_session();
        session.insert("a", "1").unwrap();
        session.mark_unchanged();
        assert!(session.insert("a", "unencodable").is_err());
        assert_eq!(session.get::<String>("a").unwrap().as_deref(), Some("1"));
        assert!(!session.is_modified());
    }

    #[test]
    fn invalid_names_are_rejected() {
        let mut session = new_session();
        assert_eq!(
            session.insert("", "x"),
            Err(AttributeError::InvalidName { len: 0 })
        );
        let long = "n".repeat(MAX_ATTRIBUTE_NAME_LEN + 1);
        assert!(session.insert(&long, "x").is_err());
        assert!(session.insert(&long[1..], "x").is_ok());
    }

    #[test]
    fn equal_encoding_is_not_a_change() {
        let mut session = new_session();
        session.insert("a", "1").unwrap();
        session.mark_unchanged();
        assert!(!session.insert("a", "1").unwrap());
        assert!(!session.is_modified());
        assert!(!session.remove("missing"));
        assert!(!session.is_modified());
    }

    #[test]
    fn changes_record_originals_and_reverting_cancels_them() {
        let mut session = new_session();
        session.insert("a", "1").unwrap();
        session.insert("b", "2").unwrap();
        session.mark_unchanged();

        session.insert("a", "10").unwrap();
        session.insert("a", "11").unwrap();
        session.remove("b");
        session.insert("c", "3").unwrap();
        let changes: Vec<_> = session
            .changes()
            .map(|change| {
                let text = |v: Option<&AttributeValue>| {
                    v.map(|v| String::from_utf8(v.bytes().to_vec()).unwrap())
                };
                (
                    change.name.to_owned(),
                    text(change.original),
                    text(change.current),
                )
            })
            .collect();
        assert_eq!(
            changes,
            [
                ("a".to_owned(), Some("1".to_owned()), Some("11".to_owned())),
                ("b".to_owned(), Some("2".to_owned()), None),
                ("c".to_owned(), None, Some("3".to_owned())),
            ]
        );

        session.insert("a", "1").unwrap();
        session.insert("b", "2").unwrap();
        session.remove("c");
        assert!(!session.is_modified(), "{session:?}");
    }

    #[test]
    fn clear_records_every_removal() {
        let mut session = new_session();
        session.insert("a", "1").unwrap();
        session.insert("b", "2").unwrap();
        session.mark_unchanged();
        session.clear();
        assert_eq!(session.changes().count(), 2);
        assert!(session.changes().all(|change| change.current.is_none()));
    }

    #[test]
    fn max_inactive_zero_means_never() {
        let id = SessionId::generate(&NodeId::new("n1").unwrap(), None);
        let now = SystemTime::now();
        let session: Session<TextCodec> = Session::new(id, now, Some(Duration::ZERO));
        assert_eq!(session.max_inactive(), None);
        assert_eq!(session.expires_at(), None);
        assert!(!session.is_expired(now + Duration::from_secs(10 * 365 * 86_400)));
    }

    #[test]
    fn idle_expiry_slides_with_touch() {
        let mut session = new_session();
        let start = session.last_accessed();
        assert!(!session.is_expired(start + Duration::from_secs(59)));
        assert!(session.is_expired(start + Duration::from_secs(60)));
        session.touch(start + Duration::from_secs(50));
        assert!(!session.is_expired(start + Duration::from_secs(100)));
        assert!(session.is_expired(start + Duration::from_secs(110)));
        // Time never runs backwards for a session.
        session.touch(start);
        assert_eq!(session.last_accessed(), start + Duration::from_secs(50));
    }

    #[test]
    fn changing_max_inactive_is_a_modification() {
        let mut session = new_session();
        session.set_max_inactive(Some(Duration::from_secs(60)));
        assert!(!session.is_modified());
        session.set_max_inactive(Some(Duration::from_secs(120)));
        assert!(session.is_modified());
        session.mark_unchanged();
        assert!(!session.is_modified());
    }

    #[test]
    fn debug_does_not_print_values() {
        let mut session = new_session();
        session.insert("secret", "hunter2").unwrap();
        let debug = format!("{session:?}");
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(debug.contains("secret"), "{debug}");
    }
}
