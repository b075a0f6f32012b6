//! Redis errors in the store's terms: node failures, refusals of one operation, and
//! the startup errors that stop [`RedisStore::connect`](crate::RedisStore::connect).

use std::time::Duration;

use redis::{ErrorKind, RedisError};
use tandem_core::{NodeId, StoreError};

/// Why [`RedisStore::connect`](crate::RedisStore::connect) failed: a setting that
/// can never work, so the store refuses to start rather than retry it forever. Each
/// message is one line that names the node (with its URL, password as `***`).
/// A server that is merely down or slow is not an error here: its node starts
/// down and is probed in the background.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The configuration cannot be used.
    #[error("invalid Redis store configuration: {reason}")]
    InvalidConfig {
        /// What is wrong.
        reason: &'static str,
    },
    /// The server refused the credentials of the URL (wrong password, unknown or
    /// disabled ACL user), or needs a password the URL does not give.
    #[error("Redis node {node} ({url}): authentication failed: {message}")]
    Authentication {
        /// The node.
        node: NodeId,
        /// Its URL, password as `***`.
        url: String,
        /// What the server said.
        message: String,
    },
    /// The TLS handshake failed: an untrusted or mismatching server certificate, a
    /// client certificate the server wanted and did not get or did not accept, or
    /// a server that does not speak TLS.
    #[error("Redis node {node} ({url}): TLS handshake failed: {message}")]
    Tls {
        /// The node.
        node: NodeId,
        /// Its URL, password as `***`.
        url: String,
        /// What went wrong.
        message: String,
    },
    /// A certificate or key file could not be read or parsed.
    #[error("cannot use the TLS {what} {path}: {message}")]
    TlsFile {
        /// Which file: "CA file", "client certificate", "client key".
        what: &'static str,
        /// Its path.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// The node uses TLS, and this build has no TLS support.
    #[error(
        "Redis node {node} ({url}) uses TLS, and tandem-redis was built without its `tls` feature"
    )]
    TlsUnsupported {
        /// The node.
        node: NodeId,
        /// Its URL, password as `***`.
        url: String,
    },
    /// The server answered the connection setup with an error that is not about
    /// credentials (a database number it does not have, a server too old for RESP3
    /// or `GETEX`, ...).
    #[error("Redis node {node} ({url}) refused the connection setup: {message}")]
    Rejected {
        /// The node.
        node: NodeId,
        /// Its URL, password as `***`.
        url: String,
        /// What the server said.
        message: String,
    },
}

/// A failed operation, classified.
pub(crate) struct Failure {
    pub(crate) error: StoreError,
    /// Whether the node is unusable, rather than refusing this one operation.
    pub(crate) node_failed: bool,
    /// What to remember as the node's last error.
    pub(crate) detail: String,
}

impl Failure {
    fn new(error: StoreError, node_failed: bool) -> Failure {
        Failure {
            detail: error.to_string(),
            error,
            node_failed,
        }
    }
}

pub(crate) fn timed_out(node: &NodeId, after: Duration) -> Failure {
    Failure::new(
        StoreError::Timeout {
            node: node.clone(),
            after,
        },
        true,
    )
}

/// Server error codes that say the node cannot serve us now: a replica
/// (`READONLY`), a replica cut off from its master (`MASTERDOWN`), a server still
/// loading its data set (`LOADING`), a cluster that is down or reshuffling (and
/// redirections the cluster client still got after its retries, while the
/// cluster's nodes disagree on a slot's owner during a failover), a script that
/// runs too long (`BUSY`), credentials no longer accepted.
const NODE_FAILURE_CODES: &[&str] = &[
    "READONLY",
    "MASTERDOWN",
    "LOADING",
    "CLUSTERDOWN",
    "TRYAGAIN",
    "MOVED",
    "ASK",
    "BUSY",
    "NOAUTH",
    "WRONGPASS",
];

