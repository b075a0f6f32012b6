//! Coalescing of concurrent reads on one node into pipelined exchanges.
//!
//! Each read (`mg`: get, get-and-touch, touch) costs memcached and the client a
//! system call or two per side when it has a connection to itself. Under load that
//! is most of a read's CPU (in the HTTP bench on a 2-core machine memcached spent
//! about 16 µs per read that way, about 7 µs with reads coalesced:
//! `benches/RESULTS.md`). So a node runs at most
//! [`MemcachedConfig::max_read_exchanges`](crate::MemcachedConfig::max_read_exchanges)
//! read exchanges at once. A read that finds one free takes it and goes out at
//! once, as before: at low load nothing waits. A read that finds them all busy is
//! queued; when an exchange ends, the reads queued meanwhile go out together in the
//! next one (in a task of their own, so that the request whose read just finished
//! is not held up by the others), pipelined on one connection.
//!
//! An exchange holds one of the node's connections ([`ConnectionLimit`]) from start
//! to end and passes it on to the batch it carries next, so a batch never waits for a
//! connection; queued reads hold none. A read that finds an exchange free but no
//! connection joins the queue if another exchange runs, and waits for a connection
//! only if none runs: then other operations hold them all, and they end (or time out)
//! without waiting for any read. So the two limits cannot deadlock.
//!
//! Invariant: reads are queued only while at least one exchange runs, and an exchange
//! that ends takes the whole queue (up to [`MAX_BATCH`]) before it is released. So a
//! queued read always has an exchange coming for it.

use std::mem;
use std::sync::Arc;
use std::time::Duration;

use memcache::exp::{AsyncMetaClient, Error as ClientError, Get, GetResult};
use parking_lot::Mutex;
use tokio::sync::oneshot;

use crate::connections::{Connection, ConnectionLimit};

/// The most reads one exchange carries; more stay queued for the next one.
pub(crate) const MAX_BATCH: usize = 128;

/// A read's answer: what the client returned for it.
pub(crate) type ReadOutcome = Result<GetResult, ClientError>;

/// The read exchanges of one node: how many are running and the reads waiting for
/// the next one.
#[derive(Debug)]
pub(crate) struct ReadPipeline {
    max_exchanges: usize,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    exchanges: usize,
    queued: Vec<Queued>,
    /// Reads that went out in an exchange shared with other reads.
    coalesced: u64,
}

#[derive(Debug)]
struct Queued {
    read: Get,
    reply: oneshot::Sender<ReadOutcome>,
}

/// What a read does: take a free exchange, wait for its answer from a shared one, or
/// wait for a connection.
enum Admission {
    /// An exchange of its own, on this connection.
    Exchange(Get, Connection),
    /// A place in the next exchange of those running.
    Queued(oneshot::Receiver<ReadOutcome>),
    /// No exchange runs and every connection is taken (by other operations): the read
    /// has to wait for a connection, then be admitted again.
    NoConnection(Get),
}

impl ReadPipeline {
    pub(crate) fn new(max_exchanges: usize) -> ReadPipeline {
        ReadPipeline {
            max_exchanges: max_exchanges.max(1),
            state: Mutex::new(State::default()),
        }
    }

    /// Reads that went out in an exchange shared with other reads, so far.
    pub(crate) fn coalesced(&self) -> u64 {
        self.state.lock().coalesced
    }

    /// Admits `read`, with the connection it waited for if it did.
    fn admit(
        &self,
        read: Get,
        connections: &ConnectionLimit,
        waited: Option<Connection>,
    ) -> Admission {
        let mut state = self.state.lock();
        if state.exchanges < self.max_exchanges {
            match waited.or_else(|| connections.try_take()) {
                Some(connection) => {
                    state.exchanges += 1;
                    return Admission::Exchange(read, connection);
                }
                None if state.exchanges == 0 => return Admission::NoConnection(read),
                None => {}
            }
        }
        let (reply, answer) = oneshot::channel();
        state.queued.push(Queued { read, reply });
        Admission::Queued(answer)
    }

    /// Ends an exchange: returns the reads queued meanwhile for the caller to send
    /// next on the same slot and `connection`, or, when none wait, frees both.
    fn end_exchange(&self, connection: &mut Option<Connection>) -> Option<Vec<Queued>> {
        let mut state = self.state.lock();
        // A read whose caller gave up (its operation timed out) is not sent.
        state.queued.retain(|queued| !queued.reply.is_closed());
        if state.queued.is_empty() {
            state.exchanges -= 1;
            // Under the lock, so that the next read admitted finds the connection
            // free along with the exchange, and does not count a wait for nothing.
            *connection = None;
            return None;
        }
        let batch = if state.queued.len() <= MAX_BATCH {
            mem::take(&mut state.queued)
        } else {
            let rest = state.queued.split_off(MAX_BATCH);
            mem::replace(&mut state.queued, rest)
        };
        if batch.len() > 1 {
            state.coalesced += batch.len() as u64;
        }
        Some(batch)
    }
}

