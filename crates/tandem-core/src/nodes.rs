//! Node specs: the one-line description of the remote nodes.
//!
//! `n1:10.0.0.5:11211,n2:10.0.0.6:11211` names each node; a lone `host:port` is one
//! node called `n1`. Hosts are names, IPv4 addresses or bracketed IPv6 addresses
//! (`n1:[::1]:11211`). Failover nodes, used only when no regular node is alive, are a
//! separate list of node ids.

use std::fmt;
use std::str::FromStr;

use crate::id::{IdError, NodeId};

/// Why a node spec or failover list was rejected. The message names the offending
/// entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NodeSpecError {
    /// The spec has no entries.
    #[error("the node spec is empty; expected `id:host:port[,id:host:port...]` or `host:port`")]
    Empty,
    /// An entry between commas is empty.
    #[error("entry {position} of the node spec is empty")]
    EmptyEntry {
        /// 1-based position of the entry.
        position: usize,
    },
    /// An entry is not `id:host:port` (or a lone `host:port`).
    #[error("node spec entry {entry:?} is not of the form `id:host:port`")]
    Malformed {
        /// The entry.
        entry: String,
    },
    /// A `host:port` without a node id in a list of several nodes.
    #[error(
        "node spec entry {entry:?} has no node id; with several nodes each needs one (`n2:{entry}`)"
    )]
    MissingNodeId {
        /// The entry.
        entry: String,
    },
    /// The node id is not valid.
    #[error("node spec entry {entry:?}: {source}")]
    InvalidNodeId {
        /// The entry.
        entry: String,
        /// What is wrong with the id.
        #[source]
        source: IdError,
    },
    /// The host part is empty or has characters no host name or address has.
    #[error("node spec entry {entry:?} has an invalid host")]
    InvalidHost {
        /// The entry.
        entry: String,
    },
    /// The port is not a number from 1 to 65535.
    #[error("node spec entry {entry:?} has an invalid port (expected 1-65535)")]
    InvalidPort {
        /// The entry.
        entry: String,
    },
    /// Two entries use the same node id.
    #[error("node id {id:?} appears twice in the node spec")]
    DuplicateNodeId {
        /// The id.
        id: String,
    },
    /// Two entries use the same address.
    #[error("address {address:?} appears twice in the node spec")]
    DuplicateAddress {
        /// The address.
        address: String,
    },
    /// A failover id names no node of the spec.
    #[error("failover node {id:?} is not in the node spec")]
    UnknownFailoverNode {
        /// The id.
        id: String,
    },
    /// Every node was made a failover node: there would be no regular node.
    #[error("every node is a failover node; at least one regular node is needed")]
    NoRegularNode,
}

/// One node of a spec: its id and address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeAddress {
    id: NodeId,
    host: String,
    port: u16,
}

impl NodeAddress {
    /// The node id.
    pub fn id(&self) -> &NodeId {
        &self.id
    }

    /// The host: a name, an IPv4 address, or an IPv6 address in brackets.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `host:port`, ready to resolve or connect to.
    pub fn address(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

impl fmt::Display for NodeAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.id, self.host, self.port)
    }
}

/// The remote nodes, parsed from a node spec, and which of them are failover nodes.
///
/// ```
/// use tandem_core::NodeSpec;
///
/// let spec = NodeSpec::parse("n1:127.0.0.1:11211, n2:127.0.0.1:11212")
///     .unwrap()
///     .with_failover("n2")
///     .unwrap();
/// assert_eq!(spec.nodes().len(), 2);
/// assert_eq!(spec.nodes()[1].address(), "127.0.0.1:11212");
/// assert!(spec.is_failover(spec.nodes()[1].id()));
///
/// let single = NodeSpec::parse("localhost:11211").unwrap();
/// assert_eq!(single.nodes()[0].id().as_str(), "n1");
///
/// let error = NodeSpec::parse("n1:127.0.0.1").unwrap_err();
/// assert!(error.to_string().contains("n1:127.0.0.1"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSpec {
    nodes: Vec<NodeAddress>,
    failover: Vec<NodeId>,
}

