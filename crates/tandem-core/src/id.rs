//! Session ids, node ids and routes.
//!
//! A session id has the shape `<random>-<nodeId>[.<route>]`:
//!
//! - `<random>`: [`RANDOM_LEN`] characters of base62 (`[0-9A-Za-z]`) drawn from a
//!   CSPRNG, about 131 bits of entropy. The alphabet has no `-` and no `.`, so the id
//!   splits unambiguously.
//! - `<nodeId>`: the remote node that holds the session's copy ([`NodeId`]).
//! - `<route>`: optional name of the app server that owns the session in sticky mode
//!   ([`Route`]). It is not part of the storage key, so a takeover only changes the
//!   cookie.
//!
//! Parsing is strict and happens before anything touches the network: a string that
//! is not exactly of this shape is rejected with an [`IdError`].

use std::borrow::Borrow;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use rand::RngExt;
use rand::distr::Alphanumeric;

/// Number of base62 characters in the random part of a session id (about 131 bits).
pub const RANDOM_LEN: usize = 22;
/// Longest accepted node id, in bytes.
pub const MAX_NODE_ID_LEN: usize = 32;
/// Longest accepted route, in bytes.
pub const MAX_ROUTE_LEN: usize = 64;
/// Longest accepted session id, in bytes.
pub const MAX_SESSION_ID_LEN: usize = RANDOM_LEN + 1 + MAX_NODE_ID_LEN + 1 + MAX_ROUTE_LEN;

/// Why a session id, node id or route was rejected.
///
/// The error never echoes the rejected input: ids arrive from untrusted cookies and
/// end up in logs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdError {
    /// The input was empty.
    #[error("empty id")]
    Empty,
    /// The input was longer than the format allows.
    #[error("id is {len} bytes long, the limit is {max}")]
    TooLong {
        /// Length of the rejected input in bytes.
        len: usize,
        /// The limit that applied.
        max: usize,
    },
    /// The random part did not have exactly [`RANDOM_LEN`] base62 characters.
    #[error("the random part of a session id must be {RANDOM_LEN} base62 characters")]
    InvalidRandom,
    /// The `-<nodeId>` part was missing.
    #[error("session id has no node part")]
    MissingNode,
    /// The node id was empty, too long or used characters outside `[A-Za-z0-9_]`.
    #[error("node id must be 1 to {MAX_NODE_ID_LEN} characters of [A-Za-z0-9_]")]
    InvalidNode,
    /// The route was empty, too long or used characters outside `[A-Za-z0-9_-]`.
    #[error("route must be 1 to {MAX_ROUTE_LEN} characters of [A-Za-z0-9_-]")]
    InvalidRoute,
}

fn is_node_char(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || byte == b'_'
}

fn is_route_char(byte: u8) -> bool {
    is_node_char(byte) || byte == b'-'
}

fn validate(
    text: &str,
    max: usize,
    allowed: fn(u8) -> bool,
    error: IdError,
) -> Result<(), IdError> {
    if text.is_empty() || text.len() > max || !text.bytes().all(allowed) {
        return Err(error);
    }
    Ok(())
}

macro_rules! text_newtype_impls {
    ($name:ident) => {
        impl $name {
            /// The validated text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $name {
            type Err = IdError;

            fn from_str(text: &str) -> Result<Self, IdError> {
                Self::new(text)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), &*self.0)
            }
        }

        impl Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

/// Name of one remote node (a memcached server), as written in a node spec and in
/// session ids: 1 to [`MAX_NODE_ID_LEN`] characters of `[A-Za-z0-9_]`.
///
/// ```
/// use tandem_core::NodeId;
///
/// let node = NodeId::new("n1").unwrap();
/// assert_eq!(node.as_str(), "n1");
/// assert!(NodeId::new("n-1").is_err());
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(Box<str>);

impl NodeId {
    /// Validates `text` as a node id.
    pub fn new(text: &str) -> Result<NodeId, IdError> {
        validate(text, MAX_NODE_ID_LEN, is_node_char, IdError::InvalidNode)?;
        Ok(NodeId(text.into()))
    }
}

text_newtype_impls!(NodeId);

/// Name of the app server that owns a session in sticky mode (like Tomcat's
/// `jvmRoute`): 1 to [`MAX_ROUTE_LEN`] characters of `[A-Za-z0-9_-]`.
///
/// ```
/// use tandem_core::Route;
///
/// assert!(Route::new("app-1").is_ok());
/// assert!(Route::new("app.1").is_err());
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Route(Box<str>);

