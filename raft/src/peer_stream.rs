//! Message streams between nodes: many small request/answer exchanges with one peer over one
//! long-lived HTTP/2 stream, each message numbered so that its answer finds it. A message then
//! costs one DATA frame each way instead of a whole call (headers, data, trailers).
//!
//! [`PeerStream`] is the sending half: a stream that breaks fails every message still waiting
//! on it, and the owner opens a new one for the next message. Timeouts belong to the caller: a
//! message whose caller gave up is forgotten. [`answer_each`] is the receiving half: it answers
//! each message in a task of its own, so one slow answer does not hold up the others.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use futures::Stream;
use tokio::sync::{mpsc, oneshot, watch};
use tonic::{Code, Response, Status, Streaming};

/// The sending half of one message stream to a peer.
pub struct PeerStream<Req, Rep> {
    outbox: mpsc::UnboundedSender<Req>,
    waiting: Arc<Waiting<Rep>>,
    next_number: AtomicU64,
}

/// The messages a [`PeerStream`] sends, as the stream a tonic client call takes.
pub struct Outgoing<Req> {
    queued: mpsc::UnboundedReceiver<Req>,
    /// Set once the call has taken a message to send.
    taken: Arc<AtomicBool>,
}

impl<Req> Stream for Outgoing<Req> {
    type Item = Req;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Req>> {
        let next = self.queued.poll_recv(cx);
        if let Poll::Ready(Some(_)) = next {
            self.taken.store(true, Ordering::Relaxed);
        }
        next
    }
}

/// Messages sent and not yet answered, or why the stream ended.
struct Waiting<Rep> {
    inner: Mutex<WaitingInner<Rep>>,
    /// The number of the message an answer answers.
    number: fn(&Rep) -> u64,
}

struct WaitingInner<Rep> {
    answers: HashMap<u64, oneshot::Sender<Result<Rep, StreamError>>>,
    ended: Option<(Code, String)>,
}

/// Why a message got no answer.
#[derive(Debug)]
pub enum StreamError {
    /// It never reached the peer: the stream had ended, or could not be opened. Safe to send
    /// again.
    Unsent(Status),
    /// The stream broke after it was sent: the peer may have acted on it.
    Unanswered(Status),
}

impl From<StreamError> for Status {
    fn from(error: StreamError) -> Status {
        match error {
            StreamError::Unsent(status) | StreamError::Unanswered(status) => status,
        }
    }
}

impl<Req: Send + 'static, Rep: Send + 'static> PeerStream<Req, Rep> {
    /// Opens a stream with `open` (a client call given the outgoing messages) in the
    /// background; messages sent before the peer answers the call wait in the outbox. If the
    /// call fails before it took any message (no connection), every message waiting is unsent
    /// and gets the call's status as it is.
    /// `number` tells which message an answer answers.
    pub fn open<Fut>(open: impl FnOnce(Outgoing<Req>) -> Fut, number: fn(&Rep) -> u64) -> Self
    where
        Fut: Future<Output = Result<Response<Streaming<Rep>>, Status>> + Send + 'static,
    {
        let (outbox, queued) = mpsc::unbounded_channel();
        let waiting = Arc::new(Waiting::new(number));
        let taken = Arc::new(AtomicBool::new(false));
        let outgoing = Outgoing {
            queued,
            taken: taken.clone(),
        };
        tokio::spawn(carry(open(outgoing), taken, waiting.clone()));
        PeerStream {
            outbox,
            waiting,
            next_number: AtomicU64::new(0),
        }
    }

    /// True once the stream has ended; a new message needs a new stream.
    pub fn has_ended(&self) -> bool {
        self.waiting.lock().ended.is_some()
    }

