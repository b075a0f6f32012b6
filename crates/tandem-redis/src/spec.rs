//! Redis node specs and URLs: `r1=redis://host:6379,r2=rediss://:secret@host:6380/2`,
//! `r3=redis+sentinel://s1:26379,s2:26379/mymaster`, `r4=redis+cluster://seed1,seed2`.
//!
//! Passwords never leave this module in text: [`RedisUrl`]'s `Display` and `Debug`
//! print `***` in their place, and every [`RedisSpecError`] names the bad entry in
//! that redacted form.

use std::fmt;
use std::str::FromStr;

use tandem_core::{IdError, NodeId};

/// The port of a URL that names none: Redis's (and Valkey's) default.
pub const DEFAULT_PORT: u16 = 6379;

/// The port of a sentinel that names none: Redis Sentinel's default.
pub const DEFAULT_SENTINEL_PORT: u16 = 26379;

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

/// One Redis or Valkey deployment, parsed from a URL:
///
/// - a standalone server: `redis://[user[:password]@]host[:port][/db]`;
/// - a Sentinel group: `redis+sentinel://[user[:password]@]host[:port][,host[:port]...]/SERVICE[/db]`,
///   the hosts being sentinels (port 26379 unless named) that know the group's
///   master under the name `SERVICE`;
/// - a Cluster: `redis+cluster://[user[:password]@]host[:port][,host[:port]...]`,
///   the hosts being seeds from which the cluster's other nodes are discovered.
///
/// `rediss` for TLS (`rediss+sentinel`, `rediss+cluster`), and `valkey`, `valkeys` as
/// synonyms. The credentials are those of the data nodes (masters, replicas, cluster
/// nodes); sentinels are asked without credentials, with TLS if the URL uses it.
/// Reserved characters in the user name and password (`@ : / , %` and the like) are
/// percent-encoded (`%40` for `@`).
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
///
/// A Sentinel group and a Cluster:
///
/// ```
/// use tandem_redis::{RedisUrl, Topology};
///
/// let group = RedisUrl::parse("redis+sentinel://:pw@s1,s2:26380,s3/sessions/1").unwrap();
/// assert_eq!(group.topology(), &Topology::Sentinel { service: "sessions".into() });
/// assert_eq!(group.addresses(), ["s1:26379", "s2:26380", "s3:26379"]);
/// assert_eq!(group.db(), 1);
/// assert_eq!(group.to_string(), "redis+sentinel://:***@s1:26379,s2:26380,s3:26379/sessions/1");
///
/// let cluster = RedisUrl::parse("rediss+cluster://10.0.0.1:7000,10.0.0.2:7000").unwrap();
/// assert_eq!((cluster.topology(), cluster.tls()), (&Topology::Cluster, true));
/// assert_eq!(cluster.host(), "10.0.0.1");
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct RedisUrl {
    scheme: &'static str,
    tls: bool,
    topology: Topology,
    username: Option<String>,
    password: Option<String>,
    /// `(host, port)` of each server the URL names: one for a standalone server,
    /// the sentinels of a group, the seeds of a cluster.
    servers: Vec<(String, u16)>,
    db: u32,
}

/// What kind of deployment a [`RedisUrl`] names.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Topology {
    /// One server (which may have replicas of its own, but does not fail over).
    Standalone,
    /// A master with replicas, watched by sentinels that promote a replica when the
    /// master fails.
    Sentinel {
        /// The name under which the sentinels know the master.
        service: String,
    },
    /// A Redis Cluster: keys sharded over masters by hash slot, each master with
    /// replicas.
    Cluster,
}

impl RedisUrl {
    /// Parses one URL. Rejected: other schemes (unix sockets among them), a user
    /// name without a password, a missing or invalid host, a port that is not 1 to
    /// 65535, several hosts for a standalone server, a path that is not a database
    /// number (after the service name for a Sentinel group; a Cluster has only
    /// database 0), a Sentinel URL without a service name, query strings and
    /// fragments.
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

