//! The node's Prometheus metrics: it owns the metric registry, decides what is counted where and
//! serves `GET /metrics` in the text exposition format on its own port (`--metrics-listen`,
//! `keel dev --metrics-port`).
//!
//! Request paths pay only atomic adds on handles resolved once ([`grpc`]: per gRPC method and
//! status code; [`HistoryLongPolls`]); Raft, storage and matching figures are read from their
//! owners when scraped ([`scrape`]); process figures come from the `prometheus` crate's process
//! collector. Nothing here takes a lock on a request path.

mod endpoint;
mod grpc;
mod scrape;

use std::net::SocketAddr;
use std::sync::Arc;

use keel_raft::GroupRegistry;
use keel_storage::Store;
use prometheus::{IntGauge, Registry};

use crate::matching::Matching;

pub use endpoint::MetricsEndpoint;
pub use grpc::GrpcMetricsLayer;

/// Why metrics could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// A metric family was refused by the registry (a name or label defined twice or invalid).
    #[error("cannot register metric: {0}")]
    Register(#[from] prometheus::Error),
    /// The metrics port could not be opened.
    #[error("cannot listen for /metrics on {addr}: {source}")]
    Listen {
        /// The address asked for.
        addr: SocketAddr,
        /// Why it could not be bound.
        #[source]
        source: std::io::Error,
    },
}

/// Every metric of one node.
pub struct NodeMetrics {
    registry: Registry,
    grpc: GrpcMetricsLayer,
    history_long_polls: IntGauge,
}

impl NodeMetrics {
    /// The node's metrics, with a handle per gRPC method served and the process's figures.
    pub fn new() -> Result<NodeMetrics, MetricsError> {
        let registry = Registry::new();
        let grpc = GrpcMetricsLayer::new(&registry, keel_proto::GRPC_METHODS)?;
        let history_long_polls = IntGauge::new(
            "keel_history_long_polls_waiting",
            "GetWorkflowExecutionHistory calls waiting for a new event on this node",
        )?;
        registry.register(Box::new(history_long_polls.clone()))?;
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        Ok(NodeMetrics {
            registry,
            grpc,
            history_long_polls,
        })
    }

    /// Adds the figures read at each scrape from this node's groups, store and matching.
    pub fn watch_node(
        &self,
        groups: &Arc<GroupRegistry>,
        store: Store,
        matching: Arc<Matching>,
    ) -> Result<(), MetricsError> {
        let collector = scrape::NodeCollector::new(groups, store, matching)?;
        self.registry.register(Box::new(collector))?;
        Ok(())
    }

    /// The layer that counts and times every gRPC request.
    pub fn grpc_layer(&self) -> GrpcMetricsLayer {
        self.grpc.clone()
    }

    /// The gauge of history long polls waiting.
    pub fn history_long_polls(&self) -> HistoryLongPolls {
        HistoryLongPolls(self.history_long_polls.clone())
    }

    /// Opens `addr` for `GET /metrics`; serve it with [`MetricsEndpoint::serve`].
    pub async fn endpoint(&self, addr: SocketAddr) -> Result<MetricsEndpoint, MetricsError> {
        MetricsEndpoint::bind(addr, self.registry.clone()).await
    }
}

/// Counts the history long polls waiting for a new event.
#[derive(Clone)]
pub struct HistoryLongPolls(IntGauge);

impl HistoryLongPolls {
    /// Counts one poll as waiting until the returned guard is dropped.
    pub fn waiting(&self) -> WaitingPoll<'_> {
        self.0.inc();
        WaitingPoll(&self.0)
    }
}

/// One waiting history long poll; stops counting when dropped.
pub struct WaitingPoll<'a>(&'a IntGauge);

impl Drop for WaitingPoll<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_history_long_poll_counts_while_its_guard_lives() {
        let metrics = NodeMetrics::new().expect("metrics");
        let polls = metrics.history_long_polls();
        let first = polls.waiting();
        let second = polls.waiting();
        assert_eq!(metrics.history_long_polls.get(), 2);
        drop(first);
        drop(second);
        assert_eq!(metrics.history_long_polls.get(), 0);
    }
}
