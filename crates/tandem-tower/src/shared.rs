//! [`Shared`]: what the services of one layer share, and the cookie policy that
//! decides when a session's cookie is (re)issued.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use regex::Regex;
use tandem_core::Codec;
use tandem_manager::{Mode, SessionManager, keepalive_slack};

use crate::cookie::{CookieSettings, MaxAge};
use crate::error::Responder;
use crate::issued::IssuedCookies;
use crate::signing::{CookieSigner, SIGNATURE_LEN};

/// Everything the services of one layer share.
pub(crate) struct Shared<C> {
    pub(crate) manager: SessionManager<C>,
    pub(crate) cookie: CookieSettings,
    pub(crate) ignore: Option<Regex>,
    pub(crate) signer: Option<CookieSigner>,
    pub(crate) responder: Responder,
    /// When this process last issued each cookie, for non-sticky renewals.
    issued: IssuedCookies,
}

impl<C: Codec> Shared<C> {
    /// The layer's settings, with no cookie issued yet.
    pub(crate) fn new(
        manager: SessionManager<C>,
        cookie: CookieSettings,
        ignore: Option<Regex>,
        signer: Option<CookieSigner>,
        responder: Responder,
    ) -> Shared<C> {
        Shared {
            issued: IssuedCookies::new(std::sync::Arc::clone(manager.clock())),
            manager,
            cookie,
            ignore,
            signer,
            responder,
        }
    }

    /// The `Set-Cookie` header that issues (or reissues) the cookie of session `id`.
    pub(crate) fn issue(&self, id: &str, max_inactive: Option<Duration>) -> http::HeaderValue {
        if self.manager.mode() == Mode::NonSticky && self.cookie.max_age == MaxAge::FollowSession {
            self.issued.issued(id);
        }
        match &self.signer {
            Some(signer) => {
                self.cookie
                    .set_with(id.len() + 1 + SIGNATURE_LEN, max_inactive, |header| {
                        signer.sign_into(&self.cookie.name, id, header);
                    })
            }
            None => self.cookie.set(id, max_inactive),
        }
    }

    /// Whether the cookie of a session in use may be older than its renewal window
    /// (see [`MaxAge::FollowSession`]).
    ///
    /// Sticky mode knows each session's previous access exactly, and renews the cookie
    /// on the first request of each window-long period of time: a cookie is then never
    /// older than one window at the session's last access, at no cost per request.
    /// Non-sticky mode stores access times only with changes, so there the layer
    /// remembers when it issued each cookie.
    pub(crate) fn renewal_due(
        &self,
        id: &str,
        previous_access: SystemTime,
        created: SystemTime,
        max_inactive: Option<Duration>,
    ) -> bool {
        if self.cookie.max_age != MaxAge::FollowSession {
            return false;
        }
        let window = keepalive_slack(max_inactive.unwrap_or(Duration::MAX));
        if self.manager.mode() == Mode::Sticky {
            let period = |time: SystemTime| {
                time.duration_since(UNIX_EPOCH)
                    .map_or(0, |since| since.as_secs() / window.as_secs().max(1))
            };
            return period(self.manager.clock().wall()) != period(previous_access);
        }
        match self.issued.age(id) {
            Some(age) => age >= window,
            // Issued by another server, or forgotten: it is no older than the session.
            None => self
                .manager
                .clock()
                .wall()
                .duration_since(created)
                .is_ok_and(|age| age >= window),
        }
    }
}
