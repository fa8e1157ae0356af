//! Forwarding between nodes: a node that does not lead a shard submits the shard's ops to the
//! node that does (`keel.shard.v1.ShardForwarding/SubmitStream`, one message stream per peer),
//! and before a read asks the leader
//! for its applied index and waits until its own replica has applied that far (`ReadIndex`), so
//! any node serves any request.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use keel_proto::shard::shard_forwarding_client::ShardForwardingClient;
use keel_proto::shard::shard_forwarding_server::ShardForwarding;
use keel_proto::shard::{
    OfferReply, OfferRequest, ReadIndexReply, ReadIndexRequest, SubmitReply, SubmitRequest,
    SubmitStreamReply, SubmitStreamRequest,
};
use keel_raft::peer_stream::{answer_each, refusal, refused, Answers, PeerStream, StreamError};
use keel_raft::{ShardGroup, TransportStreams};
use tonic::transport::Channel;
use tonic::{Request, Response, Status, Streaming};

use super::{Local, Op, OpResult, Shard, ShardError};
use crate::matching::{MatchTask, Matching, QueueKey, RunTask};

/// Longest a forwarded op or read-index call waits for the leader's answer (an op's outcome is
/// then unknown, as for any timeout).
const FORWARD_TIMEOUT: Duration = Duration::from_secs(30);

/// What became of a forwarded op.
pub(super) enum Forwarded {
    /// The leader answered, or may have run it (an unknown outcome is an Unavailable error).
    Answered(Result<OpResult, ShardError>),
    /// It never reached a leader (none known, or no connection to it): safe to send again.
    NotSent(ShardError),
}

/// The stream that carries the ops a node forwards to one peer.
type SubmitStream = PeerStream<SubmitStreamRequest, SubmitStreamReply>;

/// Clients of the other nodes, and the streams of ops forwarded to them, by address.
#[derive(Default)]
pub struct PeerClients {
    clients: Mutex<HashMap<String, ShardForwardingClient<Channel>>>,
    submit_streams: Mutex<HashMap<String, Arc<SubmitStream>>>,
}

impl PeerClients {
    /// The stream of ops forwarded to the peer at `address`, opened anew if the last one ended.
    fn submit_stream(&self, address: &str) -> Result<Arc<SubmitStream>, String> {
        let mut streams = self
            .submit_streams
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(stream) = streams.get(address).filter(|s| !s.has_ended()) {
            return Ok(stream.clone());
        }
        let mut client = self.client(address)?;
        let stream = Arc::new(PeerStream::open(
            |outgoing| async move { client.submit_stream(outgoing).await },
            |reply: &SubmitStreamReply| reply.id,
        ));
        streams.insert(address.to_string(), stream.clone());
        Ok(stream)
    }

    fn client(&self, address: &str) -> Result<ShardForwardingClient<Channel>, String> {
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(client) = clients.get(address) {
            return Ok(client.clone());
        }
        let channel = Channel::from_shared(format!("http://{address}"))
            .map_err(|e| format!("bad peer address {address:?}: {e}"))?
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_secs(2))
            .connect_lazy();
        let client = ShardForwardingClient::new(channel)
            .max_decoding_message_size(128 << 20)
            .max_encoding_message_size(128 << 20);
        clients.insert(address.to_string(), client.clone());
        Ok(client)
    }
}

/// The address of `group`'s leader when another node leads it; else why there is none.
fn remote_leader(group: &ShardGroup) -> Result<String, String> {
    match group.leader_address() {
        None => Err("it has no leader right now; retry".into()),
        Some((leader, _)) if leader == group.node_id() => {
            Err("its leadership is changing on this node; retry".into())
        }
        Some((_, Some(address))) => Ok(address),
        Some((leader, None)) => Err(format!("its leader, node {leader}, has no address")),
    }
}

/// Waits until this node's replica of group `group_id` has applied everything committed before
/// the call: on the leader by confirming its leadership, on a follower by asking the leader for
/// its read index (`ReadIndex`) and waiting to apply that far. Errors say why, for a person.
pub async fn read_barrier(
    group: &ShardGroup,
    group_id: u64,
    peers: &PeerClients,
) -> Result<(), String> {
    if group.is_leader() {
        return group.ensure_linearizable().await.map_err(|e| e.to_string());
    }
    let address = remote_leader(group)?;
    let mut client = peers.client(&address)?;
    let index = tokio::time::timeout(
        FORWARD_TIMEOUT,
        client.read_index(ReadIndexRequest { shard: group_id }),
    )
    .await
    .map_err(|_| format!("its leader at {address} did not answer"))?
    .map_err(|status| {
        format!(
            "its leader at {address} did not confirm a read: {}",
            status.message()
        )
    })?
    .into_inner()
    .applied_index;
    applied_through(group, index).await
}

/// Waits until this node's replica of `group` has applied the log up to `index`.
async fn applied_through(group: &ShardGroup, index: u64) -> Result<(), String> {
    group
        .wait_for(FORWARD_TIMEOUT, |m| {
            (m.last_applied.map_or(0, |l| l.index) >= index).then_some(())
        })
        .await
        .ok_or_else(|| {
            format!("this replica did not apply up to the leader's index {index} in time")
        })
}

