//! memcached's answers in the store's terms: client errors sorted into node failures
//! and refusals, hits into items, and the commands and outcomes of writes.

use std::time::{Duration, SystemTime};

use memcache::exp::{Error as ClientError, MutationResult, MutationStatus, Set};
use tandem_core::{CasToken, Item, NodeId, Precondition, StoreError, Ttl, WriteItem, WriteOutcome};

use super::Failure;
use crate::config::MemcachedConfig;
use crate::ttl::{EXPIRY_CLOCK_SLACK, expiry};

pub(super) fn timed_out(node: &NodeId, after: Duration) -> Failure {
    let error = StoreError::Timeout {
        node: node.clone(),
        after,
    };
    Failure {
        detail: error.to_string(),
        error,
        node_failed: true,
    }
}

/// Sorts a client error into node failures (timeouts, transport errors, protocol
/// errors: the node is not usable) and refusals of one operation by a working node.
pub(super) fn classify(
    node: &NodeId,
    error: ClientError,
    timeout: Duration,
    value_size: Option<usize>,
    config: &MemcachedConfig,
) -> Failure {
    let (error, node_failed) = match error {
        // The request was written but not answered; what matters here is why.
        ClientError::Ambiguous { source, .. } => {
            return classify(node, *source, timeout, value_size, config);
        }
        ClientError::Timeout { .. } => return timed_out(node, timeout),
        ClientError::Io(error) if error.kind() == std::io::ErrorKind::TimedOut => {
            return timed_out(node, timeout);
        }
        ClientError::Io(error) => (
            StoreError::Unreachable {
                node: node.clone(),
                message: error.to_string(),
            },
            true,
        ),
        ClientError::Protocol(message) => (
            StoreError::Server {
                node: node.clone(),
                message: format!("protocol error: {message}"),
            },
            true,
        ),
        ClientError::Server(message) if message.contains("too large") => {
            if let Some(size) = value_size {
                // memcached does not say what its limit is, only that this value is
                // over it; the node runs with a smaller `-I` than configured.
                return Failure {
                    error: StoreError::TooLarge {
                        size,
                        limit: size.saturating_sub(1),
                    },
                    node_failed: false,
                    detail: format!(
                        "memcached refused a {size}-byte value as too large ({message}): \
                         its item size limit (-I) is below the configured {} bytes",
                        config.item_size_max()
                    ),
                };
            }
            (server_error(node, message), false)
        }
        ClientError::Server(message) | ClientError::Rejected(message) => {
            (server_error(node, message), false)
        }
        other => (server_error(node, other.to_string()), false),
    };
    Failure {
        detail: error.to_string(),
        error,
        node_failed,
    }
}

/// The item of a get that asked for value and CAS token; `None` on a miss.
pub(super) fn hit_item(
    node: &NodeId,
    hit: bool,
    value: Option<Vec<u8>>,
    cas: Option<u64>,
) -> Result<Option<Item>, StoreError> {
    if !hit {
        return Ok(None);
    }
    match (value, cas) {
        (Some(value), Some(cas)) => Ok(Some(Item {
            value,
            cas: CasToken(cas),
        })),
        // memcached always sends both on a hit when asked to.
        _ => Err(server_error(
            node,
            "a hit without value or CAS token".into(),
        )),
    }
}

/// The `ms` command of a conditional write, asking for the new CAS token.
pub(super) fn write_command(item: &WriteItem<'_>, now: SystemTime) -> Set {
    let set = Set::new(item.key.as_str(), item.value)
        .ttl_raw(expiry(item.ttl, now))
        .return_cas();
    match item.precondition {
        Precondition::None => set,
        Precondition::Absent => set.add(),
        Precondition::Cas(token) => set.compare_cas(token.0),
    }
}

/// What memcached's answer to a conditional write means.
pub(super) fn write_outcome(
    node: &NodeId,
    precondition: Precondition,
    result: &MutationResult,
) -> Result<WriteOutcome, StoreError> {
    match (result.status, precondition) {
        (MutationStatus::Applied, _) => Ok(WriteOutcome::Stored(result.cas.map(CasToken))),
        (MutationStatus::AlreadyExists, Precondition::Absent) => Ok(WriteOutcome::Exists),
        (MutationStatus::CasMismatch, Precondition::Cas(_)) => Ok(WriteOutcome::Conflict),
        (MutationStatus::NotFound, Precondition::Cas(_)) => Ok(WriteOutcome::NotFound),
        (status, _) => Err(unexpected(node, status, "write")),
    }
}

/// How long an item has left, from a get's `t` flag (`-1`: never expires), in the
/// caller's terms: without the [`EXPIRY_CLOCK_SLACK`] the store added when it wrote it.
pub(super) fn remaining_ttl(node: &NodeId, ttl: Option<i64>) -> Result<Ttl, StoreError> {
    match ttl {
        Some(seconds) if seconds < 0 => Ok(Ttl::Never),
        Some(seconds) => Ok(Ttl::After(
            Duration::from_secs(seconds.unsigned_abs()).saturating_sub(EXPIRY_CLOCK_SLACK),
        )),
        None => Err(server_error(node, "a hit without its remaining TTL".into())),
    }
}

pub(super) fn server_error(node: &NodeId, message: String) -> StoreError {
    StoreError::Server {
        node: node.clone(),
        message,
    }
}

pub(super) fn unexpected(node: &NodeId, status: MutationStatus, operation: &str) -> StoreError {
    server_error(node, format!("unexpected {status:?} answer to {operation}"))
}
