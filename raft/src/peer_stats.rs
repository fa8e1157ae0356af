//! Counters of the Raft messages this node sends to each peer, by kind, and of those that
//! failed (an error, or abandoned by openraft's timeout). [`CountedNetwork`] wraps a group's
//! network factory and counts around each call, so the transport itself is untouched; every
//! group of a node shares one [`PeerMessageCounters`]. Counting is a relaxed atomic add per
//! message: the peer's counters are found once per link, when openraft creates it.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use openraft::error::{
    Fatal, InstallSnapshotError, RPCError, RaftError, ReplicationClosed, StreamingError,
};
use openraft::network::{Backoff, RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    SnapshotResponse, VoteRequest, VoteResponse,
};
use openraft::{OptionalSend, Snapshot, Vote};

use crate::types::{BasicNode, KeelRaft, NodeId};

/// The kinds of Raft message a node sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum MessageKind {
    /// AppendEntries (also heartbeats).
    AppendEntries,
    /// RequestVote.
    Vote,
    /// A whole snapshot sent to a follower (one count per transfer, not per chunk).
    InstallSnapshot,
}

impl MessageKind {
    /// Every kind, in label order.
    pub const ALL: [MessageKind; 3] = [
        MessageKind::AppendEntries,
        MessageKind::Vote,
        MessageKind::InstallSnapshot,
    ];

    /// The kind's metric label.
    pub fn label(self) -> &'static str {
        match self {
            MessageKind::AppendEntries => "append_entries",
            MessageKind::Vote => "vote",
            MessageKind::InstallSnapshot => "install_snapshot",
        }
    }
}

/// A reading of the messages sent to one peer of one kind since the node started.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerMessageStats {
    /// The peer.
    pub peer: NodeId,
    /// The kind of message.
    pub kind: MessageKind,
    /// Messages sent (attempted).
    pub sent: u64,
    /// Of those, how many failed: unreachable, refused, timed out or abandoned.
    pub failed: u64,
}

/// The counters of one peer, by [`MessageKind`] (its position in [`MessageKind::ALL`]).
#[derive(Debug, Default)]
struct PeerCounters {
    sent: [AtomicU64; 3],
    failed: [AtomicU64; 3],
}

/// The message counters of every peer this node has sent to.
#[derive(Debug, Default)]
pub struct PeerMessageCounters {
    peers: Mutex<BTreeMap<NodeId, Arc<PeerCounters>>>,
}

impl PeerMessageCounters {
    fn of(&self, peer: NodeId) -> Arc<PeerCounters> {
        let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        peers.entry(peer).or_default().clone()
    }

    /// Every peer's counters now, by peer then kind.
    pub fn read(&self) -> Vec<PeerMessageStats> {
        let peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        peers
            .iter()
            .flat_map(|(peer, counters)| {
                MessageKind::ALL
                    .iter()
                    .enumerate()
                    .map(|(slot, kind)| PeerMessageStats {
                        peer: *peer,
                        kind: *kind,
                        sent: counters.sent[slot].load(Ordering::Relaxed),
                        failed: counters.failed[slot].load(Ordering::Relaxed),
                    })
            })
            .collect()
    }
}

/// A group's network factory whose links count what they send.
pub(crate) struct CountedNetwork<F> {
    inner: F,
    counters: Arc<PeerMessageCounters>,
}

impl<F> CountedNetwork<F> {
    /// Counts the messages of `inner`'s links into `counters`.
    pub(crate) fn new(inner: F, counters: Arc<PeerMessageCounters>) -> Self {
        CountedNetwork { inner, counters }
    }
}

impl<F: RaftNetworkFactory<KeelRaft>> RaftNetworkFactory<KeelRaft> for CountedNetwork<F> {
    type Network = CountedLink<F::Network>;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Self::Network {
        CountedLink {
            inner: self.inner.new_client(target, node).await,
            counters: self.counters.of(target),
        }
    }
}

/// One link, counting into its peer's counters.
pub(crate) struct CountedLink<N> {
    inner: N,
    counters: Arc<PeerCounters>,
}

/// Counts one message as sent now and as failed unless [`Attempt::succeeded`] is called before
/// it is dropped (openraft drops a call it stops waiting for).
struct Attempt<'a> {
    counters: &'a PeerCounters,
    slot: usize,
    succeeded: bool,
}

impl<'a> Attempt<'a> {
    fn start(counters: &'a PeerCounters, kind: MessageKind) -> Self {
        let slot = kind as usize;
        counters.sent[slot].fetch_add(1, Ordering::Relaxed);
        Attempt {
            counters,
            slot,
            succeeded: false,
        }
    }

    fn finish<T, E>(mut self, result: Result<T, E>) -> Result<T, E> {
        self.succeeded = result.is_ok();
        result
    }
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        if !self.succeeded {
            self.counters.failed[self.slot].fetch_add(1, Ordering::Relaxed);
        }
    }
}

type RpcResult<T, E = openraft::error::Infallible> =
    Result<T, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>>;

