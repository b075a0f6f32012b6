//! The session cookie: its attributes, reading it from `Cookie` headers, and writing
//! `Set-Cookie` headers.
//!
//! Written by hand rather than with a cookie crate: the integrations accept exactly one
//! narrow value format (a session id, optionally followed by a signature), so a strict
//! byte check replaces general cookie parsing, and a `Set-Cookie` header is written into
//! one buffer of its exact length.

use std::time::Duration;

use http::header::{COOKIE, HeaderMap, HeaderValue};
use tandem_core::MAX_SESSION_ID_LEN;

use crate::signing::SIGNATURE_LEN;

/// The session cookie's name unless [`SettingsBuilder::cookie_name`](crate::SettingsBuilder::cookie_name)
/// changes it.
///
/// ```
/// assert_eq!(tandem_http::DEFAULT_COOKIE_NAME, "tandem_session");
/// ```
pub const DEFAULT_COOKIE_NAME: &str = "tandem_session";

/// The longest cookie value the integrations look at: a session id of the maximum length,
/// a dot and a signature. Anything longer is no session, without further work.
///
/// ```
/// assert!(tandem_http::MAX_COOKIE_VALUE_LEN < 256);
/// ```
pub const MAX_COOKIE_VALUE_LEN: usize = MAX_SESSION_ID_LEN + 1 + SIGNATURE_LEN;

/// The cookie lifetime browsers accept at most (400 days, RFC 6265bis), used for
/// sessions that never expire.
const BROWSER_MAX_AGE: Duration = Duration::from_secs(400 * 24 * 60 * 60);

/// The cookie's `SameSite` attribute.
///
/// ```
/// use tandem_http::SameSite;
///
/// assert_eq!(SameSite::default(), SameSite::Lax);
/// assert_eq!(SameSite::Strict.as_str(), "Strict");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SameSite {
    /// Sent only with requests that start on the site itself.
    Strict,
    /// Also sent with top-level navigations from other sites (following a link), not
    /// with cross-site subrequests or form posts. The default.
    #[default]
    Lax,
    /// Sent with cross-site requests too. Browsers require `Secure` with it, so the
    /// layer refuses `SameSite::None` without [`secure`](crate::SettingsBuilder::secure).
    None,
}

impl SameSite {
    /// The attribute's value as written in `Set-Cookie`.
    pub fn as_str(self) -> &'static str {
        match self {
            SameSite::Strict => "Strict",
            SameSite::Lax => "Lax",
            SameSite::None => "None",
        }
    }
}

/// How long the browser keeps the session cookie (its `Max-Age` attribute).
///
/// Sessions expire after a max inactive interval that restarts with every request
/// (sliding expiry), while a `Max-Age` counts from the moment the cookie was set. With
/// [`MaxAge::FollowSession`] the integration keeps the two in step:
///
/// - a cookie is issued (new session, id change, takeover, relocation) with `Max-Age`
///   equal to the session's max inactive interval (400 days, the most browsers accept,
///   for a session that never expires);
/// - because expiry slides, the cookie is **renewed** (the same value, a fresh
///   `Max-Age`) on a response whose request used the session once the cookie may be
///   older than a renewal window, an eighth of the interval between 1 second and 5
///   minutes (the same slack the remote copy gets,
///   [`keepalive_slack`](tandem_manager::keepalive_slack)); changing the interval with
///   `set_max_inactive` renews it at once.
///
/// So the cookie never outlives its session, and an active session never loses its
/// cookie; a client idle for almost the whole interval may lose the cookie up to one
/// renewal window before the server would have expired the session. In sticky mode
/// the integration renews on the first request of each window-long period (it knows the
/// session's previous access exactly), which costs nothing per request; in non-sticky
/// mode it learns the cookie's age from its own record of the cookies it issued (kept
/// in process for a few minutes) and, for a cookie another server issued, from the
/// session's creation time. Either way renewals stay rare: about one per renewal
/// window.
///
/// [`MaxAge::BrowserSession`] never renews: the cookie is sent only when the id is new
/// or changes, and lives until the browser closes; the server's idle expiry alone ends
/// the session.
///
/// ```
/// use std::time::Duration;
/// use tandem_http::MaxAge;
///
/// assert_eq!(MaxAge::default(), MaxAge::FollowSession);
/// let fixed = MaxAge::Fixed(Duration::from_secs(3600));
/// # let _ = fixed;
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MaxAge {
    /// `Max-Age` is the session's max inactive interval, renewed while the session is
    /// used (see above). The default.
    #[default]
    FollowSession,
    /// No `Max-Age`: a browser-session cookie, never renewed.
    BrowserSession,
    /// This `Max-Age` whenever the cookie is set (rounded up to whole seconds), never
    /// renewed.
    Fixed(Duration),
}

