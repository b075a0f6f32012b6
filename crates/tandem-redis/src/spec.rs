//! Redis node specs and URLs: `r1=redis://host:6379,r2=rediss://:secret@host:6380/2`.
//!
//! Passwords never leave this module in text: [`RedisUrl`]'s `Display` and `Debug`
//! print `***` in their place, and every [`RedisSpecError`] names the bad entry in
//! that redacted form.

use std::fmt;
use std::str::FromStr;

use tandem_core::{IdError, NodeId};

/// The port of a URL that names none: Redis's (and Valkey's) default.
pub const DEFAULT_PORT: u16 = 6379;

/// What a redacted password prints as.
const REDACTED: &str = "***";

/// Why a Redis node spec or URL was rejected. The message names the offending entry
/// with its password replaced by `***`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RedisSpecError {
    /// The spec has no entries.
    #[error("the Redis node spec is empty; expected `id=redis://host:port[,id=...]` or one URL")]
    Empty,
    /// An entry between commas is empty.
    #[error("entry {position} of the Redis node spec is empty")]
    EmptyEntry {
        /// 1-based position of the entry.
        position: usize,
    },
    /// A URL without a node id in a list of several nodes.
    #[error(
        "Redis node spec entry `{entry}` has no node id; with several nodes each needs one (`r2={entry}`)"
    )]
    MissingNodeId {
        /// The entry, redacted.
        entry: String,
    },
    /// The node id is not valid.
    #[error("Redis node spec entry `{entry}`: {source}")]
    InvalidNodeId {
        /// The entry, redacted.
        entry: String,
        /// What is wrong with the id.
        #[source]
        source: IdError,
    },
    /// The URL is not of the accepted form.
    #[error("Redis node spec entry `{entry}`: {reason}")]
    InvalidUrl {
        /// The entry, redacted.
        entry: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// Two entries use the same node id.
    #[error("node id {id:?} appears twice in the Redis node spec")]
    DuplicateNodeId {
        /// The id.
        id: String,
    },
    /// Two entries name the same server.
    #[error(
        "server {address} appears twice in the Redis node spec (two nodes on one server fail together)"
    )]
    DuplicateAddress {
        /// `host:port`.
        address: String,
    },
}

/// One Redis or Valkey server, parsed from a URL:
/// `redis://[user[:password]@]host[:port][/db]`, `rediss://` for TLS, and `valkey://`
/// and `valkeys://` as synonyms. Reserved characters in the user name and password
/// (`@ : / , %` and the like) are percent-encoded (`%40` for `@`).
///
/// Its `Display` and `Debug` print the password as `***`:
///
/// ```
/// use tandem_redis::RedisUrl;
///
/// let url = RedisUrl::parse("rediss://app:s3cret@cache.internal:6380/2").unwrap();
/// assert_eq!(url.host(), "cache.internal");
/// assert_eq!((url.port(), url.db(), url.tls()), (6380, 2, true));
/// assert_eq!(url.username(), Some("app"));
/// assert_eq!(url.to_string(), "rediss://app:***@cache.internal:6380/2");
/// assert!(!format!("{url:?}").contains("s3cret"));
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct RedisUrl {
    scheme: &'static str,
    tls: bool,
    username: Option<String>,
    password: Option<String>,
    host: String,
    port: u16,
    db: u32,
}

impl RedisUrl {
    /// Parses one URL. Rejected: other schemes (unix sockets among them), a user
    /// name without a password, a missing or invalid host, a port that is not 1 to
    /// 65535, a path that is not a database number, query strings and fragments.
    pub fn parse(url: &str) -> Result<RedisUrl, RedisSpecError> {
        parse_url(url).map_err(|reason| RedisSpecError::InvalidUrl {
            entry: redact(url),
            reason,
        })
    }

    /// Whether the connection uses TLS (`rediss://`, `valkeys://`).
    pub fn tls(&self) -> bool {
        self.tls
    }

    /// The ACL user, if the URL names one (else Redis's `default` user).
    pub fn username(&self) -> Option<&str> {
        self.username.as_deref()
    }