impl<N: RaftNetwork<KeelRaft>> RaftNetwork<KeelRaft> for CountedLink<N> {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<KeelRaft>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>> {
        let attempt = Attempt::start(&self.counters, MessageKind::AppendEntries);
        attempt.finish(self.inner.append_entries(rpc, option).await)
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<KeelRaft>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<NodeId>, InstallSnapshotError> {
        // Chunks of a transfer: the transfer is counted once, in full_snapshot.
        self.inner.install_snapshot(rpc, option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<NodeId>> {
        let attempt = Attempt::start(&self.counters, MessageKind::Vote);
        attempt.finish(self.inner.vote(rpc, option).await)
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote<NodeId>,
        snapshot: Snapshot<KeelRaft>,
        cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<NodeId>, StreamingError<KeelRaft, Fatal<NodeId>>> {
        let attempt = Attempt::start(&self.counters, MessageKind::InstallSnapshot);
        attempt.finish(
            self.inner
                .full_snapshot(vote, snapshot, cancel, option)
                .await,
        )
    }

    fn backoff(&self) -> Backoff {
        self.inner.backoff()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::error::Unreachable;

    /// How a fake peer answers.
    #[derive(Clone, Copy)]
    enum Answer {
        Ok,
        Down,
        Never,
    }

    struct FakeLink {
        answer: Answer,
    }

    #[derive(Debug, thiserror::Error)]
    #[error("fake link down")]
    struct Down;

    impl FakeLink {
        async fn answer<T>(
            &self,
            ok: T,
        ) -> Result<T, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
            match self.answer {
                Answer::Ok => Ok(ok),
                Answer::Down => Err(RPCError::Unreachable(Unreachable::new(&Down))),
                Answer::Never => std::future::pending().await,
            }
        }
    }

    impl RaftNetwork<KeelRaft> for FakeLink {
        async fn append_entries(
            &mut self,
            _rpc: AppendEntriesRequest<KeelRaft>,
            _option: RPCOption,
        ) -> RpcResult<AppendEntriesResponse<NodeId>> {
            self.answer(AppendEntriesResponse::Success).await
        }

        async fn install_snapshot(
            &mut self,
            _rpc: InstallSnapshotRequest<KeelRaft>,
            _option: RPCOption,
        ) -> RpcResult<InstallSnapshotResponse<NodeId>, InstallSnapshotError> {
            Err(RPCError::Unreachable(Unreachable::new(&Down)))
        }

        async fn vote(
            &mut self,
            rpc: VoteRequest<NodeId>,
            _option: RPCOption,
        ) -> RpcResult<VoteResponse<NodeId>> {
            self.answer(VoteResponse::new(rpc.vote, None, true)).await
        }
    }

    /// Node 2 answers, node 3 is down, node 4 never answers.
    struct FakeNetwork;

    impl RaftNetworkFactory<KeelRaft> for FakeNetwork {
        type Network = FakeLink;

        async fn new_client(&mut self, target: NodeId, _node: &BasicNode) -> FakeLink {
            let answer = match target {
                2 => Answer::Ok,
                3 => Answer::Down,
                _ => Answer::Never,
            };
            FakeLink { answer }
        }
    }

    fn option() -> RPCOption {
        RPCOption::new(std::time::Duration::from_secs(1))
    }

    fn append() -> AppendEntriesRequest<KeelRaft> {
        AppendEntriesRequest {
            vote: Vote::new(1, 1),
            prev_log_id: None,
            leader_commit: None,
            entries: Vec::new(),
        }
    }

    fn stats(counters: &PeerMessageCounters, peer: NodeId, kind: MessageKind) -> (u64, u64) {
        counters
            .read()
            .iter()
            .find(|s| s.peer == peer && s.kind == kind)
            .map_or((0, 0), |s| (s.sent, s.failed))
    }

    #[tokio::test]
    async fn messages_are_counted_per_peer_and_kind_and_failures_apart() {
        let counters = Arc::new(PeerMessageCounters::default());
        let mut network = CountedNetwork::new(FakeNetwork, counters.clone());
        let mut up = network.new_client(2, &BasicNode::new("a")).await;
        let mut down = network.new_client(3, &BasicNode::new("b")).await;
        for _ in 0..3 {
            assert!(up.append_entries(append(), option()).await.is_ok());
        }
        let vote = VoteRequest::new(Vote::new(2, 1), None);
        assert!(up.vote(vote, option()).await.is_ok());
        assert!(down.append_entries(append(), option()).await.is_err());
        assert_eq!(stats(&counters, 2, MessageKind::AppendEntries), (3, 0));
        assert_eq!(stats(&counters, 2, MessageKind::Vote), (1, 0));
        assert_eq!(stats(&counters, 2, MessageKind::InstallSnapshot), (0, 0));
        assert_eq!(stats(&counters, 3, MessageKind::AppendEntries), (1, 1));
    }

    #[tokio::test]
    async fn a_call_abandoned_before_its_answer_counts_as_failed() {
        let counters = Arc::new(PeerMessageCounters::default());
        let mut network = CountedNetwork::new(FakeNetwork, counters.clone());
        let mut silent = network.new_client(4, &BasicNode::new("c")).await;
        {
            let call = silent.append_entries(append(), option());
            futures::pin_mut!(call);
            assert!(futures::poll!(call.as_mut()).is_pending());
        }
        assert_eq!(stats(&counters, 4, MessageKind::AppendEntries), (1, 1));
    }
}
