//! The metrics port: `GET /metrics` over HTTP/1.1 answers the registry's families in
//! Prometheus's text exposition format; any other path answers 404 and any other method 405.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use prometheus::{Registry, TextEncoder};
use tokio::net::TcpListener;

use super::MetricsError;

/// The bound metrics port, not yet serving.
pub struct MetricsEndpoint {
    listener: TcpListener,
    registry: Registry,
}

impl MetricsEndpoint {
    pub(super) async fn bind(
        addr: SocketAddr,
        registry: Registry,
    ) -> Result<MetricsEndpoint, MetricsError> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| MetricsError::Listen { addr, source })?;
        Ok(MetricsEndpoint { listener, registry })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Answers scrapes until the task running it is dropped.
    pub async fn serve(self) {
        loop {
            let stream = match self.listener.accept().await {
                Ok((stream, _)) => stream,
                Err(error) => {
                    // Out of file descriptors, say: the next accept may succeed.
                    tracing::warn!(%error, "cannot accept a /metrics connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let registry = self.registry.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request| {
                    let response = respond(&registry, &request);
                    async move { Ok::<_, Infallible>(response) }
                });
                let served = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
                if let Err(error) = served {
                    tracing::debug!(%error, "a /metrics connection ended with an error");
                }
            });
        }
    }
}

/// The answer to one HTTP request.
fn respond<B>(registry: &Registry, request: &http::Request<B>) -> http::Response<Full<Bytes>> {
    if request.uri().path() != "/metrics" {
        return plain(
            http::StatusCode::NOT_FOUND,
            "only /metrics is served here\n",
        );
    }
    if request.method() != http::Method::GET {
        return plain(http::StatusCode::METHOD_NOT_ALLOWED, "use GET\n");
    }
    match TextEncoder::new().encode_to_string(&registry.gather()) {
        Ok(text) => {
            let mut response = http::Response::new(Full::new(Bytes::from(text)));
            response.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static(prometheus::TEXT_FORMAT),
            );
            response
        }
        Err(error) => {
            tracing::error!(%error, "cannot encode the metrics");
            plain(
                http::StatusCode::INTERNAL_SERVER_ERROR,
                "cannot encode the metrics\n",
            )
        }
    }
}

fn plain(status: http::StatusCode, text: &'static str) -> http::Response<Full<Bytes>> {
    let mut response = http::Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *response.status_mut() = status;
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn get(addr: SocketAddr, request_line: &str) -> String {
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let request = format!("{request_line}\r\nHost: x\r\nConnection: close\r\n\r\n");
        stream
            .write_all(request.as_bytes())
            .await
            .expect("send the request");
        let mut answer = String::new();
        stream
            .read_to_string(&mut answer)
            .await
            .expect("read the answer");
        answer
    }

    #[tokio::test]
    async fn metrics_are_served_as_text_and_nothing_else_is() {
        let registry = Registry::new();
        let counter = prometheus::IntCounter::new("keel_test_total", "test").expect("counter");
        registry
            .register(Box::new(counter.clone()))
            .expect("register");
        counter.inc_by(3);
        let endpoint = MetricsEndpoint::bind("127.0.0.1:0".parse().expect("addr"), registry)
            .await
            .expect("bind");
        let addr = endpoint.local_addr().expect("address");
        let server = tokio::spawn(endpoint.serve());
        let answer = get(addr, "GET /metrics HTTP/1.1").await;
        assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
        assert!(
            answer.contains("content-type: text/plain; version=0.0.4"),
            "{answer}"
        );
        assert!(answer.contains("\r\n\r\n"), "{answer}");
        assert!(answer.lines().any(|l| l == "keel_test_total 3"), "{answer}");
        let answer = get(addr, "GET /other HTTP/1.1").await;
        assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
        let answer = get(addr, "POST /metrics HTTP/1.1").await;
        assert!(answer.starts_with("HTTP/1.1 405"), "{answer}");
        server.abort();
    }
}