impl Route {
    /// Validates `text` as a route.
    pub fn new(text: &str) -> Result<Route, IdError> {
        validate(text, MAX_ROUTE_LEN, is_route_char, IdError::InvalidRoute)?;
        Ok(Route(text.into()))
    }
}

text_newtype_impls!(Route);

/// A validated session id, `<random>-<nodeId>[.<route>]`.
///
/// `Display` prints the whole id (it is what goes into the cookie); `Debug` prints
/// only a prefix of the random part, so that ids formatted into logs cannot be used to
/// hijack a session.
///
/// ```
/// use tandem_core::{NodeId, Route, SessionId};
///
/// let n1 = NodeId::new("n1").unwrap();
/// let id = SessionId::generate(&n1, Some(&Route::new("a1").unwrap()));
/// assert_eq!(id.node(), "n1");
/// assert_eq!(id.route(), Some("a1"));
///
/// // Parsing is strict and round-trips.
/// let parsed: SessionId = id.as_str().parse().unwrap();
/// assert_eq!(parsed, id);
/// assert!("not-a-session-id".parse::<SessionId>().is_err());
///
/// // The node and route parts can be rewritten; the random part stays.
/// let moved = id.with_node(&NodeId::new("n2").unwrap());
/// assert_eq!(moved.random(), id.random());
/// assert_eq!(moved.node(), "n2");
/// assert_eq!(moved.with_route(None).route(), None);
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId {
    /// Shared, not copied, when an id is cloned: a request clones its id several times.
    text: Arc<str>,
    /// Byte offset of the `.` before the route, or the text length when there is none.
    route_dot: u8,
}

/// Offset of the `-` between the random part and the node id.
const NODE_DASH: usize = RANDOM_LEN;

impl SessionId {
    /// Generates a fresh id on `node`, with an optional `route`. The random part comes
    /// from the thread-local CSPRNG (ChaCha, seeded and periodically reseeded from the
    /// operating system).
    pub fn generate(node: &NodeId, route: Option<&Route>) -> SessionId {
        let random: String = rand::rng()
            .sample_iter(Alphanumeric)
            .take(RANDOM_LEN)
            .map(char::from)
            .collect();
        SessionId::assemble(&random, node.as_str(), route.map(Route::as_str))
    }

    /// Parses and validates `text`. Nothing but the exact format is accepted.
    pub fn parse(text: &str) -> Result<SessionId, IdError> {
        if text.is_empty() {
            return Err(IdError::Empty);
        }
        if text.len() > MAX_SESSION_ID_LEN {
            return Err(IdError::TooLong {
                len: text.len(),
                max: MAX_SESSION_ID_LEN,
            });
        }
        let bytes = text.as_bytes();
        let random_ok = bytes.len() > NODE_DASH
            && bytes[..NODE_DASH].iter().all(u8::is_ascii_alphanumeric)
            && bytes[NODE_DASH] == b'-';
        if !random_ok {
            return Err(
                if bytes.len() >= NODE_DASH
                    && bytes[..NODE_DASH].iter().all(u8::is_ascii_alphanumeric)
                {
                    IdError::MissingNode
                } else {
                    IdError::InvalidRandom
                },
            );
        }
        let rest = &text[NODE_DASH + 1..];
        let (node, route) = match rest.split_once('.') {
            Some((node, route)) => (node, Some(route)),
            None => (rest, None),
        };
        validate(node, MAX_NODE_ID_LEN, is_node_char, IdError::InvalidNode)?;
        if let Some(route) = route {
            validate(route, MAX_ROUTE_LEN, is_route_char, IdError::InvalidRoute)?;
        }
        // Valid as a whole: the id is exactly the input (one allocation, no rebuild).
        let route_dot = NODE_DASH + 1 + node.len();
        Ok(SessionId {
            text: Arc::from(text),
            // The format caps the text far below 256 bytes, so the offset fits.
            route_dot: u8::try_from(route_dot).expect("session id prefix fits in u8"),
        })
    }

    /// Builds the text from parts that are already valid.
    fn assemble(random: &str, node: &str, route: Option<&str>) -> SessionId {
        let mut text = String::with_capacity(MAX_SESSION_ID_LEN);
        text.push_str(random);
        text.push('-');
        text.push_str(node);
        let route_dot = text.len();
        if let Some(route) = route {
            text.push('.');
            text.push_str(route);
        }
        SessionId {
            text: Arc::from(text),
            // The format caps the text far below 256 bytes, so the offset fits.
            route_dot: u8::try_from(route_dot).expect("session id prefix fits in u8"),
        }
    }

    /// The whole id, as sent in the cookie.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The random part.
    pub fn random(&self) -> &str {
        &self.text[..NODE_DASH]
    }

