//! The form in which the local tier keeps a session between requests: its id and its
//! envelope, exactly sized.
//!
//! A [`Session`] is built for the requests that touch it: each holds its attributes in
//! a table of shared names and values, more than a hundred bytes of bookkeeping beyond
//! the attributes themselves (the table, a reference-counted name and value per
//! attribute, the change tracking). Kept resident, that cost would be paid by every
//! session a server holds, most of them idle. The envelope (what the remote tier
//! stores, see [`tandem_core::envelope`]) holds the same state in one allocation with
//! eight bytes per attribute beyond its name and value; a request decodes it into its
//! own [`Session`], and a changed session is encoded back. A backup seals the envelope
//! as it is, without encoding it again.

use std::marker::PhantomData;
use std::time::{Duration, SystemTime};

use tandem_core::envelope;
use tandem_core::{AttributeValue, Codec, CodecId, Session, SessionId};

use crate::common::unix_millis;

/// Where the envelope's header keeps the last access time (Unix milliseconds, little
/// endian): format version 1, after magic (4), version (1), flags (1), codec (2) and
/// creation time (8).
const LAST_ACCESSED_AT: usize = 16;
/// Where the header keeps the max inactive interval in milliseconds (0: never).
const MAX_INACTIVE_AT: usize = 24;
/// Where the header keeps the number of attributes (4 bytes).
const COUNT_AT: usize = 32;
/// Bytes an attribute takes in the envelope beyond its name and value: name length
/// (2), codec (2), value length (4).
pub(crate) const PER_ATTRIBUTE: usize = 8;
const _: () = assert!(envelope::FORMAT_VERSION == 1 && envelope::HEADER_LEN == 36);

/// A session at rest in the local tier.
pub(crate) struct Resident<C> {
    id: SessionId,
    /// The session's envelope, exactly sized.
    envelope: Box<[u8]>,
    codec: PhantomData<fn() -> C>,
}

impl<C: Codec> Resident<C> {
    /// `session`'s state (its recorded changes are not kept).
    pub(crate) fn new(session: &Session<C>) -> Resident<C> {
        Resident {
            id: session.id().clone(),
            envelope: envelope::encode(session).into_boxed_slice(),
            codec: PhantomData,
        }
    }

    /// The session, for a request: its own copy, with no changes recorded.
    pub(crate) fn session(&self) -> Session<C> {
        // Encoded here from a session of this codec, so it decodes; failing that, an
        // empty session would silently lose the user's state.
        envelope::decode(self.id.clone(), &self.envelope)
            .expect("a resident envelope decodes: it was encoded from a session of this codec")
    }

    pub(crate) fn id(&self) -> &SessionId {
        &self.id
    }

    /// Gives the session another id (relocation, takeover). The id is not part of the
    /// envelope.
    pub(crate) fn set_id(&mut self, id: SessionId) {
        self.id = id;
    }

    /// The envelope: what a backup seals and stores.
    pub(crate) fn envelope(&self) -> &[u8] {
        &self.envelope
    }

