//! [`MemcachedStore`]: the [`RemoteStore`] over real memcached nodes.

use std::fmt;
use std::future::Future;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use memcache::exp::{
    AsyncMetaClient, Delete, Error as ClientError, Get, Meta, MetaClientBuilder, MutationStatus,
    Router, Set,
};
use tandem_core::{
    AddOutcome, CasOutcome, CasToken, Item, NodeId, NodeSpec, NodeStatus, Precondition,
    RemoteStore, StoreError, StoreKey, Ttl, WriteItem, WriteOutcome,
};

use crate::config::MemcachedConfig;
use crate::connections::ConnectionLimit;
use crate::health::{NodeHealth, node_health};
use crate::pipeline::{self, PipelineHost, ReadPipeline};
use crate::ttl::expiry;
use tandem_core::NodeHealthState;

mod answers;
use answers::{
    classify, hit_item, remaining_ttl, server_error, timed_out, unexpected, write_command,
    write_outcome,
};

/// Why [`MemcachedStore::connect`] failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The configuration cannot be used.
    #[error("invalid memcached store configuration: {reason}")]
    InvalidConfig {
        /// What is wrong.
        reason: &'static str,
    },
    /// A node's address did not resolve.
    #[error("node {node}: cannot resolve {address}: {message}")]
    Resolve {
        /// The node.
        node: NodeId,
        /// The address as configured.
        address: String,
        /// What the resolver reported.
        message: String,
    },
}

/// A [`RemoteStore`] over memcached nodes, each with its own connection pool (a
/// meta-protocol client of the `memcache` crate) and health state.
///
/// Every operation goes to exactly the node it names and is bounded by one
/// [operation timeout](MemcachedConfig::with_operation_timeout). A node that fails an
/// operation (no answer in time, connection refused or broken, garbage on the wire) is
/// marked down: operations on it then fail at once with [`StoreError::NodeDown`]
/// without touching the network, while a background task probes it every
/// [probe interval](MemcachedConfig::with_probe_interval) and marks it up again as
/// soon as it answers. A refusal of one operation by a working node (for example
/// `SERVER_ERROR out of memory`) is reported as [`StoreError::Server`] and leaves the
/// node up. An answer the client cannot parse is also reported as
/// [`StoreError::Server`], but marks the node down: its connection can no longer be
/// trusted. [`health`](Self::health) reports all of it per node.
///
/// Each node has at most [`MemcachedConfig::with_max_connections`] connections (128
/// by default): an operation that finds them all taken waits for one within its
/// operation timeout, counted in [`NodeHealth::connection_waits`], instead of dialing
/// another, so that a burst cannot exhaust memcached's connection limit or the app's
/// ports.
///
/// Values longer than [`MemcachedConfig::max_value_size`] are refused with
/// [`StoreError::TooLarge`] before anything is sent. If memcached refuses a value
/// anyway (it runs with a smaller `-I` than configured), that is reported as
/// `TooLarge` as well, with `limit` one byte below the refused size, since memcached
/// does not tell its limit; the node stays up, but memcached has dropped the stored
/// copy of that key.
///
/// The conditional operations map onto the meta protocol: [`RemoteStore::write`] is
/// one `ms` (with `ME` for [`Precondition::Absent`], `C<token>` for
/// [`Precondition::Cas`], and `c` to get the new token back), and
/// [`RemoteStore::write_many`] pipelines them in one exchange like `set_many`;
/// [`RemoteStore::delete_if`] is `md` with `C<token>`; [`RemoteStore::get_with_ttl`]
/// is a read (`mg` with `t`) and shares the read exchanges. [`RemoteStore::append`]
/// is `ms MA`, and, because memcached 1.6 appends only to an existing item, an add
/// when the item is missing: one round trip for an existing item, two to create it.
/// memcached itself bounds what an append may grow an item to, by its `-I`; the
/// store reports a refusal as [`StoreError::TooLarge`] and the item stays as it was.
/// Under a short key that bound is a few hundred bytes above
/// [`max_value_size`](MemcachedConfig::max_value_size), so an appended item can end
/// up slightly longer than a value [`set`](RemoteStore::set) would accept.
///
/// The background probes run on the Tokio runtime of the operation that found the
/// node down, and end when the store is dropped.
///
/// ```no_run
/// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
/// use tandem_core::{NodeId, NodeSpec, RemoteStore, StoreKey, Ttl};
/// use tandem_memcached::{MemcachedConfig, MemcachedStore};
///
/// let spec = NodeSpec::parse("n1:127.0.0.1:11211,n2:127.0.0.1:11212")?;
/// let store = MemcachedStore::connect(&spec, MemcachedConfig::default()).await?;
/// let (n1, key) = (NodeId::new("n1")?, StoreKey::new("session:abc")?);
///
/// store.set(&n1, &key, b"bytes", Ttl::Never).await?;
/// let item = store.get(&n1, &key).await?.expect("just written");
/// assert_eq!(item.value, b"bytes");
/// for node in store.health() {
///     println!("{} at {}: up={}", node.id, node.address, node.up);
/// }
/// # Ok(())
/// # }
/// ```
pub struct MemcachedStore {
    shared: Arc<Shared>,
}