/// Why a cookie setting was refused by [`SettingsBuilder::build`](crate::SettingsBuilder::build).
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// use std::sync::Arc;
/// use tandem_core::{MemoryStore, NodeId};
/// use tandem_manager::SessionManager;
/// use tandem_codec::SpeedyCodec;
/// use tandem_http::{CookieConfigError, SessionSettings};
///
/// let store = Arc::new(MemoryStore::new([NodeId::new("n1").unwrap()]));
/// let manager = SessionManager::<SpeedyCodec>::builder(store).build().unwrap();
/// let refused = SessionSettings::builder(manager).cookie_name("my session").build();
/// assert!(matches!(refused, Err(CookieConfigError::Name(_))));
/// # });
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CookieConfigError {
    /// The name is empty, too long, or has a character a cookie name cannot have.
    #[error("invalid cookie name {0:?}: use 1 to 128 letters, digits or !#$%&'*+-.^_`|~")]
    Name(String),
    /// The path does not start with `/`, or has a control character or `;`.
    #[error(
        "invalid cookie path {0:?}: it must start with '/' and have no ';' or control characters"
    )]
    Path(String),
    /// The domain is empty, too long, or not letters, digits, `-` and `.`.
    #[error("invalid cookie domain {0:?}")]
    Domain(String),
    /// `SameSite=None` without `Secure`, which browsers reject.
    #[error("SameSite=None requires the Secure attribute")]
    SameSiteNoneNeedsSecure,
    /// A name with a `__Host-` or `__Secure-` prefix whose settings break what the
    /// prefix promises (browsers would refuse the cookie): both need `Secure`, and
    /// `__Host-` also `Path=/` and no `Domain`.
    #[error("a cookie named {prefix}... needs {needs}")]
    Prefix {
        /// The prefix.
        prefix: &'static str,
        /// What it needs that the settings lack.
        needs: &'static str,
    },
}

/// The cookie's settings, checked once when the settings are built.
#[derive(Debug, Clone)]
pub(crate) struct CookieSettings {
    pub(crate) name: String,
    pub(crate) path: String,
    pub(crate) domain: Option<String>,
    pub(crate) http_only: bool,
    pub(crate) secure: bool,
    pub(crate) same_site: SameSite,
    pub(crate) max_age: MaxAge,
}

impl Default for CookieSettings {
    fn default() -> Self {
        CookieSettings {
            name: DEFAULT_COOKIE_NAME.to_owned(),
            path: "/".to_owned(),
            domain: None,
            http_only: true,
            secure: true,
            same_site: SameSite::Lax,
            max_age: MaxAge::FollowSession,
        }
    }
}