/// Where a pipeline's exchanges run: the node's client and pipeline, shared with the
/// tasks that run queued reads.
pub(crate) trait PipelineHost: Send + Sync + 'static {
    fn client(&self, node: usize) -> &AsyncMetaClient;
    fn pipeline(&self, node: usize) -> &ReadPipeline;
    fn connections(&self, node: usize) -> &ConnectionLimit;
    /// Bounds one exchange of queued reads, so that a hung node cannot hold a slot
    /// for longer than an operation may take.
    fn exchange_timeout(&self) -> Duration;
}

/// Runs `read` on `node`, in an exchange of its own if one is free, else together
/// with the other reads that wait for one.
pub(crate) async fn read<H: PipelineHost>(host: &Arc<H>, node: usize, read: Get) -> ReadOutcome {
    let (mut read, mut waited) = (read, None);
    loop {
        match host
            .pipeline(node)
            .admit(read, host.connections(node), waited.take())
        {
            Admission::Exchange(read, connection) => {
                let slot = Slot::new(Arc::clone(host), node, connection);
                let outcome = host.client(node).run(read).await;
                drop(slot);
                return outcome;
            }
            Admission::Queued(answer) => {
                return answer.await.unwrap_or_else(|_| {
                    Err(ClientError::Io(std::io::Error::other(
                        "the read was dropped before it was sent (the runtime is shutting down)",
                    )))
                });
            }
            // Admitted again with the connection, it takes an exchange or, if others
            // took them all meanwhile, joins their queue.
            Admission::NoConnection(returned) => {
                read = returned;
                waited = Some(host.connections(node).wait().await);
            }
        }
    }
}

/// A taken exchange and its connection. Dropping it (also when the future that holds
/// it is dropped mid-exchange) passes the reads queued meanwhile on to a task, with
/// the connection, or frees both.
struct Slot<H: PipelineHost> {
    host: Arc<H>,
    node: usize,
    /// The exchange's connection; `None` once the exchange is freed (by
    /// [`Slot::next_batch`]) or passed on.
    connection: Option<Connection>,
}

impl<H: PipelineHost> Slot<H> {
    fn new(host: Arc<H>, node: usize, connection: Connection) -> Slot<H> {
        Slot {
            host,
            node,
            connection: Some(connection),
        }
    }

    /// The reads queued meanwhile, for this exchange to carry next; `None` when there
    /// are none, and the exchange and its connection are then free.
    fn next_batch(&mut self) -> Option<Vec<Queued>> {
        self.host
            .pipeline(self.node)
            .end_exchange(&mut self.connection)
    }
}

impl<H: PipelineHost> Drop for Slot<H> {
    fn drop(&mut self) {
        // Freed already (by `next_batch`).
        if self.connection.is_none() {
            return;
        }
        let Some(batch) = self.next_batch() else {
            return;
        };
        let slot = Slot {
            host: Arc::clone(&self.host),
            node: self.node,
            connection: self.connection.take(),
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(run_queued(slot, batch));
            }
            // No runtime to run them on: the queued reads fail (their senders are
            // dropped), and so do any queued meanwhile, until the exchange is free.
            Err(_) => {
                let mut slot = slot;
                let mut failed = Some(batch);
                while let Some(batch) = failed {
                    drop(batch);
                    failed = slot.next_batch();
                }
            }
        }
    }
}

/// Runs batches of queued reads on one exchange until the queue is empty. If the
/// task is dropped first (its runtime shuts down), the slot passes the queue on.
async fn run_queued<H: PipelineHost>(mut slot: Slot<H>, mut batch: Vec<Queued>) {
    loop {
        let host = &slot.host;
        exchange(host.client(slot.node), batch, host.exchange_timeout()).await;
        match slot.next_batch() {
            Some(next) => batch = next,
            None => return,
        }
    }
}

/// One pipelined exchange of `batch`; every read gets its own answer.
async fn exchange(client: &AsyncMetaClient, batch: Vec<Queued>, timeout: Duration) {
    let (reads, replies): (Vec<Get>, Vec<oneshot::Sender<ReadOutcome>>) = batch
        .into_iter()
        .map(|queued| (queued.read, queued.reply))
        .unzip();
    match tokio::time::timeout(timeout, client.run_many(reads)).await {
        Ok(Ok(outcomes)) => {
            for (reply, outcome) in replies.into_iter().zip(outcomes) {
                // A caller that gave up meanwhile no longer listens; nothing to do.
                let _ = reply.send(outcome);
            }
        }
        // The client checks every read before it sends any; the keys were checked by
        // the store, so this is not expected. The node is not at fault.
        Ok(Err(refused)) => {
            let message = format!("the client refused a pipelined read: {refused}");
            for reply in replies {
                let _ = reply.send(Err(ClientError::Rejected(message.clone())));
            }
        }
        // The store reports a timeout without the key.
        Err(_elapsed) => {
            for reply in replies {
                let _ = reply.send(Err(ClientError::Timeout { key: Vec::new() }));
            }
        }
    }
}