/// What the store and its probe tasks share. The probes hold it weakly, so dropping
/// the store ends them.
struct Shared {
    nodes: Vec<Node>,
    config: MemcachedConfig,
}

struct Node {
    id: NodeId,
    address: String,
    client: AsyncMetaClient,
    reads: ReadPipeline,
    connections: ConnectionLimit,
    health: NodeHealthState,
}

/// The node an operation runs on: its client, connections and read pipeline.
#[derive(Clone, Copy)]
struct Target<'a> {
    shared: &'a Arc<Shared>,
    index: usize,
}

impl<'a> Target<'a> {
    /// Runs `exchange` on the node's client on a connection of its own, waiting for
    /// one while the node's connections are all taken.
    async fn exchange<T, F>(
        self,
        exchange: impl FnOnce(&'a AsyncMetaClient) -> F,
    ) -> Result<T, ClientError>
    where
        F: Future<Output = Result<T, ClientError>>,
    {
        let node = &self.shared.nodes[self.index];
        let _connection = node.connections.take().await;
        exchange(&node.client).await
    }

    /// Runs a read (`mg`), coalesced with concurrent ones when the node's read
    /// exchanges (or its connections) are all busy.
    async fn read(self, read: Get) -> Result<memcache::exp::GetResult, ClientError> {
        pipeline::read(self.shared, self.index, read).await
    }
}

/// The router of a node's client, which has that one server: every key goes to it.
/// (The client's default router would hash each key, and the server's address, once
/// per operation to pick among servers, for nothing.)
struct OneServer;

impl Router for OneServer {
    fn route(&self, _key: &[u8], _servers: &[String]) -> usize {
        0
    }
}

/// A failed operation, classified.
struct Failure {
    error: StoreError,
    /// Whether the failure says the node is unusable, rather than that it refused
    /// this one operation.
    node_failed: bool,
    /// What to remember as the node's last error.
    detail: String,
}

impl MemcachedStore {
    /// Creates a store for the nodes of `spec`. Addresses are resolved now; connections
    /// are opened on first use, so an unreachable node is found by its first operation
    /// (and is then marked down), not here.
    pub async fn connect(
        spec: &NodeSpec,
        config: MemcachedConfig,
    ) -> Result<MemcachedStore, ConnectError> {
        if let Some(reason) = config.problem() {
            return Err(ConnectError::InvalidConfig { reason });
        }
        let mut nodes = Vec::with_capacity(spec.nodes().len());
        for node in spec.nodes() {
            let address = node.address();
            // No timeouts of the client's own: every exchange with it runs under the
            // store's timeout (`call`, a pipelined read's exchange, a probe), which
            // starts first, so it always fires first; dropping the client's future
            // then drops its connection mid-exchange rather than pooling it, as the
            // client's own timeout would. Set here, they only cost three timers per
            // exchange (about 1,000 instructions of a read's ~14,000). The store
            // bounds the connections itself (`ConnectionLimit`, which counts the
            // waits); the client's cap is a backstop, and bounds the probes.
            let client = MetaClientBuilder::new()
                .router(OneServer)
                .connect_timeout(None)
                .io_timeout(None)
                .max_idle(config.max_idle_connections())
                .max_connections(Some(config.max_connections()))
                .connect_async(address.as_str())
                .await
                .map_err(|error| ConnectError::Resolve {
                    node: node.id().clone(),
                    address: address.clone(),
                    message: error.to_string(),
                })?;
            nodes.push(Node {
                id: node.id().clone(),
                address,
                client,
                reads: ReadPipeline::new(config.max_read_exchanges()),
                connections: ConnectionLimit::new(config.max_connections()),
                health: NodeHealthState::new(),
            });
        }
        Ok(MemcachedStore {
            shared: Arc::new(Shared { nodes, config }),
        })
    }