    /// Sends the message `numbered` makes of its number and returns the peer's answer, or why
    /// there is none.
    pub async fn call(&self, numbered: impl FnOnce(u64) -> Req) -> Result<Rep, StreamError> {
        let number = self.next_number.fetch_add(1, Ordering::Relaxed);
        let (answer, answered) = oneshot::channel();
        {
            let mut waiting = self.waiting.lock();
            if let Some((code, why)) = &waiting.ended {
                return Err(StreamError::Unsent(Status::new(*code, why.clone())));
            }
            waiting.answers.insert(number, answer);
        }
        // Forgets the message if this call ends first (answered, failed or timed out).
        let _forget = Forget {
            waiting: &self.waiting,
            number,
        };
        let ended = || Status::unavailable("the message stream to the peer has ended");
        self.outbox
            .send(numbered(number))
            .map_err(|_| StreamError::Unsent(ended()))?;
        answered
            .await
            .map_err(|_| StreamError::Unanswered(ended()))?
    }
}

impl<Rep> Waiting<Rep> {
    fn new(number: fn(&Rep) -> u64) -> Self {
        Waiting {
            inner: Mutex::new(WaitingInner {
                answers: HashMap::new(),
                ended: None,
            }),
            number,
        }
    }

    fn lock(&self) -> MutexGuard<'_, WaitingInner<Rep>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn answer(&self, reply: Rep) {
        if let Some(answer) = self.lock().answers.remove(&(self.number)(&reply)) {
            let _ = answer.send(Ok(reply));
        }
    }

    /// Ends the stream: every message waiting fails with `code` and `why`, as unsent if none
    /// of the stream's messages left this node (`delivered` false).
    fn end(&self, code: Code, why: String, delivered: bool) {
        let answers = {
            let mut waiting = self.lock();
            waiting.ended = Some((code, why.clone()));
            std::mem::take(&mut waiting.answers)
        };
        for answer in answers.into_values() {
            let status = Status::new(code, why.clone());
            let _ = answer.send(Err(if delivered {
                StreamError::Unanswered(status)
            } else {
                StreamError::Unsent(status)
            }));
        }
    }
}

struct Forget<'a, Rep> {
    waiting: &'a Waiting<Rep>,
    number: u64,
}

impl<Rep> Drop for Forget<'_, Rep> {
    fn drop(&mut self) {
        self.waiting.lock().answers.remove(&self.number);
    }
}

/// Waits for the peer to take the stream, hands each answer to its caller; when the stream
/// ends, fails every caller still waiting.
async fn carry<Rep>(
    opened: impl Future<Output = Result<Response<Streaming<Rep>>, Status>>,
    taken: Arc<AtomicBool>,
    waiting: Arc<Waiting<Rep>>,
) {
    let (code, why, delivered) = match opened.await {
        Err(status) => {
            let delivered = taken.load(Ordering::Relaxed);
            (status.code(), status.message().to_string(), delivered)
        }
        Ok(replies) => {
            let mut replies = replies.into_inner();
            loop {
                match replies.message().await {
                    Ok(Some(reply)) => waiting.answer(reply),
                    Ok(None) => {
                        let why = "the peer closed the message stream".to_string();
                        break (Code::Unavailable, why, true);
                    }
                    Err(status) => {
                        let why = format!("the message stream broke: {}", status.message());
                        break (Code::Unavailable, why, true);
                    }
                }
            }
        }
    };
    waiting.end(code, why, delivered);
}

/// A refusal as a stream answer carries it: the status code (0: none) and its message.
pub fn refusal(status: &Status) -> (i32, String) {
    (status.code() as i32, status.message().to_string())
}

/// The status a stream answer's refusal stands for, as a unary call would have failed.
pub fn refused(code: i32, message: String) -> Result<(), Status> {
    match Code::from_i32(code) {
        Code::Ok => Ok(()),
        code => Err(Status::new(code, message)),
    }
}

/// The answers of one message stream, as a tonic server returns them.
pub type Answers<Rep> = Pin<Box<dyn Stream<Item = Result<Rep, Status>> + Send>>;