impl CookieSettings {
    pub(crate) fn validate(&self) -> Result<(), CookieConfigError> {
        let name_ok =
            !self.name.is_empty() && self.name.len() <= 128 && self.name.bytes().all(is_token_byte);
        if !name_ok {
            return Err(CookieConfigError::Name(self.name.clone()));
        }
        let path_ok = self.path.starts_with('/')
            && self.path.len() <= 1024
            && self
                .path
                .bytes()
                .all(|byte| (0x20..0x7f).contains(&byte) && byte != b';');
        if !path_ok {
            return Err(CookieConfigError::Path(self.path.clone()));
        }
        if let Some(domain) = &self.domain {
            let domain_ok = !domain.is_empty()
                && domain.len() <= 253
                && domain
                    .bytes()
                    .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'.');
            if !domain_ok {
                return Err(CookieConfigError::Domain(domain.clone()));
            }
        }
        if self.same_site == SameSite::None && !self.secure {
            return Err(CookieConfigError::SameSiteNoneNeedsSecure);
        }
        // Browsers enforce these prefixes; a cookie breaking them would never be
        // stored, and every request would start a new session.
        if self.name.starts_with("__Host-") {
            let needs = if !self.secure {
                Some("the Secure attribute")
            } else if self.path != "/" {
                Some("Path=/")
            } else if self.domain.is_some() {
                Some("no Domain")
            } else {
                None
            };
            if let Some(needs) = needs {
                return Err(CookieConfigError::Prefix {
                    prefix: "__Host-",
                    needs,
                });
            }
        } else if self.name.starts_with("__Secure-") && !self.secure {
            return Err(CookieConfigError::Prefix {
                prefix: "__Secure-",
                needs: "the Secure attribute",
            });
        }
        Ok(())
    }

    /// The `Max-Age` of a cookie set now for a session with this interval, if any.
    pub(crate) fn max_age_for(&self, max_inactive: Option<Duration>) -> Option<u64> {
        let lifetime = match self.max_age {
            MaxAge::FollowSession => max_inactive.unwrap_or(BROWSER_MAX_AGE),
            MaxAge::BrowserSession => return None,
            MaxAge::Fixed(lifetime) => lifetime,
        };
        // Rounded up: a sub-second lifetime must not become "delete now".
        let seconds = lifetime.as_secs() + u64::from(lifetime.subsec_nanos() > 0);
        Some(seconds.clamp(1, BROWSER_MAX_AGE.as_secs()))
    }

    /// `Set-Cookie` for `value`.
    pub(crate) fn set(&self, value: &str, max_inactive: Option<Duration>) -> String {
        self.set_with(value.len(), max_inactive, |header| header.push_str(value))
    }

    /// `Set-Cookie` for the value of `value_len` bytes that `write_value` appends to
    /// the header being written: the header is rendered in one buffer of its exact
    /// length, which becomes the header value without a copy (both `http` 1's and
    /// actix-web's `HeaderValue` take a `String`'s buffer as theirs).
    pub(crate) fn set_with(
        &self,
        value_len: usize,
        max_inactive: Option<Duration>,
        write_value: impl FnOnce(&mut String),
    ) -> String {
        let max_age = self.max_age_for(max_inactive);
        let len = self.name.len() + 1 + value_len + self.attributes_len(max_age);
        let mut header = String::with_capacity(len);
        header.push_str(&self.name);
        header.push('=');
        write_value(&mut header);
        self.attributes(&mut header, max_age);
        debug_assert_eq!(header.len(), len, "the header's length was computed wrong");
        header
    }

    /// `Set-Cookie` that makes the browser delete the cookie.
    pub(crate) fn clear(&self) -> String {
        let max_age = Some(0);
        let len = self.name.len() + 1 + self.attributes_len(max_age) + EXPIRED.len();
        let mut header = String::with_capacity(len);
        header.push_str(&self.name);
        header.push('=');
        self.attributes(&mut header, max_age);
        header.push_str(EXPIRED);
        header
    }

    fn attributes(&self, header: &mut String, max_age: Option<u64>) {
        header.push_str("; Path=");
        header.push_str(&self.path);
        if let Some(domain) = &self.domain {
            header.push_str("; Domain=");
            header.push_str(domain);
        }
        if let Some(seconds) = max_age {
            header.push_str("; Max-Age=");
            push_decimal(header, seconds);
        }
        if self.secure {
            header.push_str("; Secure");
        }
        if self.http_only {
            header.push_str("; HttpOnly");
        }
        header.push_str("; SameSite=");
        header.push_str(self.same_site.as_str());
    }

    /// The length of what [`attributes`](Self::attributes) writes.
    fn attributes_len(&self, max_age: Option<u64>) -> usize {
        "; Path=".len()
            + self.path.len()
            + self
                .domain
                .as_ref()
                .map_or(0, |domain| "; Domain=".len() + domain.len())
            + max_age.map_or(0, |seconds| "; Max-Age=".len() + decimal_len(seconds))
            + if self.secure { "; Secure".len() } else { 0 }
            + if self.http_only {
                "; HttpOnly".len()
            } else {
                0
            }
            + "; SameSite=".len()
            + self.same_site.as_str().len()
    }
}

/// What a clearing `Set-Cookie` ends with, for browsers that ignore `Max-Age=0`.
const EXPIRED: &str = "; Expires=Thu, 01 Jan 1970 00:00:00 GMT";

/// Appends `number` in decimal, without the formatting machinery.
fn push_decimal(out: &mut String, mut number: u64) {
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    loop {
        start -= 1;
        digits[start] = b'0' + (number % 10) as u8;
        number /= 10;
        if number == 0 {
            break;
        }
    }
    for &digit in &digits[start..] {
        out.push(char::from(digit));
    }
}

/// The number of decimal digits of `number`.
fn decimal_len(number: u64) -> usize {
    number.checked_ilog10().map_or(1, |log| log as usize + 1)
}