    /// The health of every node, in configuration order.
    pub fn health(&self) -> Vec<NodeHealth> {
        self.shared.nodes.iter().map(Node::health).collect()
    }

    /// The health of one node; `None` if the store has no such node.
    pub fn node_health(&self, node: &NodeId) -> Option<NodeHealth> {
        self.shared.node(node).ok().map(|(_, node)| node.health())
    }

    /// The configuration the store runs with.
    pub fn config(&self) -> &MemcachedConfig {
        &self.shared.config
    }

    /// Refuses a value longer than the configured limit before anything is sent.
    fn check_size(&self, size: usize) -> Result<(), StoreError> {
        let limit = self.shared.config.max_value_size();
        if size > limit {
            return Err(StoreError::TooLarge { size, limit });
        }
        Ok(())
    }

    /// Runs one client operation on `node` under the store's rules: unknown nodes and
    /// oversized values are refused, a down node is not contacted, the operation is
    /// bounded by the operation timeout (waiting for a connection included), and
    /// failures update the node's health.
    async fn call<'a, T, F>(
        &'a self,
        node: &NodeId,
        value_size: Option<usize>,
        operation: impl FnOnce(Target<'a>) -> F,
    ) -> Result<T, StoreError>
    where
        F: Future<Output = Result<T, ClientError>> + 'a,
    {
        let shared = &self.shared;
        let (index, node) = shared.node(node)?;
        if let Some(size) = value_size {
            self.check_size(size)?;
        }
        if !node.health.is_up() {
            node.health.count_refused();
            return Err(StoreError::NodeDown {
                node: node.id.clone(),
            });
        }
        node.health.count_operation();
        let timeout = shared.config.operation_timeout();
        let started = Instant::now();
        let target = Target { shared, index };
        let failure = match tokio::time::timeout(timeout, operation(target)).await {
            Ok(Ok(value)) => {
                node.health.record_latency(started.elapsed());
                return Ok(value);
            }
            Ok(Err(error)) => classify(&node.id, error, timeout, value_size, &shared.config),
            Err(_elapsed) => timed_out(&node.id, timeout),
        };
        if failure.node_failed && node.health.mark_down() {
            tracing::warn!(node = %node.id, address = %node.address, error = %failure.detail, "memcached node marked down");
            spawn_probe(shared, index);
        }
        node.health.count_failure(failure.detail);
        Err(failure.error)
    }
}

impl MemcachedStore {
    /// The writes of `items` (each within the size limit) in one pipelined exchange:
    /// one result per item, in order.
    async fn write_pipelined<'i>(
        &self,
        node: &NodeId,
        items: impl ExactSizeIterator<Item = &'i WriteItem<'i>>,
    ) -> Vec<Result<WriteOutcome, StoreError>> {
        let now = SystemTime::now();
        let mut preconditions = Vec::with_capacity(items.len());
        let commands: Vec<Set> = items
            .map(|item| {
                preconditions.push(item.precondition);
                write_command(item, now)
            })
            .collect();
        let outcome = self
            .call(node, None, |target| {
                target.exchange(|client| async move {
                    let outputs = client.run_many(commands).await?;
                    outputs.into_iter().collect::<Result<Vec<_>, _>>()
                })
            })
            .await;
        match outcome {
            Ok(outputs) => {
                let mut results: Vec<_> = preconditions
                    .iter()
                    .zip(&outputs)
                    .map(|(&precondition, output)| write_outcome(node, precondition, output))
                    .collect();
                // The client answers every command of a batch; should it not, the
                // unanswered ones failed.
                results.resize_with(preconditions.len(), || {
                    Err(server_error(node, "no answer to a pipelined write".into()))
                });
                results
            }
            Err(error) => vec![Err(error); preconditions.len()],
        }
    }
}