    /// The node part: the id of the remote node that holds this session.
    pub fn node(&self) -> &str {
        &self.text[NODE_DASH + 1..usize::from(self.route_dot)]
    }

    /// The route part, if any.
    pub fn route(&self) -> Option<&str> {
        self.text.get(usize::from(self.route_dot) + 1..)
    }

    /// The id's whole text (shared) and the length of its storage part, for keys
    /// that must not copy it.
    #[doc(hidden)]
    pub fn shared_text(&self) -> (&Arc<str>, u8) {
        (&self.text, self.route_dot)
    }

    /// Whether both ids share one text (one is a clone of the other): a pointer
    /// comparison, so that the common request can skip comparing the texts.
    pub fn shares_text_with(&self, other: &SessionId) -> bool {
        Arc::ptr_eq(&self.text, &other.text)
    }

    /// The id as logs may show it: four characters of the random part and the node
    /// (about 24 of its 131 random bits), enough to tell sessions apart in a log and
    /// useless to hijack one.
    ///
    /// ```
    /// use tandem_core::SessionId;
    ///
    /// let id: SessionId = "abcdefghijABCDEFGHIJ01-n1.a1".parse().unwrap();
    /// assert_eq!(id.redacted().to_string(), "abcd…-n1");
    /// ```
    pub fn redacted(&self) -> RedactedId<'_> {
        RedactedId(self)
    }

    /// The id without its route: what storage keys are built from, so that a change
    /// of app server does not move the stored session.
    pub fn storage_id(&self) -> &str {
        &self.text[..usize::from(self.route_dot)]
    }

    /// This id moved to `node`: same random part and route.
    pub fn with_node(&self, node: &NodeId) -> SessionId {
        SessionId::assemble(self.random(), node.as_str(), self.route())
    }

    /// This id with its route replaced (or removed with `None`).
    pub fn with_route(&self, route: Option<&Route>) -> SessionId {
        SessionId::assemble(self.random(), self.node(), route.map(Route::as_str))
    }
}

impl FromStr for SessionId {
    type Err = IdError;

    fn from_str(text: &str) -> Result<SessionId, IdError> {
        SessionId::parse(text)
    }
}

/// A session id as logs may show it: the first four characters of its random part
/// and its node, never the whole id (which is a credential: whoever presents it is
/// the session's owner). Returned by [`SessionId::redacted`].
#[derive(Clone, Copy)]
pub struct RedactedId<'a>(&'a SessionId);

impl fmt::Display for RedactedId<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}…-{}", &self.0.random()[..4], self.0.node())
    }
}

