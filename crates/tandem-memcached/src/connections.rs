//! The bound on the connections to one node.
//!
//! Without a bound, every operation that finds no idle connection dials one more, so
//! a burst of operations (or a slow node, which makes them pile up) opens as many
//! connections as there are operations in flight. memcached's connection limit (`-c`,
//! shared by every client) or the app's ephemeral ports then run out, and the node
//! fails for everyone. So each node has
//! [`MemcachedConfig::max_connections`](crate::MemcachedConfig::max_connections)
//! permits, and every exchange with it holds one while it runs: an operation of its
//! own, or a pipelined read exchange. The client's own connection cap is set to the
//! same number as a backstop.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The right to hold one connection to a node; dropping it lets the next exchange
/// have one.
pub(crate) type Connection = OwnedSemaphorePermit;

/// The connection permits of one node, and how often an operation had to wait for one.
#[derive(Debug)]
pub(crate) struct ConnectionLimit {
    permits: Arc<Semaphore>,
    waits: AtomicU64,
}

impl ConnectionLimit {
    pub(crate) fn new(max_connections: usize) -> ConnectionLimit {
        ConnectionLimit {
            // Beyond the semaphore's maximum the bound makes no difference anyway.
            permits: Arc::new(Semaphore::new(max_connections.min(Semaphore::MAX_PERMITS))),
            waits: AtomicU64::new(0),
        }
    }

    /// A connection if one is free now.
    pub(crate) fn try_take(&self) -> Option<Connection> {
        Arc::clone(&self.permits).try_acquire_owned().ok()
    }

    /// A connection, waiting for one if all are taken. The caller bounds the wait
    /// (by its operation timeout).
    pub(crate) async fn take(&self) -> Connection {
        match self.try_take() {
            Some(connection) => connection,
            None => self.wait().await,
        }
    }

    /// Waits for a connection, counting the wait; for a caller that found them all
    /// taken. Waiters are served in the order they came.
    pub(crate) async fn wait(&self) -> Connection {
        self.waits.fetch_add(1, Ordering::Relaxed);
        Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .expect("a connection limit's semaphore is never closed")
    }

    /// How many operations had to wait for a connection so far.
    pub(crate) fn waits(&self) -> u64 {
        self.waits.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn takes_wait_for_a_free_connection_and_are_counted() {
        let limit = Arc::new(ConnectionLimit::new(1));
        let first = limit.take().await;
        assert!(limit.try_take().is_none());
        assert_eq!(limit.waits(), 0);

        let waiter = tokio::spawn({
            let limit = Arc::clone(&limit);
            async move {
                let _second = limit.take().await;
            }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(
            !waiter.is_finished(),
            "got a connection while none was free"
        );
        assert_eq!(limit.waits(), 1);
        drop(first);
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("the waiter gets the freed connection")
            .unwrap();
        assert!(limit.try_take().is_some());
        assert_eq!(limit.waits(), 1);
    }
}