/// Sorts a client error into node failures (the node is not usable: I/O errors,
/// unparseable answers, the codes of [`NODE_FAILURE_CODES`]) and refusals of one
/// operation by a working node (`OOM`, `WRONGTYPE`, `NOPERM`, script errors).
pub(crate) fn classify(node: &NodeId, error: &RedisError, timeout: Duration) -> Failure {
    if error.is_timeout() {
        return timed_out(node, timeout);
    }
    let node_failed = is_node_failure(error);
    let message = describe(error);
    if node_failed {
        Failure::new(
            StoreError::Unreachable {
                node: node.clone(),
                message,
            },
            true,
        )
    } else {
        Failure::new(
            StoreError::Server {
                node: node.clone(),
                message,
            },
            false,
        )
    }
}

/// The error as one line: a server's error as it sent it (`WRONGTYPE Operation
/// against ...`), anything else as the client describes it.
pub(crate) fn describe(error: &RedisError) -> String {
    match (error.code(), error.detail()) {
        (Some(code), Some(detail)) if error.kind() != ErrorKind::Io => format!("{code} {detail}"),
        _ => error.to_string(),
    }
}

/// Whether `error` says the node is unusable; see [`classify`].
pub(crate) fn is_node_failure(error: &RedisError) -> bool {
    match error.kind() {
        ErrorKind::Io
        | ErrorKind::Parse
        | ErrorKind::RESP3NotSupported
        | ErrorKind::AuthenticationFailed => true,
        _ => is_node_failure_code(error),
    }
}

/// Whether the server's error code (or, for an error raised inside a script on
/// Redis 6, the code quoted in its text) says the node is unusable.
fn is_node_failure_code(error: &RedisError) -> bool {
    let code = error.code().unwrap_or("");
    if NODE_FAILURE_CODES.contains(&code) {
        return true;
    }
    // Redis 6 wraps errors of commands inside scripts: `ERR Error running script
    // (call to f_...): @user_script:1: -READONLY You can't write against a read only
    // replica.`
    let detail = error.detail().unwrap_or("");
    code == "ERR"
        && detail.contains("script")
        && NODE_FAILURE_CODES
            .iter()
            .any(|code| detail.contains(&format!("-{code} ")))
}

/// What went wrong when a node was first contacted, at startup.
pub(crate) enum FirstContact {
    /// The node is down or slow: start it down and probe it.
    Down,
    /// Wrong credentials.
    Authentication(String),
    /// The TLS handshake failed.
    Tls(String),
    /// Any other refusal by the server or the client library.
    Rejected(String),
}

/// Marks of a TLS failure in an I/O error's text: rustls's errors, as the TLS
/// stream reports them (redis-rs keeps only their text).
const TLS_MARKS: &[&str] = &[
    "certificate",
    "alert",
    "corrupt message",
    "peer is incompatible",
    "peer misbehaved",
    "handshake",
    "dns name",
];

/// Sorts a failed first contact: only an unreachable, refusing or hung server is
/// worth waiting for.
pub(crate) fn first_contact(error: &RedisError, tls: bool) -> FirstContact {
    let message = describe(error);
    let code = error.code().unwrap_or("");
    match error.kind() {
        ErrorKind::AuthenticationFailed => FirstContact::Authentication(message),
        _ if matches!(code, "WRONGPASS" | "NOAUTH") => FirstContact::Authentication(message),
        // The cluster client reports a refused AUTH of its initial connections as
        // an I/O error that quotes the server's code.
        ErrorKind::Io
            if ["\"WRONGPASS\"", "\"NOAUTH\""]
                .iter()
                .any(|c| message.contains(c)) =>
        {
            FirstContact::Authentication(message)
        }
        ErrorKind::Io
            if tls && {
                let lower = message.to_ascii_lowercase();
                TLS_MARKS.iter().any(|mark| lower.contains(mark))
            } =>
        {
            FirstContact::Tls(message)
        }
        ErrorKind::Io | ErrorKind::Parse => FirstContact::Down,
        _ if is_node_failure_code(error) => FirstContact::Down,
        _ => FirstContact::Rejected(message),
    }
}

