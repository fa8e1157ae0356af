//! Per-method gRPC metrics, taken by a tower layer around every service the node serves:
//! `service_requests{service,operation,status_code}` and the latency histogram
//! `service_latency{service,operation}` (seconds), named as Temporal names its own. The method
//! table is built once from every served method's path, so a request costs one hash lookup by
//! path, an `Arc` clone and atomic adds on handles created at the method's first use.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{ready, Context, Poll};
use std::time::Instant;

use prometheus::{Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts};
use tonic::Code;

/// Upper bounds (seconds) of the latency buckets: sub-millisecond reads up to minute-long polls.
const LATENCY_BUCKETS: [f64; 16] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];

/// gRPC status codes by number, as their canonical names (the `status_code` label).
const CODE_NAMES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

/// The metric families every method's handles come from.
struct Families {
    requests: IntCounterVec,
    latency: HistogramVec,
}

/// One method's handles, each created when first needed (a method or code never seen exports
/// nothing).
struct MethodMetrics {
    service: String,
    operation: String,
    requests: [OnceLock<IntCounter>; 17],
    latency: OnceLock<Histogram>,
    families: Arc<Families>,
}

impl MethodMetrics {
    fn new(service: &str, operation: &str, families: Arc<Families>) -> MethodMetrics {
        MethodMetrics {
            service: service.to_string(),
            operation: operation.to_string(),
            requests: Default::default(),
            latency: OnceLock::new(),
            families,
        }
    }

    /// Records one request that ended with `code` after `seconds`.
    fn observe(&self, code: Code, seconds: f64) {
        let slot = (code as usize).min(CODE_NAMES.len() - 1);
        self.requests[slot]
            .get_or_init(|| {
                self.families.requests.with_label_values(&[
                    self.service.as_str(),
                    self.operation.as_str(),
                    CODE_NAMES[slot],
                ])
            })
            .inc();
        self.latency
            .get_or_init(|| {
                self.families
                    .latency
                    .with_label_values(&[self.service.as_str(), self.operation.as_str()])
            })
            .observe(seconds);
    }
}

/// Every served method's handles by request path, and one for paths served by no method.
struct MethodTable {
    by_path: HashMap<&'static str, Arc<MethodMetrics>>,
    unknown: Arc<MethodMetrics>,
}

impl MethodTable {
    fn get(&self, path: &str) -> Arc<MethodMetrics> {
        self.by_path.get(path).unwrap_or(&self.unknown).clone()
    }
}

/// `(service, operation)` of a path `/package.Service/Method`: the service without its package.
fn service_and_operation(path: &str) -> Option<(&str, &str)> {
    let (service, operation) = path.strip_prefix('/')?.split_once('/')?;
    let service = service.rsplit('.').next().unwrap_or(service);
    Some((service, operation))
}

/// The status code a response carries in its headers (a trailers-only error); a response
/// without one succeeded so far (its status follows in the trailers; Keel's unary methods send
/// OK there), unless its HTTP status says otherwise.
fn status_code<B>(response: &http::Response<B>) -> Code {
    match response.headers().get("grpc-status") {
        Some(value) => std::str::from_utf8(value.as_bytes())
            .ok()
            .and_then(|digits| digits.parse::<i32>().ok())
            .map_or(Code::Unknown, Code::from_i32),
        None if response.status() == http::StatusCode::OK => Code::Ok,
        None => Code::Unknown,
    }
}

/// The layer to put around the node's gRPC services; cheap to clone.
#[derive(Clone)]
pub struct GrpcMetricsLayer {
    methods: Arc<MethodTable>,
}

impl GrpcMetricsLayer {
    /// Registers the families in `registry` and prepares handles for the methods at `paths`.
    pub fn new(
        registry: &prometheus::Registry,
        paths: &[&'static str],
    ) -> Result<GrpcMetricsLayer, prometheus::Error> {
        let requests = IntCounterVec::new(
            Opts::new(
                "service_requests",
                "gRPC requests served, by service, method and status code",
            ),
            &["service", "operation", "status_code"],
        )?;
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "service_latency",
                "Time from a gRPC request's arrival to its response headers, in seconds",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["service", "operation"],
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(latency.clone()))?;
        let families = Arc::new(Families { requests, latency });
        let by_path = paths
            .iter()
            .filter_map(|path| {
                let (service, operation) = service_and_operation(path)?;
                let method = MethodMetrics::new(service, operation, families.clone());
                Some((*path, Arc::new(method)))
            })
            .collect();
        let unknown = Arc::new(MethodMetrics::new("unknown", "unknown", families));
        Ok(GrpcMetricsLayer {
            methods: Arc::new(MethodTable { by_path, unknown }),
        })
    }
}

impl<S> tower_layer::Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetrics<S>;

    fn layer(&self, inner: S) -> GrpcMetrics<S> {
        GrpcMetrics {
            inner,
            methods: self.methods.clone(),
        }
    }
}

/// A gRPC service whose requests are counted and timed.
#[derive(Clone)]
pub struct GrpcMetrics<S> {
    inner: S,
    methods: Arc<MethodTable>,
}

impl<S, B, ResponseBody> tower_service::Service<http::Request<B>> for GrpcMetrics<S>
where
    S: tower_service::Service<http::Request<B>, Response = http::Response<ResponseBody>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Observed<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Observed<S::Future> {
        let outcome = Outcome {
            method: self.methods.get(request.uri().path()),
            started: Instant::now(),
            recorded: false,
        };
        Observed {
            inner: self.inner.call(request),
            outcome,
        }
    }
}