    /// What kind of deployment the URL names.
    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// The host of the (first) server: a name, an IPv4 address, or an IPv6 address
    /// in brackets.
    pub fn host(&self) -> &str {
        &self.servers[0].0
    }

    /// The host as the socket layer takes it (IPv6 without brackets).
    pub(crate) fn bare_host(&self) -> &str {
        bare(self.host())
    }

    /// The port of the (first) server.
    pub fn port(&self) -> u16 {
        self.servers[0].1
    }

    /// `host:port` of every server the URL names: the server, the sentinels, or the
    /// cluster's seeds.
    pub fn addresses(&self) -> Vec<String> {
        self.servers
            .iter()
            .map(|(host, port)| format!("{host}:{port}"))
            .collect()
    }

    /// `(host, port)` of every server, hosts as the socket layer takes them.
    pub(crate) fn socket_addresses(&self) -> Vec<(String, u16)> {
        self.servers
            .iter()
            .map(|(host, port)| (bare(host).to_owned(), *port))
            .collect()
    }

    /// The database number (`SELECT`); 0 if the URL has no path.
    pub fn db(&self) -> u32 {
        self.db
    }

    /// `host:port` of the (first) server.
    pub fn address(&self) -> String {
        format!("{}:{}", self.host(), self.port())
    }
}