impl fmt::Debug for RedactedId<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SessionId({}…-{}", &self.random()[..4], self.node())?;
        if let Some(route) = self.route() {
            write!(f, ".{route}")?;
        }
        f.write_str(")")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn n(text: &str) -> NodeId {
        NodeId::new(text).unwrap()
    }

    #[test]
    fn generated_ids_have_the_documented_shape() {
        let id = SessionId::generate(&n("n1"), None);
        assert_eq!(id.random().len(), RANDOM_LEN);
        assert!(id.random().bytes().all(|b| b.is_ascii_alphanumeric()));
        assert_eq!(id.node(), "n1");
        assert_eq!(id.route(), None);
        assert_eq!(id.storage_id(), id.as_str());
        assert_eq!(SessionId::parse(id.as_str()).unwrap(), id);
    }

    #[test]
    fn generated_ids_differ() {
        let ids: std::collections::HashSet<String> = (0..10_000)
            .map(|_| SessionId::generate(&n("n1"), None).random().to_owned())
            .collect();
        assert_eq!(ids.len(), 10_000);
    }

    #[test]
    fn route_is_not_part_of_the_storage_id() {
        let id = SessionId::parse("abcdefghijABCDEFGHIJ01-n2.app-1").unwrap();
        assert_eq!(id.random(), "abcdefghijABCDEFGHIJ01");
        assert_eq!(id.node(), "n2");
        assert_eq!(id.route(), Some("app-1"));
        assert_eq!(id.storage_id(), "abcdefghijABCDEFGHIJ01-n2");
    }

    #[test]
    fn rewriting_keeps_the_other_parts() {
        let id = SessionId::parse("abcdefghijABCDEFGHIJ01-n2.a1").unwrap();
        let moved = id.with_node(&n("n3"));
        assert_eq!(moved.as_str(), "abcdefghijABCDEFGHIJ01-n3.a1");
        let taken = moved.with_route(Some(&Route::new("a2").unwrap()));
        assert_eq!(taken.as_str(), "abcdefghijABCDEFGHIJ01-n3.a2");
        assert_eq!(taken.with_route(None).as_str(), "abcdefghijABCDEFGHIJ01-n3");
    }

    #[test]
    fn malformed_ids_are_rejected() {
        let long_route = format!(
            "abcdefghijABCDEFGHIJ01-n1.{}",
            "r".repeat(MAX_ROUTE_LEN + 1)
        );
        let cases: &[(&str, IdError)] = &[
            ("", IdError::Empty),
            ("abc", IdError::InvalidRandom),
            ("abcdefghijABCDEFGHIJ01", IdError::MissingNode),
            ("abcdefghijABCDEFGHIJ01n1", IdError::MissingNode),
            ("abcdefghijABCDEFGHIJ0-n1", IdError::InvalidRandom),
            ("abcdefghijABCDEFGHIJ0_-n1", IdError::InvalidRandom),
            ("abcdefghijABCDEFGHIJ01-", IdError::InvalidNode),
            ("abcdefghijABCDEFGHIJ01-n 1", IdError::InvalidNode),
            ("abcdefghijABCDEFGHIJ01-n1\n", IdError::InvalidNode),
            ("abcdefghijABCDEFGHIJ01-n1\0", IdError::InvalidNode),
            ("abcdefghijABCDEFGHIJ01-n-1", IdError::InvalidNode),
            ("abcdefghijABCDEFGHIJ01-n1.", IdError::InvalidRoute),
            ("abcdefghijABCDEFGHIJ01-n1.a.b", IdError::InvalidRoute),
            ("abcdefghijABCDEFGHIJ01-n1.a b", IdError::InvalidRoute),
            ("abcdefghijABCDEFGHIJ01-ñ", IdError::InvalidNode),
            (" abcdefghijABCDEFGHIJ01-n1", IdError::InvalidRandom),
        ];
        for (input, expected) in cases {
            assert_eq!(
                SessionId::parse(input).as_ref(),
                Err(expected),
                "input {input:?}"
            );
        }
        assert_eq!(SessionId::parse(&long_route), Err(IdError::InvalidRoute));
        let huge = "a".repeat(10_000);
        assert!(matches!(
            SessionId::parse(&huge),
            Err(IdError::TooLong { len: 10_000, .. })
        ));
    }

    #[test]
    fn longest_valid_id_parses() {
        let text = format!(
            "abcdefghijABCDEFGHIJ01-{}.{}",
            "n".repeat(MAX_NODE_ID_LEN),
            "r".repeat(MAX_ROUTE_LEN)
        );
        assert_eq!(text.len(), MAX_SESSION_ID_LEN);
        let id = SessionId::parse(&text).unwrap();
        assert_eq!(id.route().unwrap().len(), MAX_ROUTE_LEN);
    }

    #[test]
    fn debug_output_does_not_reveal_the_random_part() {
        let id = SessionId::parse("abcdefghijABCDEFGHIJ01-n1.a1").unwrap();
        let debug = format!("{id:?}");
        assert!(!debug.contains("abcdefghijABCDEFGHIJ01"), "{debug}");
        assert!(debug.contains("n1.a1"), "{debug}");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(tandem_testkit::proptest_cases(256)))]
        #[test]
        fn arbitrary_strings_round_trip_or_are_rejected(text in any::<String>()) {
            if let Ok(id) = SessionId::parse(&text) {
                prop_assert_eq!(id.as_str(), text.as_str());
                prop_assert_eq!(SessionId::parse(id.as_str()).unwrap(), id);
            }
        }

        #[test]
        fn id_shaped_strings_round_trip_or_are_rejected(
            text in "[a-zA-Z0-9_. -]{0,30}-[a-zA-Z0-9_.\\- \n]{0,80}"
        ) {
            if let Ok(id) = SessionId::parse(&text) {
                prop_assert_eq!(id.as_str(), text.as_str());
                let rebuilt = match id.route() {
                    Some(route) => format!("{}-{}.{}", id.random(), id.node(), route),
                    None => format!("{}-{}", id.random(), id.node()),
                };
                prop_assert_eq!(rebuilt, text);
            }
        }

        #[test]
        fn valid_parts_always_parse(
            random in "[a-zA-Z0-9]{22}",
            node in "[a-zA-Z0-9_]{1,32}",
            route in proptest::option::of("[a-zA-Z0-9_-]{1,64}"),
        ) {
            let text = match &route {
                Some(route) => format!("{random}-{node}.{route}"),
                None => format!("{random}-{node}"),
            };
            let id = SessionId::parse(&text).unwrap();
            prop_assert_eq!(id.random(), random.as_str());
            prop_assert_eq!(id.node(), node.as_str());
            prop_assert_eq!(id.route(), route.as_deref());
        }
    }
}
