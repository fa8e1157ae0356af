//! `grpc.health.v1.Health`: the node reports SERVING while it serves.

use keel_proto::temporal_services::health::health_server::Health;
use temporalio_protos::grpc::health::v1::{
    health_check_response::ServingStatus, HealthCheckRequest, HealthCheckResponse,
};
use tonic::{Request, Response, Status};

/// The health service.
pub struct HealthService;

#[tonic::async_trait]
impl Health for HealthService {
    async fn check(
        &self,
        _request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        Ok(Response::new(HealthCheckResponse {
            status: ServingStatus::Serving as i32,
        }))
    }
}