impl Shard {
    /// The address of this shard's leader when another node leads it.
    fn remote_leader(&self) -> Result<String, ShardError> {
        remote_leader(&self.group).map_err(|reason| self.unavailable(reason))
    }

    /// Submits `op` to the node that leads this shard.
    pub(super) async fn forward(
        &self,
        namespace_id: &str,
        workflow_id: &str,
        op: &Op,
    ) -> Forwarded {
        let address = match self.remote_leader() {
            Ok(address) => address,
            Err(error) => return Forwarded::NotSent(error),
        };
        let stream = match self.context.peers.submit_stream(&address) {
            Ok(stream) => stream,
            Err(reason) => return Forwarded::NotSent(self.unavailable(reason)),
        };
        match self
            .send(&stream, &address, namespace_id, workflow_id, op)
            .await
        {
            Err(StreamError::Unsent(status)) => Forwarded::NotSent(self.unavailable(format!(
                "its leader at {address} cannot be reached ({})",
                status.message()
            ))),
            Err(StreamError::Unanswered(status)) => {
                Forwarded::Answered(Err(self.unavailable(format!(
                    "forwarding to its leader at {address} failed ({}); the outcome is unknown",
                    status.message()
                ))))
            }
            Ok(forwarded) => forwarded,
        }
    }

    /// Sends one op to `address` over `stream`; why not if it got no answer.
    async fn send(
        &self,
        stream: &SubmitStream,
        address: &str,
        namespace_id: &str,
        workflow_id: &str,
        op: &Op,
    ) -> Result<Forwarded, StreamError> {
        let op = match bincode::serialize(op) {
            Ok(op) => op,
            Err(e) => {
                return Ok(Forwarded::Answered(Err(
                    self.unavailable(format!("cannot encode the request: {e}"))
                )))
            }
        };
        let request = SubmitRequest {
            shard: self.id,
            namespace_id: namespace_id.to_string(),
            workflow_id: workflow_id.to_string(),
            op,
        };
        let call = stream.call(|id| SubmitStreamRequest {
            id,
            request: Some(request),
        });
        let answer = tokio::time::timeout(FORWARD_TIMEOUT, call)
            .await
            .map_err(|_| {
                StreamError::Unanswered(Status::deadline_exceeded(format!(
                    "no answer within {FORWARD_TIMEOUT:?}"
                )))
            })??;
        refused(answer.refused_code, answer.refused_message).map_err(StreamError::Unanswered)?;
        let reply = answer.reply.unwrap_or_default();
        let result = bincode::deserialize::<Result<OpResult, ShardError>>(&reply.result)
            .unwrap_or_else(|e| {
                Err(self.unavailable(format!(
                    "undecodable answer from {address}: {e}; the outcome is unknown"
                )))
            });
        self.forwarded_through
            .fetch_max(reply.applied_index, Ordering::AcqRel);
        Ok(match result {
            Err(error) if reply.not_sent => Forwarded::NotSent(error),
            result => Forwarded::Answered(result),
        })
    }

    /// Waits until this replica has applied the log up to `index`.
    pub(super) async fn await_applied(&self, index: u64) -> Result<(), ShardError> {
        applied_through(&self.group, index)
            .await
            .map_err(|reason| self.unavailable(reason))
    }
}

/// How often a shard leader tries to hand a batch of tasks to the matching node before it
/// leaves them to the next re-offer (when the matching node changes).
const OFFER_ATTEMPTS: u32 = 5;

/// Hands `tasks` to matching: this node's when it runs matching, else the matching node's
/// (in the background, retried with backoff).
pub(super) fn offer_tasks(shard: &Shard, tasks: Vec<(QueueKey, RunTask)>) {
    if tasks.is_empty() {
        return;
    }
    let context = &shard.context;
    let address = match context.owner.remote() {
        Ok(None) => {
            for (key, task) in tasks {
                context.matching.offer(key, MatchTask::Run(task));
            }
            return;
        }
        Ok(Some(address)) => address,
        Err(reason) => {
            // No matching node now: when one is elected, every shard leader offers again.
            tracing::debug!(shard = shard.id, %reason, "tasks not offered");
            return;
        }
    };
    let body = match bincode::serialize(&tasks) {
        Ok(body) => body,
        Err(error) => {
            tracing::error!(shard = shard.id, %error, "cannot encode task offers");
            return;
        }
    };
    let client = context.peers.client(&address);
    let shard_id = shard.id;
    tokio::spawn(async move {
        let Ok(mut client) = client else { return };
        let mut backoff = Duration::from_millis(50);
        for attempt in 1..=OFFER_ATTEMPTS {
            let sent = tokio::time::timeout(
                FORWARD_TIMEOUT,
                client.offer(OfferRequest {
                    tasks: body.clone(),
                }),
            )
            .await;
            match sent {
                Ok(Ok(_)) => return,
                Ok(Err(status)) if attempt == OFFER_ATTEMPTS => {
                    tracing::warn!(shard = shard_id, %address, error = %status.message(), "task offers not delivered; they are offered again when the matching node changes");
                }
                _ => {}
            }
            tokio::time::sleep(backoff).await;
            backoff *= 2;
        }
    });
}