/// RFC 6265 token characters (cookie names).
fn is_token_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte)
}

/// Whether `value` has the shape of a session cookie value (a session id, maybe
/// followed by a signature): short, and only letters, digits, `-`, `_` and `.`.
pub(crate) fn plausible_value(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= MAX_COOKIE_VALUE_LEN
        && value.bytes().all(|byte| VALUE_BYTES[usize::from(byte)])
}

/// The bytes [`plausible_value`] accepts, as a table: checked for every request that
/// uses its session, one lookup per byte.
const VALUE_BYTES: [bool; 256] = {
    let mut table = [false; 256];
    let mut byte = 0;
    while byte < table.len() {
        let b = byte as u8;
        table[byte] = b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.';
        byte += 1;
    }
    table
};

/// The values of every cookie named `name` in `Cookie` headers, in order (a client may
/// send several, for example one per path). Values that are not UTF-8 are skipped.
///
/// One pass over the header's bytes: every request that uses its session reads it,
/// so the other cookies are only split off, never validated or decoded.
pub(crate) fn values<'a>(
    headers: impl IntoIterator<Item = &'a HeaderValue>,
    name: &'a str,
) -> impl Iterator<Item = &'a str> {
    headers
        .into_iter()
        .flat_map(|header| header.as_bytes().split(|byte| *byte == b';'))
        .filter_map(move |pair| {
            // `name`, optional blanks, `=`, the value: a longer name sharing the
            // prefix (`sidx` for `sid`) has no `=` there.
            let rest = pair.trim_ascii_start().strip_prefix(name.as_bytes())?;
            let value = rest.trim_ascii_start().strip_prefix(b"=")?.trim_ascii();
            // RFC 6265 allows a value in double quotes.
            let value = value
                .strip_prefix(b"\"")
                .and_then(|inner| inner.strip_suffix(b"\""))
                .unwrap_or(value);
            std::str::from_utf8(value).ok()
        })
}

/// A request's `Cookie` headers, kept until the session is used: an integration
/// hands them to [`SessionRequest::new`](crate::SessionRequest::new). Nearly every
/// request has at most one, which is held without allocating a list.
///
/// ```
/// use http::header::{COOKIE, HeaderMap, HeaderValue};
/// use tandem_http::CookieHeaders;
///
/// let mut headers = HeaderMap::new();
/// headers.append(COOKIE, HeaderValue::from_static("a=1; tandem_session=abc"));
/// let shared = CookieHeaders::of(&headers); // shares the header's bytes
/// let copied = CookieHeaders::copied([b"a=1; tandem_session=abc".as_slice()]);
/// assert_eq!(shared.len(), copied.len());
/// ```
#[derive(Debug, Default)]
pub struct CookieHeaders {
    first: Option<HeaderValue>,
    rest: Vec<HeaderValue>,
}

impl CookieHeaders {
    /// The `Cookie` headers of an `http` 1 header map, shared rather than copied.
    pub fn of(headers: &HeaderMap) -> CookieHeaders {
        let mut all = headers.get_all(COOKIE).iter();
        CookieHeaders {
            first: all.next().cloned(),
            rest: all.cloned().collect(),
        }
    }

