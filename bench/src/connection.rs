//! gRPC connections to the target, handed out round-robin, and the shared retry rule.

use std::{
    future::Future,
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use anyhow::{bail, Context, Result};
use keel_proto::temporal_services::workflowservice::workflow_service_client::WorkflowServiceClient;
use tonic::{transport::Channel, Code, Status};

/// Largest message accepted from the server (full histories of long runs).
const MAX_MESSAGE_BYTES: usize = 64 << 20;
/// Attempts per call before a retryable error becomes an error.
const MAX_ATTEMPTS: u32 = 30;

/// A few HTTP/2 connections to the target; each call takes the next one.
pub struct Connections {
    clients: Vec<WorkflowServiceClient<Channel>>,
    next: AtomicUsize,
    /// Calls retried after a retryable status.
    pub retries: Arc<AtomicU64>,
}

impl Connections {
    pub async fn open(target: &str, count: usize) -> Result<Self> {
        let uri = if target.contains("://") {
            target.to_string()
        } else {
            format!("http://{target}")
        };
        let mut clients = Vec::with_capacity(count.max(1));
        for _ in 0..count.max(1) {
            let channel = tonic::transport::Endpoint::from_shared(uri.clone())
                .with_context(|| format!("bad target {target}"))?
                .tcp_nodelay(true)
                .connect_timeout(Duration::from_secs(5))
                .connect()
                .await
                .with_context(|| format!("connecting to {target}"))?;
            clients.push(
                WorkflowServiceClient::new(channel)
                    .max_decoding_message_size(MAX_MESSAGE_BYTES)
                    .max_encoding_message_size(MAX_MESSAGE_BYTES),
            );
        }
        Ok(Connections {
            clients,
            next: AtomicUsize::new(0),
            retries: Arc::new(AtomicU64::new(0)),
        })
    }

    /// A client on the next connection.
    pub fn client(&self) -> WorkflowServiceClient<Channel> {
        let index = self.next.fetch_add(1, Ordering::Relaxed) % self.clients.len();
        self.clients[index].clone()
    }

    /// Runs `call` until it succeeds, retrying overload and transient statuses (and those in
    /// `also_retry`) with backoff. Callers make the call idempotent (request ids, update ids).
    pub async fn call<T, F, Fut>(&self, what: &str, also_retry: &[Code], mut call: F) -> Result<T>
    where
        F: FnMut(WorkflowServiceClient<Channel>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let mut backoff = Duration::from_millis(10);
        let mut attempt = 1;
        loop {
            match call(self.client()).await {
                Ok(response) => return Ok(response.into_inner()),
                Err(status)
                    if attempt < MAX_ATTEMPTS
                        && (is_transient(status.code()) || also_retry.contains(&status.code())) =>
                {
                    self.retries.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                    attempt += 1;
                }
                Err(status) => bail!("{what}: {}", describe(&status)),
            }
        }
    }
}

/// Deadline sent with long polls; Temporal refuses long polls without one, and answers an empty
/// poll a little before it.
const LONG_POLL_DEADLINE: Duration = Duration::from_secs(70);

/// `message` as a long-poll request, carrying a deadline.
pub fn long_poll<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(LONG_POLL_DEADLINE);
    request
}

/// Statuses a server returns when busy or briefly unable to serve.
pub fn is_transient(code: Code) -> bool {
    matches!(
        code,
        Code::Unavailable | Code::ResourceExhausted | Code::Aborted | Code::DeadlineExceeded
    )
}

/// A status as one short line: code and the start of the message.
pub fn describe(status: &Status) -> String {
    let message: String = status.message().chars().take(160).collect();
    format!("{:?}: {message}", status.code())
}
