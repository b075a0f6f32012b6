//! What a commit decides before it writes, in either mode: whether a new session is
//! stored at all, and what the client's cookie becomes.

use std::time::Duration;

use tandem_core::{Codec, Session, SessionId};

use super::Common;
use crate::error::CommitError;
use crate::outcome::{BackupStatus, CommitOutcome, CookieUpdate};

/// What a commit of a new session does.
pub(crate) enum NewSession<C> {
    /// Store this session.
    Store(Session<C>),
    /// Nothing to store: answer this.
    Discard(CommitOutcome),
}

impl Common {
    /// A new session at commit, in either mode: what to store, or, if the request
    /// stored nothing (or invalidated it), the outcome without storing anything.
    pub(crate) fn prepare_new<C: Codec>(
        &self,
        mut session: Session<C>,
        had_cookie: bool,
        invalidated: bool,
    ) -> Result<NewSession<C>, CommitError> {
        if invalidated || !session.is_modified() {
            let cookie = if had_cookie {
                CookieUpdate::Clear
            } else {
                CookieUpdate::Keep
            };
            return Ok(NewSession::Discard(CommitOutcome {
                cookie,
                backup: BackupStatus::NotNeeded,
            }));
        }
        self.check_size(&session)?;
        session.touch(self.wall());
        session.mark_unchanged();
        Ok(NewSession::Store(session))
    }
}

/// What a commit of a session now under `id` does to the client's cookie: nothing if
/// the client sent exactly that id, otherwise set it.
pub(crate) fn cookie_for(
    incoming: Option<&SessionId>,
    id: &SessionId,
    max_inactive: Option<Duration>,
) -> CookieUpdate {
    match incoming {
        Some(incoming) if incoming == id => CookieUpdate::Keep,
        _ => CookieUpdate::Set {
            id: id.clone(),
            max_inactive,
        },
    }
}
