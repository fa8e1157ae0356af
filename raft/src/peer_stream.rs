//! The client half of a peer's message stream: every group's AppendEntries to one peer travel
//! over one long-lived HTTP/2 stream, each tagged with an id that pairs it with its answer.
//! A stream that breaks fails every message still waiting on it; the next message opens a new
//! one. Timeouts belong to the caller: a message whose caller gave up is forgotten.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use keel_proto::raft::raft_transport_client::RaftTransportClient;
use keel_proto::raft::{RaftRequest, RaftStreamReply, RaftStreamRequest};
use tokio::sync::{mpsc, oneshot};
use tonic::transport::Channel;
use tonic::{Code, Status};

/// One peer's message stream.
pub(crate) struct PeerStream {
    outbox: mpsc::UnboundedSender<RaftStreamRequest>,
    waiting: Arc<Waiting>,
    next_id: AtomicU64,
}

/// Messages sent and not yet answered, or why the stream ended.
#[derive(Default)]
struct Waiting {
    inner: Mutex<WaitingInner>,
}

#[derive(Default)]
struct WaitingInner {
    answers: HashMap<u64, oneshot::Sender<Result<Vec<u8>, Status>>>,
    ended: Option<String>,
}

impl PeerStream {
    /// Opens a stream over `channel` in the background; messages sent before it is open wait
    /// in its outbox.
    pub(crate) fn open(channel: Channel, addr: &str) -> PeerStream {
        let (outbox, queued) = mpsc::unbounded_channel();
        let waiting = Arc::new(Waiting::default());
        let client = RaftTransportClient::new(channel)
            .max_decoding_message_size(usize::MAX)
            .max_encoding_message_size(usize::MAX);
        tokio::spawn(carry(client, queued, waiting.clone(), addr.to_string()));
        PeerStream {
            outbox,
            waiting,
            next_id: AtomicU64::new(0),
        }
    }

    /// True once the stream has ended; a new message needs a new stream.
    pub(crate) fn has_ended(&self) -> bool {
        self.waiting.lock().ended.is_some()
    }

    /// Sends `request` and returns the peer's answer: its payload, the status it refused the
    /// message with, or `Unavailable` if the stream ended first.
    pub(crate) async fn call(&self, request: RaftRequest) -> Result<Vec<u8>, Status> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (answer, answered) = oneshot::channel();
        {
            let mut waiting = self.waiting.lock();
            if let Some(why) = &waiting.ended {
                return Err(Status::unavailable(why.clone()));
            }
            waiting.answers.insert(id, answer);
        }
        // Forgets the message if this call ends first (answered, failed or timed out).
        let _forget = Forget {
            waiting: &self.waiting,
            id,
        };
        self.outbox
            .send(RaftStreamRequest {
                id,
                request: Some(request),
            })
            .map_err(|_| Status::unavailable("the peer stream has ended"))?;
        answered
            .await
            .map_err(|_| Status::unavailable("the peer stream has ended"))?
    }
}

impl Waiting {
    fn lock(&self) -> std::sync::MutexGuard<'_, WaitingInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn answer(&self, reply: RaftStreamReply) {
        let Some(answer) = self.lock().answers.remove(&reply.id) else {
            return;
        };
        let result = if reply.refused_code == Code::Ok as i32 {
            Ok(reply.payload)
        } else {
            Err(Status::new(
                Code::from_i32(reply.refused_code),
                reply.refused_message,
            ))
        };
        let _ = answer.send(result);
    }

    fn end(&self, why: String) {
        let answers = {
            let mut waiting = self.lock();
            waiting.ended = Some(why.clone());
            std::mem::take(&mut waiting.answers)
        };
        for answer in answers.into_values() {
            let _ = answer.send(Err(Status::unavailable(why.clone())));
        }
    }
}

struct Forget<'a> {
    waiting: &'a Waiting,
    id: u64,
}

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        self.waiting.lock().answers.remove(&self.id);
    }
}

/// Opens the stream, sends what the outbox queues, hands each answer to its caller; when the
/// stream ends, fails every caller still waiting.
async fn carry(
    mut client: RaftTransportClient<Channel>,
    mut queued: mpsc::UnboundedReceiver<RaftStreamRequest>,
    waiting: Arc<Waiting>,
    addr: String,
) {
    let outgoing = futures::stream::poll_fn(move |cx| queued.poll_recv(cx));
    let why = match client.append_entries_stream(outgoing).await {
        Err(status) => format!(
            "cannot open a message stream to {addr}: {}",
            status.message()
        ),
        Ok(replies) => {
            let mut replies = replies.into_inner();
            loop {
                match replies.message().await {
                    Ok(Some(reply)) => waiting.answer(reply),
                    Ok(None) => break format!("the peer at {addr} closed the message stream"),
                    Err(status) => {
                        break format!("message stream to {addr} broke: {}", status.message())
                    }
                }
            }
        }
    };
    waiting.end(why);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waiting_for(waiting: &Waiting, id: u64) -> oneshot::Receiver<Result<Vec<u8>, Status>> {
        let (answer, answered) = oneshot::channel();
        waiting.lock().answers.insert(id, answer);
        answered
    }

    #[tokio::test]
    async fn each_answer_reaches_the_message_with_its_id() {
        let waiting = Waiting::default();
        let first = waiting_for(&waiting, 1);
        let second = waiting_for(&waiting, 2);
        waiting.answer(RaftStreamReply {
            id: 2,
            payload: b"two".to_vec(),
            ..RaftStreamReply::default()
        });
        waiting.answer(RaftStreamReply {
            id: 1,
            refused_code: Code::FailedPrecondition as i32,
            refused_message: "foreign cluster".to_string(),
            ..RaftStreamReply::default()
        });
        assert_eq!(second.await.unwrap().unwrap(), b"two".to_vec());
        let refused = first.await.unwrap().unwrap_err();
        assert_eq!(refused.code(), Code::FailedPrecondition);
        assert_eq!(refused.message(), "foreign cluster");
        // An answer nobody waits for (its caller timed out) is dropped.
        waiting.answer(RaftStreamReply {
            id: 3,
            ..RaftStreamReply::default()
        });
        assert!(waiting.lock().answers.is_empty());
    }

    #[tokio::test]
    async fn an_ended_stream_fails_every_waiting_message() {
        let waiting = Waiting::default();
        let pending = waiting_for(&waiting, 7);
        waiting.end("the peer at 10.0.0.2:7233 closed the message stream".to_string());
        let failed = pending.await.unwrap().unwrap_err();
        assert_eq!(failed.code(), Code::Unavailable);
        assert!(failed.message().contains("closed the message stream"));
        assert!(waiting.lock().ended.is_some());
    }

    #[tokio::test]
    async fn a_message_whose_caller_gives_up_is_forgotten() {
        let waiting = Waiting::default();
        let _answered = waiting_for(&waiting, 4);
        drop(Forget {
            waiting: &waiting,
            id: 4,
        });
        assert!(waiting.lock().answers.is_empty());
    }
}