/// Serves one peer's message stream: answers each message in a task of its own and ends when
/// the peer closes its half, when `closing` turns true (a server shutting down gracefully
/// waits for open streams, and peers keep theirs open), or after a message at which
/// `stopped()` is true (a stopped node's connections outlive it while they drain; ending the
/// stream makes the peer reconnect, perhaps to this node restarted).
pub fn answer_each<Req, Rep, Fut>(
    mut incoming: Streaming<Req>,
    mut closing: watch::Receiver<bool>,
    stopped: impl Fn() -> bool + Send + 'static,
    answer: impl Fn(Req) -> Fut + Send + 'static,
) -> Answers<Rep>
where
    Req: Send + 'static,
    Rep: Send + 'static,
    Fut: Future<Output = Rep> + Send + 'static,
{
    let (answers, mut answered) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let message = tokio::select! {
                message = incoming.message() => message,
                _ = closing.wait_for(|closed| *closed) => break,
            };
            let Ok(Some(message)) = message else { break };
            let reply = answer(message);
            let answers = answers.clone();
            tokio::spawn(async move {
                let _ = answers.send(reply.await);
            });
            if stopped() {
                break;
            }
        }
    });
    Box::pin(futures::stream::poll_fn(move |cx| {
        answered.poll_recv(cx).map(|a| a.map(Ok))
    }))
}

/// Ends the message streams the node's servers answer (see [`answer_each`]).
#[derive(Clone)]
pub struct TransportStreams(watch::Sender<bool>);

impl Default for TransportStreams {
    fn default() -> Self {
        TransportStreams(watch::Sender::new(false))
    }
}

impl TransportStreams {
    /// Ends every message stream, open or opened later.
    pub fn close(&self) {
        self.0.send_replace(true);
    }

    /// What a stream's server watches to know it must end.
    pub fn closing(&self) -> watch::Receiver<bool> {
        self.0.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq)]
    struct Reply(u64, &'static str);

    fn waiting() -> Waiting<Reply> {
        Waiting::new(|reply| reply.0)
    }

    fn waiting_for(
        waiting: &Waiting<Reply>,
        number: u64,
    ) -> oneshot::Receiver<Result<Reply, StreamError>> {
        let (answer, answered) = oneshot::channel();
        waiting.lock().answers.insert(number, answer);
        answered
    }

    #[tokio::test]
    async fn each_answer_reaches_the_message_with_its_number() {
        let waiting = waiting();
        let first = waiting_for(&waiting, 1);
        let second = waiting_for(&waiting, 2);
        waiting.answer(Reply(2, "two"));
        waiting.answer(Reply(1, "one"));
        assert_eq!(second.await.unwrap().unwrap(), Reply(2, "two"));
        assert_eq!(first.await.unwrap().unwrap(), Reply(1, "one"));
        // An answer nobody waits for (its caller timed out) is dropped.
        waiting.answer(Reply(3, "three"));
        assert!(waiting.lock().answers.is_empty());
    }

    #[tokio::test]
    async fn a_stream_that_never_opened_fails_its_messages_as_unsent() {
        let waiting = waiting();
        let pending = waiting_for(&waiting, 7);
        waiting.end(Code::Unavailable, "tcp connect error".to_string(), false);
        let StreamError::Unsent(failed) = pending.await.unwrap().unwrap_err() else {
            panic!("a message on a stream that never opened was not reported unsent");
        };
        assert_eq!(failed.code(), Code::Unavailable);
        assert_eq!(failed.message(), "tcp connect error");
        assert!(waiting.lock().ended.is_some());
    }

    #[tokio::test]
    async fn a_broken_stream_fails_its_messages_as_unanswered() {
        let waiting = waiting();
        let pending = waiting_for(&waiting, 8);
        waiting.end(
            Code::Unavailable,
            "the message stream broke".to_string(),
            true,
        );
        assert!(matches!(
            pending.await.unwrap().unwrap_err(),
            StreamError::Unanswered(_)
        ));
    }

    #[tokio::test]
    async fn a_message_whose_caller_gives_up_is_forgotten() {
        let waiting = waiting();
        let _answered = waiting_for(&waiting, 4);
        drop(Forget {
            waiting: &waiting,
            number: 4,
        });
        assert!(waiting.lock().answers.is_empty());
    }

    #[test]
    fn a_refusal_round_trips_as_the_status_a_call_would_fail_with() {
        let (code, message) = refusal(&Status::failed_precondition("foreign cluster"));
        let status = refused(code, message).unwrap_err();
        assert_eq!(status.code(), Code::FailedPrecondition);
        assert_eq!(status.message(), "foreign cluster");
        assert!(refused(0, String::new()).is_ok());
    }
}