impl NodeSpec {
    /// Parses a comma-separated list of `id:host:port` entries, or a single
    /// `host:port` (which becomes node `n1`). Whitespace around entries is ignored.
    pub fn parse(spec: &str) -> Result<NodeSpec, NodeSpecError> {
        if spec.trim().is_empty() {
            return Err(NodeSpecError::Empty);
        }
        let entries: Vec<&str> = spec.split(',').map(str::trim).collect();
        let mut nodes: Vec<NodeAddress> = Vec::with_capacity(entries.len());
        for (index, entry) in entries.iter().enumerate() {
            if entry.is_empty() {
                return Err(NodeSpecError::EmptyEntry {
                    position: index + 1,
                });
            }
            let node = parse_entry(entry, entries.len() == 1)?;
            if nodes.iter().any(|other| other.id == node.id) {
                return Err(NodeSpecError::DuplicateNodeId {
                    id: node.id.to_string(),
                });
            }
            if nodes.iter().any(|other| other.address() == node.address()) {
                return Err(NodeSpecError::DuplicateAddress {
                    address: node.address(),
                });
            }
            nodes.push(node);
        }
        Ok(NodeSpec {
            nodes,
            failover: Vec::new(),
        })
    }

    /// Marks the nodes in `ids` (separated by commas or spaces) as failover nodes.
    /// Every id must name a node of the spec, and at least one regular node must
    /// remain. An empty list means no failover nodes.
    pub fn with_failover(mut self, ids: &str) -> Result<NodeSpec, NodeSpecError> {
        let mut failover = Vec::new();
        for id in ids
            .split([',', ' '])
            .map(str::trim)
            .filter(|id| !id.is_empty())
        {
            let known = self
                .nodes
                .iter()
                .find(|node| node.id.as_str() == id)
                .ok_or_else(|| NodeSpecError::UnknownFailoverNode { id: id.to_owned() })?;
            if !failover.contains(&known.id) {
                failover.push(known.id.clone());
            }
        }
        if failover.len() == self.nodes.len() {
            return Err(NodeSpecError::NoRegularNode);
        }
        self.failover = failover;
        Ok(self)
    }

    /// All nodes, in spec order.
    pub fn nodes(&self) -> &[NodeAddress] {
        &self.nodes
    }

    /// The node with this id.
    pub fn node(&self, id: &str) -> Option<&NodeAddress> {
        self.nodes.iter().find(|node| node.id.as_str() == id)
    }

    /// The ids of all nodes, in spec order.
    pub fn ids(&self) -> Vec<NodeId> {
        self.nodes.iter().map(|node| node.id.clone()).collect()
    }

    /// The failover node ids.
    pub fn failover(&self) -> &[NodeId] {
        &self.failover
    }

    /// Whether `id` is a failover node.
    pub fn is_failover(&self, id: &NodeId) -> bool {
        self.failover.contains(id)
    }
}

impl FromStr for NodeSpec {
    type Err = NodeSpecError;

    fn from_str(spec: &str) -> Result<NodeSpec, NodeSpecError> {
        NodeSpec::parse(spec)
    }
}

