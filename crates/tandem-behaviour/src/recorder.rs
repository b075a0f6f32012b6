//! A store that records the operations it passes on to the fixture's store, so that a
//! case can check what a request sent to the remote tier, and when, through nothing
//! but the [`RemoteStore`] trait: "a local hit makes no operation", "the later
//! request did not wait for a timeout", "the two reads waited at the same time".

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use parking_lot::Mutex;
use tandem_core::{
    AddOutcome, CasOutcome, CasToken, Item, NodeId, NodeStatus, RemoteStore, SetItem, StoreError,
    StoreKey, Ttl, WriteItem, WriteOutcome,
};

/// One operation passed on to the store.
#[derive(Debug, Clone)]
pub(crate) struct Operation {
    /// The node it was sent to.
    pub(crate) node: NodeId,
    /// When it was passed on.
    pub(crate) started: Instant,
    /// When the store answered; `None` while it runs (or if it was dropped).
    pub(crate) ended: Option<Instant>,
    /// Whether it failed with [`StoreError::Timeout`] (any item, for a batch).
    pub(crate) timed_out: bool,
}

impl Operation {
    /// Whether the two ran at the same time for a while.
    pub(crate) fn overlaps(&self, other: &Operation) -> bool {
        let ends_after = |operation: &Operation, instant: Instant| {
            operation.ended.is_none_or(|ended| ended > instant)
        };
        ends_after(self, other.started) && ends_after(other, self.started)
    }
}

/// The fixture's store, recording every operation.
pub(crate) struct Recorder {
    inner: Arc<dyn RemoteStore>,
    log: Mutex<Vec<Operation>>,
}

impl Recorder {
    /// Records the operations sent to `inner`.
    pub(crate) fn wrap(inner: &Arc<dyn RemoteStore>) -> Arc<Recorder> {
        Arc::new(Recorder {
            inner: Arc::clone(inner),
            log: Mutex::new(Vec::new()),
        })
    }

    /// The recorder as the store a manager is built over.
    pub(crate) fn store(self: &Arc<Recorder>) -> Arc<dyn RemoteStore> {
        Arc::clone(self) as Arc<dyn RemoteStore>
    }

    /// How many operations were passed on so far.
    pub(crate) fn count(&self) -> usize {
        self.log.lock().len()
    }

    /// The operations that started at or after `from`, and ended with a timeout at or
    /// before `to`: those a request running from `from` to `to` may have waited for.
    pub(crate) fn timeouts_within(&self, from: Instant, to: Instant) -> Vec<Operation> {
        self.log
            .lock()
            .iter()
            .filter(|operation| operation.timed_out && operation.started >= from)
            .filter(|operation| operation.ended.is_some_and(|ended| ended <= to))
            .cloned()
            .collect()
    }

    async fn record<T>(
        &self,
        node: &NodeId,
        operation: impl Future<Output = T>,
        timed_out: impl FnOnce(&T) -> bool,
    ) -> T {
        let index = {
            let mut log = self.log.lock();
            log.push(Operation {
                node: node.clone(),
                started: Instant::now(),
                ended: None,
                timed_out: false,
            });
            log.len() - 1
        };
        let result = operation.await;
        let ended = Instant::now();
        let timed_out = timed_out(&result);
        let mut log = self.log.lock();
        log[index].ended = Some(ended);
        log[index].timed_out = timed_out;
        result
    }
}

fn is_timeout<T>(result: &Result<T, StoreError>) -> bool {
    matches!(result, Err(StoreError::Timeout { .. }))
}

fn any_timeout<T>(results: &[Result<T, StoreError>]) -> bool {
    results.iter().any(is_timeout)
}

#[async_trait]
impl RemoteStore for Recorder {
    async fn get(&self, node: &NodeId, key: &StoreKey) -> Result<Option<Item>, StoreError> {
        self.record(node, self.inner.get(node, key), is_timeout)
            .await
    }

    async fn set(
        &self,
        node: &NodeId,
        key: &StoreKey,
        value: &[u8],
        ttl: Ttl,
    ) -> Result<(), StoreError> {
        self.record(node, self.inner.set(node, key, value, ttl), is_timeout)
            .await
    }