    /// Whether the URL carries a password.
    pub fn has_password(&self) -> bool {
        self.password.is_some()
    }

    /// The password, percent-decoded. Not part of any formatted output.
    pub(crate) fn password(&self) -> Option<&str> {
        self.password.as_deref()
    }

    /// The host: a name, an IPv4 address, or an IPv6 address in brackets.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The host as the socket layer takes it (IPv6 without brackets).
    pub(crate) fn bare_host(&self) -> &str {
        self.host
            .strip_prefix('[')
            .and_then(|inner| inner.strip_suffix(']'))
            .unwrap_or(&self.host)
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The database number (`SELECT`); 0 if the URL has no path.
    pub fn db(&self) -> u32 {
        self.db
    }

    /// `host:port`.
    pub fn address(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

impl FromStr for RedisUrl {
    type Err = RedisSpecError;

    fn from_str(url: &str) -> Result<RedisUrl, RedisSpecError> {
        RedisUrl::parse(url)
    }
}

impl fmt::Display for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://", self.scheme)?;
        match (&self.username, &self.password) {
            (Some(user), Some(_)) => write!(f, "{}:{REDACTED}@", encode(user))?,
            (None, Some(_)) => write!(f, ":{REDACTED}@")?,
            (_, None) => {}
        }
        write!(f, "{}:{}", self.host, self.port)?;
        if self.db != 0 {
            write!(f, "/{}", self.db)?;
        }
        Ok(())
    }
}

impl fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RedisUrl({self})")
    }
}

/// One node of a [`RedisSpec`]: its id and server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisNode {
    id: NodeId,
    url: RedisUrl,
}

impl RedisNode {
    /// The node id.
    pub fn id(&self) -> &NodeId {
        &self.id
    }

    /// The server.
    pub fn url(&self) -> &RedisUrl {
        &self.url
    }
}

impl fmt::Display for RedisNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.id, self.url)
    }
}

/// The Redis nodes of a store: `ID=URL[,ID=URL...]`, or one URL alone (node `r1`).
/// Each node is one deployment (today: one standalone server); nodes are
/// independent of each other, like memcached nodes.
///
/// ```
/// use tandem_redis::RedisSpec;
///
/// let spec = RedisSpec::parse("r1=redis://10.0.0.5:6379, r2=valkeys://:pw@10.0.0.6:6380").unwrap();
/// assert_eq!(spec.nodes().len(), 2);
/// assert_eq!(spec.to_string(), "r1=redis://10.0.0.5:6379,r2=valkeys://:***@10.0.0.6:6380");
///
/// let single = RedisSpec::parse("redis://localhost").unwrap();
/// assert_eq!(single.nodes()[0].id().as_str(), "r1");
///
/// let error = RedisSpec::parse("r1=redis://:hunter2@localhost:0").unwrap_err();
/// assert!(error.to_string().contains("port"));
/// assert!(!error.to_string().contains("hunter2"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisSpec {
    nodes: Vec<RedisNode>,
}

impl RedisSpec {
    /// Parses a comma-separated list of `id=url` entries, or a single URL (node
    /// `r1`). Whitespace around entries is ignored.
    pub fn parse(spec: &str) -> Result<RedisSpec, RedisSpecError> {
        if spec.trim().is_empty() {
            return Err(RedisSpecError::Empty);
        }
        let entries: Vec<&str> = spec.split(',').map(str::trim).collect();
        let mut nodes: Vec<RedisNode> = Vec::with_capacity(entries.len());
        for (index, entry) in entries.iter().enumerate() {
            if entry.is_empty() {
                return Err(RedisSpecError::EmptyEntry {
                    position: index + 1,
                });
            }
            let node = parse_entry(entry, entries.len() == 1)?;
            if nodes.iter().any(|other| other.id == node.id) {
                return Err(RedisSpecError::DuplicateNodeId {
                    id: node.id.to_string(),
                });
            }
            if nodes
                .iter()
                .any(|other| other.url.address() == node.url.address())
            {
                return Err(RedisSpecError::DuplicateAddress {
                    address: node.url.address(),
                });
            }
            nodes.push(node);
        }
        Ok(RedisSpec { nodes })
    }