#[cfg(test)]
mod tests {
    use std::io;

    use super::*;

    fn node() -> NodeId {
        NodeId::new("r1").unwrap()
    }

    fn server_error(code: &str, detail: &str) -> RedisError {
        redis::make_extension_error(code.to_owned(), Some(detail.to_owned()))
    }

    #[test]
    fn transport_failures_and_unusable_servers_are_node_failures() {
        let timeout = Duration::from_millis(500);
        let refused = RedisError::from(io::Error::from(io::ErrorKind::ConnectionRefused));
        let failure = classify(&node(), &refused, timeout);
        assert!(failure.node_failed && failure.error.is_node_failure());
        let timed = RedisError::from(io::Error::from(io::ErrorKind::TimedOut));
        assert!(matches!(
            classify(&node(), &timed, timeout).error,
            StoreError::Timeout { after, .. } if after == timeout
        ));
        for code in [
            "READONLY",
            "MASTERDOWN",
            "LOADING",
            "WRONGPASS",
            "MOVED",
            "ASK",
        ] {
            let failure = classify(&node(), &server_error(code, "detail"), timeout);
            assert!(failure.node_failed, "{code}");
            assert!(failure.error.is_node_failure(), "{code}");
        }
        let wrapped = server_error(
            "ERR",
            "Error running script (call to f_1): @user_script:1: -READONLY You can't write",
        );
        assert!(classify(&node(), &wrapped, timeout).node_failed);
    }

    #[test]
    fn refusals_leave_the_node_up() {
        let timeout = Duration::from_millis(500);
        for (code, detail) in [
            ("OOM", "command not allowed when used memory > 'maxmemory'."),
            (
                "WRONGTYPE",
                "Operation against a key holding the wrong kind of value",
            ),
            (
                "NOPERM",
                "this user has no permissions to run the 'getex' command",
            ),
            (
                "ERR",
                "Error running script: user_script:3: attempt to compare nil",
            ),
        ] {
            let failure = classify(&node(), &server_error(code, detail), timeout);
            assert!(!failure.node_failed, "{code}");
            assert!(matches!(failure.error, StoreError::Server { .. }), "{code}");
            assert!(failure.detail.contains(code), "{}", failure.detail);
        }
    }

    #[test]
    fn first_contacts_tell_waiting_from_giving_up() {
        let refused = RedisError::from(io::Error::from(io::ErrorKind::ConnectionRefused));
        assert!(matches!(first_contact(&refused, true), FirstContact::Down));
        let untrusted = RedisError::from(io::Error::new(
            io::ErrorKind::InvalidData,
            "invalid peer certificate: UnknownIssuer",
        ));
        assert!(matches!(
            first_contact(&untrusted, true),
            FirstContact::Tls(_)
        ));
        assert!(matches!(
            first_contact(&untrusted, false),
            FirstContact::Down
        ));
        let wrong = server_error("WRONGPASS", "invalid username-password pair");
        assert!(matches!(
            first_contact(&wrong, false),
            FirstContact::Authentication(_)
        ));
        let wrapped = RedisError::from((
            ErrorKind::Io,
            "Failed to create initial connections",
            "Io: \"WRONGPASS\": invalid username-password pair".to_owned(),
        ));
        assert!(matches!(
            first_contact(&wrapped, true),
            FirstContact::Authentication(_)
        ));
        let db = server_error("ERR", "DB index is out of range");
        assert!(matches!(
            first_contact(&db, false),
            FirstContact::Rejected(_)
        ));
        let loading = server_error("LOADING", "Redis is loading the dataset in memory");
        assert!(matches!(first_contact(&loading, false), FirstContact::Down));
    }
}