    async fn set_many(&self, node: &NodeId, items: &[SetItem<'_>]) -> Vec<Result<(), StoreError>> {
        self.record(node, self.inner.set_many(node, items), |results| {
            any_timeout(results)
        })
        .await
    }

    async fn add(
        &self,
        node: &NodeId,
        key: &StoreKey,
        value: &[u8],
        ttl: Ttl,
    ) -> Result<AddOutcome, StoreError> {
        self.record(node, self.inner.add(node, key, value, ttl), is_timeout)
            .await
    }

    async fn cas(
        &self,
        node: &NodeId,
        key: &StoreKey,
        value: &[u8],
        ttl: Ttl,
        cas: CasToken,
    ) -> Result<CasOutcome, StoreError> {
        let operation = self.inner.cas(node, key, value, ttl, cas);
        self.record(node, operation, is_timeout).await
    }

    async fn write(
        &self,
        node: &NodeId,
        key: &StoreKey,
        value: &[u8],
        ttl: Ttl,
        precondition: tandem_core::Precondition,
    ) -> Result<WriteOutcome, StoreError> {
        let operation = self.inner.write(node, key, value, ttl, precondition);
        self.record(node, operation, is_timeout).await
    }

    async fn write_many(
        &self,
        node: &NodeId,
        items: &[WriteItem<'_>],
    ) -> Vec<Result<WriteOutcome, StoreError>> {
        self.record(node, self.inner.write_many(node, items), |results| {
            any_timeout(results)
        })
        .await
    }

    async fn delete(&self, node: &NodeId, key: &StoreKey) -> Result<bool, StoreError> {
        self.record(node, self.inner.delete(node, key), is_timeout)
            .await
    }

    async fn delete_if(
        &self,
        node: &NodeId,
        key: &StoreKey,
        cas: CasToken,
    ) -> Result<CasOutcome, StoreError> {
        self.record(node, self.inner.delete_if(node, key, cas), is_timeout)
            .await
    }

    async fn append(
        &self,
        node: &NodeId,
        key: &StoreKey,
        value: &[u8],
        ttl: Ttl,
    ) -> Result<(), StoreError> {
        self.record(node, self.inner.append(node, key, value, ttl), is_timeout)
            .await
    }

    async fn get_with_ttl(
        &self,
        node: &NodeId,
        key: &StoreKey,
    ) -> Result<Option<(Item, Ttl)>, StoreError> {
        self.record(node, self.inner.get_with_ttl(node, key), is_timeout)
            .await
    }

    async fn touch(&self, node: &NodeId, key: &StoreKey, ttl: Ttl) -> Result<bool, StoreError> {
        self.record(node, self.inner.touch(node, key, ttl), is_timeout)
            .await
    }

    async fn get_and_touch(
        &self,
        node: &NodeId,
        key: &StoreKey,
        ttl: Ttl,
    ) -> Result<Option<Item>, StoreError> {
        self.record(node, self.inner.get_and_touch(node, key, ttl), is_timeout)
            .await
    }

    fn nodes(&self) -> Vec<NodeId> {
        self.inner.nodes()
    }

    fn is_available(&self, node: &NodeId) -> bool {
        self.inner.is_available(node)
    }

    fn node_status(&self) -> Vec<NodeStatus> {
        self.inner.node_status()
    }

    fn max_item_size(&self) -> usize {
        self.inner.max_item_size()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn operation(started: Instant, from: u64, to: Option<u64>) -> Operation {
        Operation {
            node: NodeId::new("n1").unwrap(),
            started: started + Duration::from_millis(from),
            ended: to.map(|to| started + Duration::from_millis(to)),
            timed_out: true,
        }
    }

    #[test]
    fn operations_overlap_only_while_both_run() {
        let now = Instant::now();
        let first = operation(now, 0, Some(10));
        assert!(first.overlaps(&operation(now, 5, Some(20))));
        assert!(operation(now, 5, Some(20)).overlaps(&first));
        assert!(first.overlaps(&operation(now, 2, Some(3))));
        assert!(first.overlaps(&operation(now, 5, None)));
        // One after the other: the second started as the first ended, or later.
        assert!(!first.overlaps(&operation(now, 10, Some(20))));
        assert!(!operation(now, 10, Some(20)).overlaps(&first));
        assert!(!first.overlaps(&operation(now, 15, None)));
    }
}