    /// All nodes, in spec order.
    pub fn nodes(&self) -> &[RedisNode] {
        &self.nodes
    }

    /// The node with this id.
    pub fn node(&self, id: &str) -> Option<&RedisNode> {
        self.nodes.iter().find(|node| node.id.as_str() == id)
    }

    /// The ids of all nodes, in spec order.
    pub fn ids(&self) -> Vec<NodeId> {
        self.nodes.iter().map(|node| node.id.clone()).collect()
    }
}

impl FromStr for RedisSpec {
    type Err = RedisSpecError;

    fn from_str(spec: &str) -> Result<RedisSpec, RedisSpecError> {
        RedisSpec::parse(spec)
    }
}

impl fmt::Display for RedisSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, node) in self.nodes.iter().enumerate() {
            if index > 0 {
                f.write_str(",")?;
            }
            write!(f, "{node}")?;
        }
        Ok(())
    }
}

fn parse_entry(entry: &str, alone: bool) -> Result<RedisNode, RedisSpecError> {
    // A node id never contains `:` or `/`, so an `=` before the scheme's `://` ends
    // it; an `=` later on belongs to the URL (a password, say).
    let scheme_at = entry.find("://").unwrap_or(entry.len());
    let (id, url) = match entry[..scheme_at].find('=') {
        Some(equals) => (Some(entry[..equals].trim()), &entry[equals + 1..]),
        None => (None, entry),
    };
    let id = match id {
        Some(id) => NodeId::new(id).map_err(|source| RedisSpecError::InvalidNodeId {
            entry: redact(entry),
            source,
        })?,
        None if alone => NodeId::new("r1").expect("r1 is a valid node id"),
        None => {
            return Err(RedisSpecError::MissingNodeId {
                entry: redact(entry),
            });
        }
    };
    let url = parse_url(url.trim()).map_err(|reason| RedisSpecError::InvalidUrl {
        entry: redact(entry),
        reason,
    })?;
    Ok(RedisNode { id, url })
}

fn parse_url(url: &str) -> Result<RedisUrl, &'static str> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or("not a URL: expected `redis://`, `rediss://`, `valkey://` or `valkeys://`")?;
    let (scheme, tls) = match scheme.to_ascii_lowercase().as_str() {
        "redis" => ("redis", false),
        "rediss" => ("rediss", true),
        "valkey" => ("valkey", false),
        "valkeys" => ("valkeys", true),
        "unix" | "redis+unix" | "valkey+unix" => {
            return Err("unix sockets are not supported; use a TCP URL");
        }
        _ => {
            return Err(
                "unknown scheme: expected `redis://`, `rediss://`, `valkey://` or `valkeys://`",
            );
        }
    };
    if rest.contains('?') {
        return Err("query parameters are not supported");
    }
    if rest.contains('#') {
        return Err("a URL fragment (`#...`) is not allowed");
    }
    let (authority, path) = match rest.find('/') {
        Some(slash) => (&rest[..slash], Some(&rest[slash + 1..])),
        None => (rest, None),
    };
    let (userinfo, host_port) = match authority.rsplit_once('@') {
        Some((userinfo, host_port)) => (Some(userinfo), host_port),
        None => (None, authority),
    };
    let (username, password) = match userinfo {
        None => (None, None),
        Some(userinfo) => {
            let Some((user, password)) = userinfo.split_once(':') else {
                return Err("a user name without a password: write `user:password@`, \
                            or `:password@` for the default user");
            };
            let user = decode(user)?;
            let password = decode(password)?;
            if password.is_empty() {
                return Err("the password is empty");
            }
            ((!user.is_empty()).then_some(user), Some(password))
        }
    };
    let (host, port) = split_host_port(host_port)?;
    if !valid_host(host) {
        return Err("the host is empty or not a valid name or address");
    }
    let port = match port {
        None => DEFAULT_PORT,
        Some(port) => port
            .parse::<u16>()
            .ok()
            // Only canonical decimal: no sign, no leading zeros, not zero.
            .filter(|number| *number != 0 && number.to_string() == port)
            .ok_or("the port is not a number from 1 to 65535")?,
    };
    let db = match path {
        None | Some("") => 0,
        Some(db) => db
            .parse::<u32>()
            .ok()
            .filter(|number| number.to_string() == db)
            .ok_or("the path is not a database number (`/0`, `/1`, ...)")?,
    };
    Ok(RedisUrl {
        scheme,
        tls,
        username,
        password,
        host: host.to_ascii_lowercase(),
        port,
        db,
    })
}

