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
use tandem_core::{Codec, Session, SessionId};

use crate::common::unix_millis;

/// Where the envelope's header keeps the last access time (Unix milliseconds, little
/// endian): format version 1, after magic (4), version (1), flags (1), codec (2) and
/// creation time (8).
const LAST_ACCESSED_AT: usize = 16;
/// Where the header keeps the max inactive interval in milliseconds (0: never).
const MAX_INACTIVE_AT: usize = 24;
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

    /// Replaces the state with `session`'s, id included.
    pub(crate) fn replace(&mut self, session: &Session<C>) {
        *self = Resident::new(session);
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
        let moved = SessionId::generate(&NodeId::new("n2").unwrap(), None);
        resident.set_id(moved.clone());
        assert_eq!(resident.session().id(), &moved);
    }
}