    /// `Cookie` header values given as bytes (for servers on other `http` types, such
    /// as actix-web's), copied. A value a header cannot hold is skipped.
    pub fn copied<'a>(values: impl IntoIterator<Item = &'a [u8]>) -> CookieHeaders {
        let mut all = values
            .into_iter()
            .filter_map(|value| HeaderValue::from_bytes(value).ok());
        CookieHeaders {
            first: all.next(),
            rest: all.collect(),
        }
    }

    /// How many `Cookie` headers there are.
    pub fn len(&self) -> usize {
        usize::from(self.first.is_some()) + self.rest.len()
    }

    /// Whether the request sent no `Cookie` header.
    pub fn is_empty(&self) -> bool {
        self.first.is_none()
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &HeaderValue> {
        self.first.iter().chain(&self.rest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> CookieSettings {
        CookieSettings {
            name: "sid".into(),
            ..CookieSettings::default()
        }
    }

    #[test]
    fn set_cookie_has_every_attribute() {
        let mut cookie = settings();
        cookie.domain = Some("example.com".into());
        let header = cookie.set("abc-n1", Some(Duration::from_secs(1800)));
        assert_eq!(
            header.as_str(),
            "sid=abc-n1; Path=/; Domain=example.com; Max-Age=1800; Secure; HttpOnly; SameSite=Lax"
        );
    }

    #[test]
    fn decimals_are_written_whole() {
        for number in [0, 7, 9, 10, 99, 100, 1800, 34_560_000, u64::MAX] {
            let mut out = String::from("x");
            push_decimal(&mut out, number);
            assert_eq!(out, format!("x{number}"));
            assert_eq!(decimal_len(number), number.to_string().len(), "{number}");
        }
    }

    #[test]
    fn headers_fill_exactly_the_computed_length() {
        // `set_with` asserts the length in debug builds; every attribute varies here.
        for domain in [None, Some("example.com".to_owned())] {
            for (secure, http_only) in [(false, false), (true, true), (true, false)] {
                for max_age in [MaxAge::FollowSession, MaxAge::BrowserSession] {
                    let cookie = CookieSettings {
                        domain: domain.clone(),
                        secure,
                        http_only,
                        max_age,
                        same_site: SameSite::Strict,
                        ..settings()
                    };
                    let header = cookie.set("abc-n1", Some(Duration::from_secs(10)));
                    let text = header.as_str();
                    assert!(text.starts_with("sid=abc-n1; Path=/"), "{text}");
                    assert!(text.ends_with("; SameSite=Strict"), "{text}");
                    assert_eq!(text.contains("; Secure"), secure);
                    assert_eq!(
                        text.contains("; Max-Age=10;"),
                        max_age == MaxAge::FollowSession
                    );
                    assert!(cookie.clear().ends_with(EXPIRED));
                }
            }
        }
    }

    #[test]
    fn clearing_expires_the_cookie() {
        let mut cookie = settings();
        cookie.secure = false;
        let header = cookie.clear();
        assert_eq!(
            header.as_str(),
            "sid=; Path=/; Max-Age=0; HttpOnly; SameSite=Lax; Expires=Thu, 01 Jan 1970 00:00:00 GMT"
        );
    }

    #[test]
    fn max_age_follows_the_policy() {
        let mut cookie = settings();
        assert_eq!(cookie.max_age_for(Some(Duration::from_secs(60))), Some(60));
        assert_eq!(
            cookie.max_age_for(Some(Duration::from_millis(1500))),
            Some(2)
        );
        assert_eq!(cookie.max_age_for(None), Some(BROWSER_MAX_AGE.as_secs()));
        cookie.max_age = MaxAge::BrowserSession;
        assert_eq!(cookie.max_age_for(Some(Duration::from_secs(60))), None);
        cookie.max_age = MaxAge::Fixed(Duration::from_secs(7));
        assert_eq!(cookie.max_age_for(None), Some(7));
        let header = cookie.set("v", None);
        assert!(header.as_str().contains("; Max-Age=7;"));
    }

    #[test]
    fn host_and_secure_prefixes_are_enforced() {
        let host = |change: fn(&mut CookieSettings)| {
            let mut cookie = CookieSettings {
                name: "__Host-sid".into(),
                ..CookieSettings::default()
            };
            change(&mut cookie);
            cookie.validate()
        };
        assert_eq!(host(|_| {}), Ok(()));
        let needs = |needs| {
            Err(CookieConfigError::Prefix {
                prefix: "__Host-",
                needs,
            })
        };
        assert_eq!(
            host(|cookie| cookie.secure = false),
            needs("the Secure attribute")
        );
        assert_eq!(host(|cookie| cookie.path = "/app".into()), needs("Path=/"));
        assert_eq!(
            host(|cookie| cookie.domain = Some("example.com".into())),
            needs("no Domain")
        );
        let mut cookie = CookieSettings {
            name: "__Secure-sid".into(),
            path: "/app".into(),
            ..CookieSettings::default()
        };
        assert_eq!(cookie.validate(), Ok(()));
        cookie.secure = false;
        assert_eq!(
            cookie.validate(),
            Err(CookieConfigError::Prefix {
                prefix: "__Secure-",
                needs: "the Secure attribute"
            })
        );
    }

    #[test]
    fn settings_are_validated() {
        let mut cookie = settings();
        assert_eq!(cookie.validate(), Ok(()));
        for bad in ["", "a b", "a;b", "a=b", "é"] {
            cookie.name = bad.into();
            assert!(
                matches!(cookie.validate(), Err(CookieConfigError::Name(_))),
                "{bad:?}"
            );
        }
        cookie = settings();
        for bad in ["", "app", "/a;b", "/a\nb"] {
            cookie.path = bad.into();
            assert!(
                matches!(cookie.validate(), Err(CookieConfigError::Path(_))),
                "{bad:?}"
            );
        }
        cookie = settings();
        cookie.domain = Some("exa mple.com".into());
        assert!(matches!(
            cookie.validate(),
            Err(CookieConfigError::Domain(_))
        ));
        cookie = settings();
        cookie.same_site = SameSite::None;
        cookie.secure = false;
        assert_eq!(
            cookie.validate(),
            Err(CookieConfigError::SameSiteNoneNeedsSecure)
        );
    }

    #[test]
    fn values_are_found_in_every_header() {
        let headers = [
            HeaderValue::from_static("a=1; sid=first ; b=2"),
            HeaderValue::from_static("sid=\"second\"; sidx=no; xsid=no"),
            HeaderValue::from_bytes(b"sid=\xff; c=\xfe").unwrap(),
            HeaderValue::from_bytes(b"d=\xfe;sid = third").unwrap(),
            HeaderValue::from_static("sid=a=b"),
        ];
        let found: Vec<&str> = values(&headers, "sid").collect();
        assert_eq!(found, ["first", "second", "third", "a=b"]);
    }

    #[test]
    fn cookie_headers_keep_every_header_in_order() {
        let mut headers = HeaderMap::new();
        assert_eq!(CookieHeaders::of(&headers).iter().count(), 0);
        for value in ["a=1", "sid=x", "b=2"] {
            headers.append(COOKIE, HeaderValue::from_static(value));
        }
        let kept = CookieHeaders::of(&headers);
        let kept: Vec<&str> = kept.iter().map(|value| value.to_str().unwrap()).collect();
        assert_eq!(kept, ["a=1", "sid=x", "b=2"]);
    }

    #[test]
    fn copied_cookie_headers_skip_what_a_header_cannot_hold() {
        let copied = CookieHeaders::copied([b"sid=x".as_slice(), b"bad\nvalue", b"b=2"]);
        let kept: Vec<&str> = copied.iter().map(|value| value.to_str().unwrap()).collect();
        assert_eq!(kept, ["sid=x", "b=2"]);
        assert_eq!(copied.len(), 2);
        assert!(CookieHeaders::copied([]).is_empty());
    }

    #[test]
    fn implausible_values_are_refused() {
        assert!(plausible_value("Ab3-n1.a1"));
        assert!(!plausible_value(""));
        assert!(!plausible_value("a b"));
        assert!(!plausible_value("a\"b"));
        assert!(!plausible_value("../etc/passwd"));
        assert!(!plausible_value(&"a".repeat(MAX_COOKIE_VALUE_LEN + 1)));
        for byte in 0..=127u8 {
            let expected = byte.is_ascii_alphanumeric() || b"-_.".contains(&byte);
            let text = char::from(byte).to_string();
            assert_eq!(plausible_value(&text), expected, "byte {byte}");
        }
    }

    #[test]
    fn signed_values_are_plausible() {
        let signer = crate::signing::CookieSigner::new(&[7; 32]).unwrap();
        let id = "Ab3xYz0123456789abcdef-n1.a1";
        assert!(plausible_value(&signer.sign("sid", id)));
        // The longest id, signed, is exactly as long as the integrations accept.
        let longest = "a".repeat(MAX_SESSION_ID_LEN);
        let value = signer.sign("sid", &longest);
        assert_eq!(value.len(), MAX_COOKIE_VALUE_LEN);
        assert!(plausible_value(&value));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(
            tandem_testkit::proptest_cases(2_000)
        ))]

        /// Any header bytes: parsing never panics, and what it finds for the session
        /// cookie is either refused or has the shape of an id (so it reaches the id
        /// parser, never a store).
        #[test]
        fn arbitrary_cookie_headers_parse_without_panicking(
            raw in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..400),
            text in "[ -~]{0,300}",
        ) {
            let headers: Vec<HeaderValue> = [HeaderValue::from_bytes(&raw).ok(), HeaderValue::from_str(&text).ok()]
                .into_iter()
                .flatten()
                .collect();
            for value in values(&headers, "sid") {
                if plausible_value(value) {
                    proptest::prop_assert!(value.len() <= MAX_COOKIE_VALUE_LEN);
                    proptest::prop_assert!(value.bytes().all(|byte| byte.is_ascii_alphanumeric() || b"-_.".contains(&byte)));
                }
            }
        }
    }
}