/// Records a request once: with its status when it is answered, or as CANCELLED if it is
/// dropped first (the client went away).
struct Outcome {
    method: Arc<MethodMetrics>,
    started: Instant,
    recorded: bool,
}

impl Outcome {
    fn record(&mut self, code: Code) {
        self.recorded = true;
        self.method
            .observe(code, self.started.elapsed().as_secs_f64());
    }
}

impl Drop for Outcome {
    fn drop(&mut self) {
        if !self.recorded {
            self.record(Code::Cancelled);
        }
    }
}

pin_project_lite::pin_project! {
    /// The response future of a [`GrpcMetrics`] service.
    pub struct Observed<F> {
        #[pin]
        inner: F,
        outcome: Outcome,
    }
}

impl<F, ResponseBody, E> Future for Observed<F>
where
    F: Future<Output = Result<http::Response<ResponseBody>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let result = ready!(this.inner.poll(cx));
        let code = match &result {
            Ok(response) => status_code(response),
            Err(_) => Code::Unknown,
        };
        this.outcome.record(code);
        Poll::Ready(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower_layer::Layer;
    use tower_service::Service;

    /// Answers every request with the status given in its `x-answer` header (none: OK in the
    /// trailers), or never if the header is `never`.
    #[derive(Clone)]
    struct FakeService;

    impl Service<http::Request<()>> for FakeService {
        type Response = http::Response<()>;
        type Error = std::convert::Infallible;
        type Future = Pin<Box<dyn Future<Output = Result<http::Response<()>, Self::Error>>>>;

        fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, request: http::Request<()>) -> Self::Future {
            let answer = request.headers().get("x-answer").cloned();
            Box::pin(async move {
                match answer {
                    Some(value) if value == "never" => std::future::pending().await,
                    Some(code) => Ok(http::Response::builder()
                        .header("grpc-status", code)
                        .body(())
                        .expect("a valid message")),
                    None => Ok(http::Response::new(())),
                }
            })
        }
    }

    fn request(path: &str, answer: Option<&str>) -> http::Request<()> {
        let mut builder = http::Request::builder().uri(path);
        if let Some(answer) = answer {
            builder = builder.header("x-answer", answer);
        }
        builder.body(()).expect("a valid message")
    }

    fn count(registry: &prometheus::Registry, operation: &str, code: &str) -> u64 {
        registry
            .gather()
            .iter()
            .filter(|family| family.name() == "service_requests")
            .flat_map(|family| family.get_metric())
            .filter(|metric| {
                let label = |name: &str| {
                    metric
                        .get_label()
                        .iter()
                        .find(|l| l.name() == name)
                        .map(|l| l.value().to_string())
                };
                label("operation").as_deref() == Some(operation)
                    && label("status_code").as_deref() == Some(code)
            })
            .map(|metric| metric.get_counter().get_value() as u64)
            .sum()
    }

    const START: &str = "/temporal.api.workflowservice.v1.WorkflowService/StartWorkflowExecution";

    #[test]
    fn paths_name_their_service_without_package_and_their_method() {
        assert_eq!(
            service_and_operation(START),
            Some(("WorkflowService", "StartWorkflowExecution"))
        );
        assert_eq!(
            service_and_operation("/grpc.health.v1.Health/Check"),
            Some(("Health", "Check"))
        );
        assert_eq!(service_and_operation("/nothing"), None);
    }

    #[test]
    fn the_status_comes_from_the_headers_or_else_the_http_status() {
        let with = |code: &str| {
            http::Response::builder()
                .header("grpc-status", code)
                .body(())
                .expect("a valid message")
        };
        assert_eq!(status_code(&with("5")), Code::NotFound);
        assert_eq!(status_code(&with("0")), Code::Ok);
        assert_eq!(status_code(&with("x")), Code::Unknown);
        assert_eq!(status_code(&http::Response::new(())), Code::Ok);
        let not_found = http::Response::builder()
            .status(404)
            .body(())
            .expect("a valid message");
        assert_eq!(status_code(&not_found), Code::Unknown);
    }

    #[tokio::test]
    async fn requests_are_counted_by_method_and_status_and_a_dropped_one_as_cancelled() {
        let registry = prometheus::Registry::new();
        let layer = GrpcMetricsLayer::new(&registry, &[START]).expect("metric families");
        let mut service = layer.layer(FakeService);
        for _ in 0..3 {
            assert!(service.call(request(START, None)).await.is_ok());
        }
        assert!(service.call(request(START, Some("6"))).await.is_ok());
        assert!(service.call(request("/x.Y/Z", Some("12"))).await.is_ok());
        {
            let waiting = service.call(request(START, Some("never")));
            futures::pin_mut!(waiting);
            assert!(futures::poll!(waiting.as_mut()).is_pending());
        }
        assert_eq!(count(&registry, "StartWorkflowExecution", "OK"), 3);
        assert_eq!(
            count(&registry, "StartWorkflowExecution", "ALREADY_EXISTS"),
            1
        );
        assert_eq!(count(&registry, "StartWorkflowExecution", "CANCELLED"), 1);
        assert_eq!(count(&registry, "unknown", "UNIMPLEMENTED"), 1);
        let text = prometheus::TextEncoder::new()
            .encode_to_string(&registry.gather())
            .expect("text format");
        assert!(
            text.contains("service_latency_count{operation=\"StartWorkflowExecution\",service=\"WorkflowService\"} 5"),
            "{text}"
        );
    }
}