impl PipelineHost for Shared {
    fn client(&self, node: usize) -> &AsyncMetaClient {
        &self.nodes[node].client
    }

    fn pipeline(&self, node: usize) -> &ReadPipeline {
        &self.nodes[node].reads
    }

    fn connections(&self, node: usize) -> &ConnectionLimit {
        &self.nodes[node].connections
    }

    fn exchange_timeout(&self) -> Duration {
        self.config.operation_timeout()
    }
}

impl Shared {
    fn node(&self, id: &NodeId) -> Result<(usize, &Node), StoreError> {
        self.nodes
            .iter()
            .enumerate()
            .find(|(_, node)| node.id == *id)
            .ok_or_else(|| StoreError::UnknownNode {
                node: id.to_string(),
            })
    }

    /// One probe of a down node: a no-op round trip within the operation timeout.
    /// Returns whether the node answered (and is marked up).
    async fn probe(&self, index: usize) -> bool {
        let node = &self.nodes[index];
        let timeout = self.config.operation_timeout();
        let failure = match tokio::time::timeout(timeout, node.client.noop()).await {
            Ok(Ok(())) => {
                if node.health.mark_up() {
                    tracing::info!(node = %node.id, address = %node.address, "memcached node answers again; marked up");
                }
                return true;
            }
            Ok(Err(error)) => classify(&node.id, error, timeout, None, &self.config),
            Err(_elapsed) => timed_out(&node.id, timeout),
        };
        node.health
            .remember_error(format!("probe failed: {}", failure.detail));
        false
    }
}

impl Node {
    fn health(&self) -> NodeHealth {
        node_health(
            &self.health,
            &self.id,
            &self.address,
            self.reads.coalesced(),
            self.connections.waits(),
        )
    }
}

/// Probes node `index` every probe interval until it answers or the store is gone.
/// Started once per down transition, so a node has at most one probe task.
fn spawn_probe(shared: &Arc<Shared>, index: usize) {
    let store: Weak<Shared> = Arc::downgrade(shared);
    let interval = shared.config.probe_interval();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(interval).await;
            let Some(shared) = store.upgrade() else {
                return;
            };
            if shared.probe(index).await {
                return;
            }
        }
    });
}

#[async_trait]
impl RemoteStore for MemcachedStore {
    async fn get(&self, node: &NodeId, key: &StoreKey) -> Result<Option<Item>, StoreError> {
        let result = self
            .call(node, None, |target| {
                target.read(Get::new(key.as_str()).meta(Meta::NONE.cas()))
            })
            .await?;
        hit_item(node, result.hit(), result.value, result.item.cas)
    }

    async fn set(
        &self,
        node: &NodeId,
        key: &StoreKey,
        value: &[u8],
        ttl: Ttl,
    ) -> Result<(), StoreError> {
        let expiry = expiry(ttl, SystemTime::now());
        let result = self
            .call(node, Some(value.len()), |target| {
                target.exchange(|client| client.set(key.as_str(), value).ttl_raw(expiry).send())
            })
            .await?;
        match result.status {
            MutationStatus::Applied => Ok(()),
            status => Err(unexpected(node, status, "set")),
        }
    }

    async fn add(
        &self,
        node: &NodeId,
        key: &StoreKey,
        value: &[u8],
        ttl: Ttl,
    ) -> Result<AddOutcome, StoreError> {
        let expiry = expiry(ttl, SystemTime::now());
        let result = self
            .call(node, Some(value.len()), |target| {
                target
                    .exchange(|client| client.set(key.as_str(), value).ttl_raw(expiry).add().send())
            })
            .await?;
        match result.status {
            MutationStatus::Applied => Ok(AddOutcome::Stored),
            MutationStatus::AlreadyExists => Ok(AddOutcome::Exists),
            status => Err(unexpected(node, status, "add")),
        }
    }