impl fmt::Display for NodeSpec {
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

fn parse_entry(entry: &str, alone: bool) -> Result<NodeAddress, NodeSpecError> {
    let malformed = || NodeSpecError::Malformed {
        entry: entry.to_owned(),
    };
    // `[v6]:port` or `host:port` after an optional `id:`. The id never contains `:` or
    // `[`, so the first `:` ends it when what follows still has a port.
    let (id, host_port) = match entry.split_once(':') {
        Some((id, rest))
            if !entry.starts_with('[') && (rest.contains(':') || rest.starts_with('[')) =>
        {
            (Some(id), rest)
        }
        Some(_) => (None, entry),
        None => return Err(malformed()),
    };
    let (host, port) = host_port.rsplit_once(':').ok_or_else(malformed)?;
    let id = match id {
        Some(id) => NodeId::new(id).map_err(|source| NodeSpecError::InvalidNodeId {
            entry: entry.to_owned(),
            source,
        })?,
        None if alone => NodeId::new("n1").expect("n1 is a valid node id"),
        None => {
            return Err(NodeSpecError::MissingNodeId {
                entry: entry.to_owned(),
            });
        }
    };
    if !valid_host(host) {
        return Err(NodeSpecError::InvalidHost {
            entry: entry.to_owned(),
        });
    }
    let port = port
        .parse::<u16>()
        .ok()
        // Only canonical decimal: no sign, no leading zeros, not zero.
        .filter(|number| *number != 0 && number.to_string() == port)
        .ok_or_else(|| NodeSpecError::InvalidPort {
            entry: entry.to_owned(),
        })?;
    Ok(NodeAddress {
        id,
        host: host.to_owned(),
        port,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_named_nodes() {
        let spec = NodeSpec::parse("n1:127.0.0.1:11211,n2:cache.internal:11212").unwrap();
        assert_eq!(
            spec.ids(),
            [NodeId::new("n1").unwrap(), NodeId::new("n2").unwrap()]
        );
        assert_eq!(spec.nodes()[1].host(), "cache.internal");
        assert_eq!(spec.nodes()[1].port(), 11212);
        assert_eq!(
            spec.to_string(),
            "n1:127.0.0.1:11211,n2:cache.internal:11212"
        );
        assert_eq!(spec.node("n2").unwrap().address(), "cache.internal:11212");
        assert!(spec.failover().is_empty());
    }

    #[test]
    fn parses_ipv6_and_single_addresses() {
        let spec = NodeSpec::parse("n1:[::1]:11211, n2:[fe80::1]:11212").unwrap();
        assert_eq!(spec.nodes()[0].address(), "[::1]:11211");
        let single = NodeSpec::parse(" [::1]:11211 ").unwrap();
        assert_eq!(single.nodes()[0].id().as_str(), "n1");
        assert_eq!(single.nodes()[0].address(), "[::1]:11211");
        let single = NodeSpec::parse("127.0.0.1:11211").unwrap();
        assert_eq!(single.nodes()[0].address(), "127.0.0.1:11211");
    }

    #[test]
    fn errors_say_what_is_wrong() {
        let cases: &[(&str, &str)] = &[
            ("", "empty"),
            ("  ", "empty"),
            ("n1:h:1,,n2:h:2", "entry 2"),
            ("localhost", "\"localhost\" is not of the form"),
            ("n1:127.0.0.1", "\"n1:127.0.0.1\" has an invalid port"),
            ("n1:127.0.0.1:0", "invalid port"),
            ("n1:127.0.0.1:65536", "invalid port"),
            ("n1:127.0.0.1:+80", "invalid port"),
            ("n1:127.0.0.1:080", "invalid port"),
            ("n1:h:1,h:2", "\"h:2\" has no node id"),
            ("n-1:h:1", "node id must be"),
            ("n1::11211", "invalid host"),
            ("n1:bad host:11211", "invalid host"),
            ("n1:[zz]:11211", "invalid host"),
            ("n1:h:1,n1:g:2", "\"n1\" appears twice"),
            ("n1:h:1,n2:h:1", "\"h:1\" appears twice"),
        ];
        for (spec, expected) in cases {
            let message = NodeSpec::parse(spec).unwrap_err().to_string();
            assert!(message.contains(expected), "{spec:?}: {message}");
        }
    }

    #[test]
    fn failover_lists_are_checked() {
        let spec = NodeSpec::parse("n1:h:1,n2:h:2,n3:h:3").unwrap();
        let with = spec.clone().with_failover("n2, n3").unwrap();
        assert_eq!(
            with.failover(),
            [NodeId::new("n2").unwrap(), NodeId::new("n3").unwrap()]
        );
        assert!(!with.is_failover(&NodeId::new("n1").unwrap()));
        assert_eq!(spec.clone().with_failover("").unwrap().failover(), []);
        assert_eq!(
            spec.clone().with_failover("n4"),
            Err(NodeSpecError::UnknownFailoverNode { id: "n4".into() })
        );
        assert_eq!(
            spec.with_failover("n1,n2,n3"),
            Err(NodeSpecError::NoRegularNode)
        );
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(tandem_testkit::proptest_cases(256)))]
        #[test]
        fn arbitrary_specs_never_panic(spec in ".{0,80}") {
            let _ = NodeSpec::parse(&spec).and_then(|spec| spec.with_failover("n1"));
        }

        #[test]
        fn parsed_specs_print_back_to_themselves(
            spec in "(n[0-9]{1,2}:[a-z0-9.]{1,12}:[0-9]{1,5})(,n[0-9]{1,2}:[a-z0-9.]{1,12}:[0-9]{1,5}){0,3}"
        ) {
            if let Ok(parsed) = NodeSpec::parse(&spec) {
                proptest::prop_assert_eq!(parsed.to_string(), spec);
            }
        }
    }
}