    pub(crate) fn last_accessed(&self) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_millis(self.read_u64(LAST_ACCESSED_AT))
    }

    /// Records an access at `now`, as [`Session::touch`] does: the last access never
    /// goes back.
    pub(crate) fn touch(&mut self, now: SystemTime) {
        let now = unix_millis(now);
        if now > self.read_u64(LAST_ACCESSED_AT) {
            self.envelope[LAST_ACCESSED_AT..LAST_ACCESSED_AT + 8]
                .copy_from_slice(&now.to_le_bytes());
        }
    }

    /// The max inactive interval; `None`: never expires.
    pub(crate) fn max_inactive(&self) -> Option<Duration> {
        match self.read_u64(MAX_INACTIVE_AT) {
            0 => None,
            ms => Some(Duration::from_millis(ms)),
        }
    }

    /// How many attributes the session has.
    pub(crate) fn attribute_count(&self) -> usize {
        let mut bytes = [0; 4];
        bytes.copy_from_slice(&self.envelope[COUNT_AT..COUNT_AT + 4]);
        u32::from_le_bytes(bytes) as usize
    }

    /// The stored value of attribute `name` (its codec and bytes), read in place.
    pub(crate) fn value(&self, name: &str) -> Option<(CodecId, &[u8])> {
        self.attributes()
            .find(|(stored, _, _)| *stored == name.as_bytes())
            .map(|(_, codec, value)| (codec, value))
    }

    /// The attributes in the envelope's (name) order: name, codec, value. The
    /// envelope was encoded here, so it is read without the checks that decoding
    /// untrusted bytes needs.
    fn attributes(&self) -> impl Iterator<Item = (&[u8], CodecId, &[u8])> {
        let mut rest = &self.envelope[envelope::HEADER_LEN..];
        (0..self.attribute_count()).map(move |_| {
            let name_len = usize::from(u16::from_le_bytes([rest[0], rest[1]]));
            let name = &rest[2..2 + name_len];
            rest = &rest[2 + name_len..];
            let codec = CodecId::new(u16::from_le_bytes([rest[0], rest[1]]));
            let value_len = u32::from_le_bytes([rest[2], rest[3], rest[4], rest[5]]) as usize;
            let value = &rest[6..6 + value_len];
            rest = &rest[6 + value_len..];
            (name, codec, value)
        })
    }

    /// The envelope of this state with `changes` applied (sorted by name; `None`
    /// removes the attribute), the interval replaced if `interval` is given, and
    /// an access at `now` recorded: what encoding the session with those changes
    /// made would give, without decoding it first.
    pub(crate) fn merged(
        &self,
        changes: &[(&str, Option<&AttributeValue>)],
        interval: Option<Option<Duration>>,
        now: SystemTime,
    ) -> Vec<u8> {
        let mut attributes: Vec<(&[u8], CodecId, &[u8])> =
            Vec::with_capacity(self.attribute_count() + changes.len());
        let mut changes = changes.iter().peekable();
        fn set<'a>(
            name: &'a str,
            value: Option<&'a AttributeValue>,
        ) -> Option<(&'a [u8], CodecId, &'a [u8])> {
            value.map(|value| (name.as_bytes(), value.codec(), value.bytes()))
        }
        for stored in self.attributes() {
            while let Some((name, value)) = changes.next_if(|(name, _)| name.as_bytes() < stored.0)
            {
                attributes.extend(set(name, *value));
            }
            match changes.next_if(|(name, _)| name.as_bytes() == stored.0) {
                Some((name, value)) => attributes.extend(set(name, *value)),
                None => attributes.push(stored),
            }
        }
        for (name, value) in changes {
            attributes.extend(set(name, *value));
        }
        let len = envelope::HEADER_LEN
            + attributes
                .iter()
                .map(|(name, _, value)| PER_ATTRIBUTE + name.len() + value.len())
                .sum::<usize>();
        let mut out = Vec::with_capacity(len);
        out.extend_from_slice(&self.envelope[..LAST_ACCESSED_AT]);
        let accessed = self.read_u64(LAST_ACCESSED_AT).max(unix_millis(now));
        out.extend_from_slice(&accessed.to_le_bytes());
        let interval_ms = match interval {
            Some(interval) => interval.map_or(0, |interval| {
                u64::try_from(interval.as_millis()).unwrap_or(u64::MAX)
            }),
            None => self.read_u64(MAX_INACTIVE_AT),
        };
        out.extend_from_slice(&interval_ms.to_le_bytes());
        // Within the sizes the envelope's fields hold: names are capped far below
        // u16, and a session is refused long before a value or count reaches u32.
        out.extend_from_slice(&(attributes.len() as u32).to_le_bytes());
        for (name, codec, value) in attributes {
            out.extend_from_slice(&(name.len() as u16).to_le_bytes());
            out.extend_from_slice(name);
            out.extend_from_slice(&codec.get().to_le_bytes());
            out.extend_from_slice(&(value.len() as u32).to_le_bytes());
            out.extend_from_slice(value);
        }
        out
    }

    /// Replaces the state with an envelope made by [`merged`](Self::merged).
    pub(crate) fn set_envelope(&mut self, envelope: Vec<u8>) {
        self.envelope = envelope.into_boxed_slice();
    }

    fn read_u64(&self, at: usize) -> u64 {
        let mut bytes = [0; 8];
        bytes.copy_from_slice(&self.envelope[at..at + 8]);
        u64::from_le_bytes(bytes)
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use tandem_core::{NodeId, Session, SessionId};

    use super::Resident;
    use crate::testing::TextCodec;

    #[test]
    fn keeps_the_state_and_slides_the_last_access_forward_only() {
        let id = SessionId::generate(&NodeId::new("n1").unwrap(), None);
        let created = SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        let mut session: Session<TextCodec> =
            Session::new(id.clone(), created, Some(Duration::from_millis(90_500)));
        session.insert("cart", "3").unwrap();
        session.insert("user", "ann").unwrap();
        session.mark_unchanged();
        let mut resident = Resident::new(&session);
        assert_eq!(
            resident.envelope(),
            &tandem_core::envelope::encode(&session)[..]
        );
        assert_eq!(resident.max_inactive(), Some(Duration::from_millis(90_500)));
        assert_eq!(resident.last_accessed(), created);
        resident.touch(created + Duration::from_millis(5));
        resident.touch(created + Duration::from_millis(2));
        assert_eq!(resident.last_accessed(), created + Duration::from_millis(5));
        let back = resident.session();
        assert_eq!(back.id(), &id);
        assert_eq!(back.created(), created);
        assert_eq!(back.last_accessed(), created + Duration::from_millis(5));
        assert_eq!(back.get::<u32>("cart").unwrap(), Some(3));
        assert_eq!(back.get::<String>("user").unwrap().as_deref(), Some("ann"));
        assert!(!back.is_modified());
        // Merging changes in place gives what encoding the changed session gives.
        let mut changed = back.clone();
        changed.insert("a", "1").unwrap();
        changed.remove("cart");
        changed.insert("user", "bob").unwrap();
        changed.insert("zed", "2").unwrap();
        let later = created + Duration::from_millis(9);
        let changes: Vec<_> = changed.changes().map(|c| (c.name, c.current)).collect();
        let merged = resident.merged(&changes, Some(Some(Duration::from_secs(7))), later);
        changed.touch(later);
        changed.set_max_inactive(Some(Duration::from_secs(7)));
        assert_eq!(merged, tandem_core::envelope::encode(&changed));
        assert_eq!(
            resident.value("user").map(|(_, value)| value),
            Some(&b"ann"[..])
        );
        assert_eq!(resident.value("nope"), None);
        let kept = resident.merged(&[], None, created);
        assert_eq!(kept, resident.envelope());
        let moved = SessionId::generate(&NodeId::new("n2").unwrap(), None);
        resident.set_id(moved.clone());
        assert_eq!(resident.session().id(), &moved);
    }
}