/// The forwarding service of one node.
pub struct ShardForwardingService {
    /// The node's shards, at index shard-1.
    pub shards: Vec<Weak<Shard>>,
    /// The metadata group (0), for read indexes of namespace lookups.
    pub metadata: ShardGroup,
    /// The node's matching (offers from shard leaders).
    pub matching: Arc<Matching>,
    /// Ends the submit streams this service answers.
    pub streams: TransportStreams,
}

/// Shard `id` of `shards` (the node's shards, at index shard-1).
fn hosted_shard(shards: &[Weak<Shard>], id: u64) -> Result<Arc<Shard>, Status> {
    usize::try_from(id)
        .ok()
        .and_then(|i| i.checked_sub(1))
        .and_then(|i| shards.get(i))
        .and_then(Weak::upgrade)
        .ok_or_else(|| Status::not_found(format!("shard {id} is not hosted on this node")))
}

/// Runs a forwarded op on this node's writer of its shard.
async fn submit_here(shards: &[Weak<Shard>], r: SubmitRequest) -> Result<SubmitReply, Status> {
    let shard = hosted_shard(shards, r.shard)?;
    let op: Op = bincode::deserialize(&r.op)
        .map_err(|e| Status::invalid_argument(format!("undecodable forwarded op: {e}")))?;
    // Only this node's own writer: a forwarded op is never forwarded again.
    let (result, not_sent) = match shard
        .submit_local(&r.namespace_id, &r.workflow_id, op)
        .await
    {
        Local::Answered(result) => (result, false),
        Local::NotLeading(_, error) => (Err(error), true),
    };
    // Read after the answer: the writer records the index before it answers.
    let applied_index = shard.answered_through.load(Ordering::Acquire);
    let result = bincode::serialize(&result)
        .map_err(|e| Status::internal(format!("cannot encode the result: {e}")))?;
    Ok(SubmitReply {
        result,
        applied_index,
        not_sent,
    })
}

/// Answers one op of a peer's submit stream.
async fn answer_submit(shards: &[Weak<Shard>], message: SubmitStreamRequest) -> SubmitStreamReply {
    let id = message.id;
    let request = message
        .request
        .ok_or_else(|| Status::invalid_argument("stream message without a request"));
    let reply = match request {
        Ok(request) => submit_here(shards, request).await,
        Err(status) => Err(status),
    };
    match reply {
        Ok(reply) => SubmitStreamReply {
            id,
            reply: Some(reply),
            ..SubmitStreamReply::default()
        },
        Err(status) => {
            let (refused_code, refused_message) = refusal(&status);
            SubmitStreamReply {
                id,
                refused_code,
                refused_message,
                ..SubmitStreamReply::default()
            }
        }
    }
}

#[tonic::async_trait]
impl ShardForwarding for ShardForwardingService {
    async fn submit(
        &self,
        request: Request<SubmitRequest>,
    ) -> Result<Response<SubmitReply>, Status> {
        submit_here(&self.shards, request.into_inner())
            .await
            .map(Response::new)
    }

    type SubmitStreamStream = Answers<SubmitStreamReply>;

    async fn submit_stream(
        &self,
        request: Request<Streaming<SubmitStreamRequest>>,
    ) -> Result<Response<Answers<SubmitStreamReply>>, Status> {
        let shards: Arc<[Weak<Shard>]> = self.shards.clone().into();
        let held = shards.clone();
        Ok(Response::new(answer_each(
            request.into_inner(),
            self.streams.closing(),
            move || held.iter().all(|shard| shard.strong_count() == 0),
            move |message| {
                let shards = shards.clone();
                async move { answer_submit(&shards, message).await }
            },
        )))
    }

    async fn offer(&self, request: Request<OfferRequest>) -> Result<Response<OfferReply>, Status> {
        let tasks: Vec<(QueueKey, RunTask)> = bincode::deserialize(&request.into_inner().tasks)
            .map_err(|e| Status::invalid_argument(format!("undecodable task offers: {e}")))?;
        for (key, task) in tasks {
            self.matching.offer(key, MatchTask::Run(task));
        }
        Ok(Response::new(OfferReply {}))
    }

    async fn read_index(
        &self,
        request: Request<ReadIndexRequest>,
    ) -> Result<Response<ReadIndexReply>, Status> {
        let id = request.into_inner().shard;
        let shard;
        let group = if id == 0 {
            &self.metadata
        } else {
            shard = hosted_shard(&self.shards, id)?;
            &shard.group
        };
        group
            .ensure_linearizable()
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        let applied_index = group.metrics().borrow().last_applied.map_or(0, |l| l.index);
        Ok(Response::new(ReadIndexReply { applied_index }))
    }
}