    async fn cas(
        &self,
        node: &NodeId,
        key: &StoreKey,
        value: &[u8],
        ttl: Ttl,
        cas: CasToken,
    ) -> Result<CasOutcome, StoreError> {
        let expiry = expiry(ttl, SystemTime::now());
        let result = self
            .call(node, Some(value.len()), |target| {
                target.exchange(|client| {
                    client
                        .set(key.as_str(), value)
                        .ttl_raw(expiry)
                        .compare_cas(cas.0)
                        .send()
                })
            })
            .await?;
        match result.status {
            MutationStatus::Applied => Ok(CasOutcome::Stored),
            MutationStatus::CasMismatch => Ok(CasOutcome::Conflict),
            MutationStatus::NotFound => Ok(CasOutcome::NotFound),
            status => Err(unexpected(node, status, "cas")),
        }
    }

    async fn write(
        &self,
        node: &NodeId,
        key: &StoreKey,
        value: &[u8],
        ttl: Ttl,
        precondition: Precondition,
    ) -> Result<WriteOutcome, StoreError> {
        let item = WriteItem {
            key,
            value,
            ttl,
            precondition,
        };
        let command = write_command(&item, SystemTime::now());
        let result = self
            .call(node, Some(value.len()), |target| {
                target.exchange(|client| client.run(command))
            })
            .await?;
        write_outcome(node, precondition, &result)
    }