/// An IPv6 host without its brackets; any other host as it is.
fn bare(host: &str) -> &str {
    host.strip_prefix('[')
        .and_then(|inner| inner.strip_suffix(']'))
        .unwrap_or(host)
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
        f.write_str(&self.addresses().join(","))?;
        if let Topology::Sentinel { service } = &self.topology {
            write!(f, "/{service}")?;
        }
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
/// Each node is one deployment (a standalone server, a Sentinel group, a Cluster);
/// nodes are independent of each other, like memcached nodes. The commas between
/// the hosts of a Sentinel or Cluster URL belong to that URL: a new entry starts
/// where a piece has a scheme (`://`).
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
        let entries = split_entries(spec);
        if let Some(index) = entries.iter().position(String::is_empty) {
            return Err(RedisSpecError::EmptyEntry {
                position: index + 1,
            });
        }
        let mut nodes: Vec<RedisNode> = Vec::with_capacity(entries.len());
        for entry in &entries {
            let node = parse_entry(entry, entries.len() == 1)?;
            if nodes.iter().any(|other| other.id == node.id) {
                return Err(RedisSpecError::DuplicateNodeId {
                    id: node.id.to_string(),
                });
            }
            let taken: Vec<String> = nodes
                .iter()
                .flat_map(|other| other.url.addresses())
                .collect();
            if let Some(address) = node
                .url
                .addresses()
                .into_iter()
                .find(|address| taken.contains(address))
            {
                return Err(RedisSpecError::DuplicateAddress { address });
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

/// The entries of a spec: its comma-separated pieces, where a piece without a scheme
/// (`://`) continues the entry before it (another host of a Sentinel or Cluster
/// URL). Pieces are trimmed; an empty one stays an (empty) entry of its own.
fn split_entries(spec: &str) -> Vec<String> {
    let mut entries: Vec<String> = Vec::new();
    for piece in spec.split(',').map(str::trim) {
        match entries.last_mut() {
            Some(last) if !piece.is_empty() && !piece.contains("://") && !last.is_empty() => {
                last.push(',');
                last.push_str(piece);
            }
            _ => entries.push(piece.to_owned()),
        }
    }
    entries
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
    const SCHEMES: &str = "unknown scheme: expected `redis://`, `rediss://`, `valkey://`, \
                           `valkeys://`, or one of them with `+sentinel` or `+cluster`";
    let (scheme, rest) = url
        .split_once("://")
        .ok_or("not a URL: expected a scheme such as `redis://`")?;
    let lower = scheme.to_ascii_lowercase();
    let (base, kind) = match lower.split_once('+') {
        Some((base, kind)) => (base, Some(kind)),
        None => (lower.as_str(), None),
    };
    if kind == Some("unix") || base == "unix" {
        return Err("unix sockets are not supported; use a TCP URL");
    }
    let (tls, valkey) = match base {
        "redis" => (false, false),
        "rediss" => (true, false),
        "valkey" => (false, true),
        "valkeys" => (true, true),
        _ => return Err(SCHEMES),
    };
    let (scheme, default_port) = match (kind, tls, valkey) {
        (None, false, false) => ("redis", DEFAULT_PORT),
        (None, true, false) => ("rediss", DEFAULT_PORT),
        (None, false, true) => ("valkey", DEFAULT_PORT),
        (None, true, true) => ("valkeys", DEFAULT_PORT),
        (Some("sentinel"), false, false) => ("redis+sentinel", DEFAULT_SENTINEL_PORT),
        (Some("sentinel"), true, false) => ("rediss+sentinel", DEFAULT_SENTINEL_PORT),
        (Some("sentinel"), false, true) => ("valkey+sentinel", DEFAULT_SENTINEL_PORT),
        (Some("sentinel"), true, true) => ("valkeys+sentinel", DEFAULT_SENTINEL_PORT),
        (Some("cluster"), false, false) => ("redis+cluster", DEFAULT_PORT),
        (Some("cluster"), true, false) => ("rediss+cluster", DEFAULT_PORT),
        (Some("cluster"), false, true) => ("valkey+cluster", DEFAULT_PORT),
        (Some("cluster"), true, true) => ("valkeys+cluster", DEFAULT_PORT),
        _ => return Err(SCHEMES),
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
    let (userinfo, hosts) = match authority.rsplit_once('@') {
        Some((userinfo, hosts)) => (Some(userinfo), hosts),
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
    let mut servers = Vec::new();
    for host_port in hosts.split(',') {
        let (host, port) = split_host_port(host_port.trim())?;
        if !valid_host(host) {
            return Err("a host is empty or not a valid name or address");
        }
        let port = match port {
            None => default_port,
            Some(port) => parse_number::<u16>(port)
                .filter(|number| *number != 0)
                .ok_or("the port is not a number from 1 to 65535")?,
        };
        let server = (host.to_ascii_lowercase(), port);
        if servers.contains(&server) {
            return Err("a host appears twice in the URL");
        }
        servers.push(server);
    }
    let parse_db = |db: Option<&str>| match db {
        None | Some("") => Ok(0),
        Some(db) => {
            parse_number::<u32>(db).ok_or("the path is not a database number (`/0`, `/1`, ...)")
        }
    };
    let (topology, db) = match kind {
        None => {
            if servers.len() > 1 {
                return Err(
                    "several hosts for one server: use `+sentinel` or `+cluster`, \
                            or one node per server",
                );
            }
            (Topology::Standalone, parse_db(path)?)
        }
        Some("sentinel") => {
            let (service, db) = match path.map(|path| path.split_once('/')) {
                None => return Err("a Sentinel URL needs the master's name: `/SERVICE`"),
                Some(Some((service, db))) => (service, Some(db)),
                Some(None) => (path.unwrap_or(""), None),
            };
            let service_ok = !service.is_empty()
                && service.len() <= 128
                && service
                    .bytes()
                    .all(|byte| byte.is_ascii_alphanumeric() || b"-_.".contains(&byte));
            if !service_ok {
                return Err("the Sentinel service name is empty or has characters \
                            other than letters, digits, `-`, `_` and `.`");
            }
            let service = service.to_owned();
            (Topology::Sentinel { service }, parse_db(db)?)
        }
        _ => {
            if parse_db(path)? != 0 {
                return Err("a Redis Cluster has only database 0");
            }
            (Topology::Cluster, 0)
        }
    };
    Ok(RedisUrl {
        scheme,
        tls,
        topology,
        username,
        password,
        servers,
        db,
    })
}

/// A canonical decimal number: no sign, no leading zeros.
fn parse_number<T: FromStr + ToString>(text: &str) -> Option<T> {
    text.parse::<T>()
        .ok()
        .filter(|number| number.to_string() == text)
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