/// `host`, `host:port`, `[v6]` or `[v6]:port`.
fn split_host_port(host_port: &str) -> Result<(&str, Option<&str>), &'static str> {
    if host_port.starts_with('[') {
        let close = host_port.find(']').ok_or("an IPv6 address without `]`")?;
        let (host, after) = host_port.split_at(close + 1);
        return match after {
            "" => Ok((host, None)),
            _ => match after.strip_prefix(':') {
                Some(port) => Ok((host, Some(port))),
                None => Err("unexpected text after the IPv6 address"),
            },
        };
    }
    Ok(match host_port.split_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (host_port, None),
    })
}

fn valid_host(host: &str) -> bool {
    if let Some(inner) = host
        .strip_prefix('[')
        .and_then(|rest| rest.strip_suffix(']'))
    {
        return inner.parse::<std::net::Ipv6Addr>().is_ok();
    }
    !host.is_empty()
        && host.len() <= 253
        && host.bytes().all(|byte| {
            byte.is_ascii_alphanumeric() || byte == b'.' || byte == b'-' || byte == b'_'
        })
}

/// Percent-decodes a user name or password; it must be UTF-8 afterwards.
fn decode(text: &str) -> Result<String, &'static str> {
    const BAD_ESCAPE: &str = "a `%` in the user name or password is not followed by two hex digits";
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        match bytes[index] {
            b'%' => {
                let hex = bytes.get(index + 1..index + 3).ok_or(BAD_ESCAPE)?;
                let hex = std::str::from_utf8(hex).map_err(|_| BAD_ESCAPE)?;
                decoded.push(u8::from_str_radix(hex, 16).map_err(|_| BAD_ESCAPE)?);
                index += 3;
            }
            byte if byte.is_ascii_control() || byte == b' ' => {
                return Err(
                    "the user name or password has a space or control character; percent-encode it",
                );
            }
            byte => {
                decoded.push(byte);
                index += 1;
            }
        }
    }
    String::from_utf8(decoded).map_err(|_| "the user name or password is not UTF-8 once decoded")
}

/// Percent-encodes what would not read back as a user name.
fn encode(text: &str) -> String {
    let mut encoded = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

/// `entry` with whatever may be a password replaced by `***`, for error messages
/// about text that did not parse. Errs on the side of hiding: everything between
/// the scheme and the last `@` is treated as credentials, and only the text before
/// its first `:` (the user name) is kept; without an `@`, a "port" that is not a
/// number may be a password whose `@` is missing, and is hidden too.
pub(crate) fn redact(entry: &str) -> String {
    let start = entry.find("://").map_or(0, |scheme| scheme + 3);
    let Some(at) = entry.rfind('@') else {
        let Some(colon) = entry
            .rfind(':')
            .filter(|&colon| !entry[colon..].starts_with("://"))
        else {
            return entry.to_owned();
        };
        let tail = &entry[colon + 1..];
        let port = &tail[..tail.find('/').unwrap_or(tail.len())];
        if port.contains(']') || port.bytes().all(|byte| byte.is_ascii_digit()) {
            return entry.to_owned();
        }
        return format!("{}:{REDACTED}{}", &entry[..colon], &tail[port.len()..]);
    };
    let start = start.min(at);
    let userinfo = &entry[start..at];
    let kept = match userinfo.split_once(':') {
        Some((user, _)) => format!("{user}:{REDACTED}"),
        None => REDACTED.to_owned(),
    };
    format!("{}{kept}{}", &entry[..start], &entry[at..])
}

#[cfg(test)]
mod tests;