    async fn write_many(
        &self,
        node: &NodeId,
        items: &[WriteItem<'_>],
    ) -> Vec<Result<WriteOutcome, StoreError>> {
        // Oversized items are refused alone, the rest go out together (`set_many` too,
        // through the trait's default).
        let limit = self.shared.config.max_value_size();
        if items.iter().all(|item| item.value.len() <= limit) {
            // The usual case: every item is sent, and the answers are the results.
            return match items {
                [] => Vec::new(),
                [item] => vec![
                    self.write(node, item.key, item.value, item.ttl, item.precondition)
                        .await,
                ],
                _ => self.write_pipelined(node, items.iter()).await,
            };
        }
        let mut results: Vec<Option<Result<WriteOutcome, StoreError>>> = items
            .iter()
            .map(|item| self.check_size(item.value.len()).err().map(Err))
            .collect();
        let sendable: Vec<usize> = (0..items.len())
            .filter(|&index| results[index].is_none())
            .collect();
        if let [index] = sendable[..] {
            let item = &items[index];
            results[index] = Some(
                self.write(node, item.key, item.value, item.ttl, item.precondition)
                    .await,
            );
        } else if !sendable.is_empty() {
            let outcomes = self
                .write_pipelined(node, sendable.iter().map(|&index| &items[index]))
                .await;
            for (&index, outcome) in sendable.iter().zip(outcomes) {
                results[index] = Some(outcome);
            }
        }
        results
            .into_iter()
            .map(|result| {
                result.unwrap_or_else(|| {
                    Err(server_error(node, "no answer to a pipelined write".into()))
                })
            })
            .collect()
    }

    async fn delete_if(
        &self,
        node: &NodeId,
        key: &StoreKey,
        cas: CasToken,
    ) -> Result<CasOutcome, StoreError> {
        let result = self
            .call(node, None, |target| {
                target.exchange(|client| client.run(Delete::new(key.as_str()).compare_cas(cas.0)))
            })
            .await?;
        match result.status {
            MutationStatus::Applied => Ok(CasOutcome::Stored),
            MutationStatus::CasMismatch => Ok(CasOutcome::Conflict),
            MutationStatus::NotFound => Ok(CasOutcome::NotFound),
            status => Err(unexpected(node, status, "conditional delete")),
        }
    }

    async fn append(
        &self,
        node: &NodeId,
        key: &StoreKey,
        value: &[u8],
        ttl: Ttl,
    ) -> Result<(), StoreError> {
        // memcached 1.6 appends only to an existing item, and answers "not stored"
        // alike for a missing item and for one the value would grow past its item
        // size limit (leaving it as it was). So: append; if not stored, add; if the
        // add finds the item, read its size: too full is `TooLarge`, else another
        // writer created it in between and the append is tried again. Each step is
        // one round trip; the loop ends by the third turn.
        let limit = self.shared.config.max_value_size();
        for _ in 0..3 {
            let appended = self
                .call(node, Some(value.len()), |target| {
                    target.exchange(|client| client.run(Set::new(key.as_str(), value).append()))
                })
                .await?;
            match appended.status {
                MutationStatus::Applied => return Ok(()),
                MutationStatus::NotFound => {}
                status => return Err(unexpected(node, status, "append")),
            }
            match self.add(node, key, value, ttl).await? {
                AddOutcome::Stored => return Ok(()),
                AddOutcome::Exists => {}
            }
            let current = self
                .call(node, None, |target| {
                    target.read(
                        Get::new(key.as_str())
                            .without_value()
                            .meta(Meta::NONE.size()),
                    )
                })
                .await?;
            if let (true, Some(current)) = (current.hit(), current.item.size) {
                let size = usize::try_from(current)
                    .unwrap_or(usize::MAX)
                    .saturating_add(value.len());
                if size > limit {
                    return Err(StoreError::TooLarge { size, limit });
                }
            }
        }
        Err(server_error(
            node,
            "append: not stored three times, though the item exists and would fit \
             (does memcached run with a smaller -I than configured?)"
                .into(),
        ))
    }

    async fn get_with_ttl(
        &self,
        node: &NodeId,
        key: &StoreKey,
    ) -> Result<Option<(Item, Ttl)>, StoreError> {
        let result = self
            .call(node, None, |target| {
                target.read(Get::new(key.as_str()).meta(Meta::NONE.cas().ttl()))
            })
            .await?;
        let ttl = result.item.ttl;
        match hit_item(node, result.hit(), result.value, result.item.cas)? {
            Some(item) => Ok(Some((item, remaining_ttl(node, ttl)?))),
            None => Ok(None),
        }
    }

    async fn delete(&self, node: &NodeId, key: &StoreKey) -> Result<bool, StoreError> {
        let result = self
            .call(node, None, |target| {
                target.exchange(|client| client.delete(key.as_str()).send())
            })
            .await?;
        match result.status {
            MutationStatus::Applied => Ok(true),
            MutationStatus::NotFound => Ok(false),
            status => Err(unexpected(node, status, "delete")),
        }
    }

    async fn touch(&self, node: &NodeId, key: &StoreKey, ttl: Ttl) -> Result<bool, StoreError> {
        let expiry = expiry(ttl, SystemTime::now());
        let result = self
            .call(node, None, |target| {
                target.read(Get::new(key.as_str()).without_value().touch_raw(expiry))
            })
            .await?;
        Ok(result.hit())
    }

    async fn get_and_touch(
        &self,
        node: &NodeId,
        key: &StoreKey,
        ttl: Ttl,
    ) -> Result<Option<Item>, StoreError> {
        let expiry = expiry(ttl, SystemTime::now());
        let result = self
            .call(node, None, |target| {
                target.read(
                    Get::new(key.as_str())
                        .touch_raw(expiry)
                        .meta(Meta::NONE.cas()),
                )
            })
            .await?;
        hit_item(node, result.hit(), result.value, result.item.cas)
    }

    fn nodes(&self) -> Vec<NodeId> {
        self.shared
            .nodes
            .iter()
            .map(|node| node.id.clone())
            .collect()
    }

    fn is_available(&self, node: &NodeId) -> bool {
        self.shared
            .node(node)
            .is_ok_and(|(_, node)| node.health.is_up())
    }

    fn max_item_size(&self) -> usize {
        self.shared.config.max_value_size()
    }

    fn node_status(&self) -> Vec<NodeStatus> {
        self.health()
            .into_iter()
            .map(|health| {
                let mut status = NodeStatus::up_or_down(health.id, health.up);
                status.address = Some(health.address);
                status.down_since = health.down_since;
                status.last_error = health.last_error;
                status.operations = health.operations;
                status.failures = health.failures;
                status.down_transitions = health.marked_down;
                status.mean_latency = health.mean_latency;
                status.coalesced_reads = health.coalesced_reads;
                status.connection_waits = health.connection_waits;
                status
            })
            .collect()
    }
}

impl fmt::Debug for MemcachedStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemcachedStore")
            .field("nodes", &self.health())
            .field("config", &self.shared.config)
            .finish()
    }
}
