//! gRPC statuses the way Temporal's frontend returns them, with the error details the SDKs
//! decode (`grpc-status-details-bin` carrying a `google.rpc.Status`).

use prost::Message;
use temporalio_protos::google::rpc::Status as RpcStatus;
use temporalio_protos::temporal::api::errordetails::v1 as details;
use temporalio_protos::temporal::api::failure::v1::Failure;
use tonic::{Code, Status};

use crate::engine::EngineError;
use crate::namespaces::NamespaceError;
use crate::shard::ShardError;

fn with_detail<M: Message>(code: Code, message: String, type_name: &str, detail: &M) -> Status {
    let status = RpcStatus {
        code: code as i32,
        message: message.clone(),
        details: vec![prost_wkt_types::Any {
            type_url: format!("type.googleapis.com/{type_name}"),
            value: detail.encode_to_vec(),
        }],
    };
    Status::with_details(code, message, status.encode_to_vec().into())
}

/// InvalidArgument.
pub fn invalid(message: impl Into<String>) -> Status {
    Status::invalid_argument(message.into())
}

/// NotFound for an unknown namespace, with NamespaceNotFoundFailure.
pub fn namespace_not_found(name: &str) -> Status {
    with_detail(
        Code::NotFound,
        format!("Namespace {name} is not found."),
        "temporal.api.errordetails.v1.NamespaceNotFoundFailure",
        &details::NamespaceNotFoundFailure {
            namespace: name.to_string(),
        },
    )
}

/// NotFound for a standalone activity (or run of one) that does not exist, as Temporal words it.
pub fn activity_not_found(activity_id: &str) -> Status {
    Status::not_found(format!("activity not found for ID: {activity_id}"))
}

/// `status` of a request on standalone activity `activity_id`, a NotFound worded as Temporal
/// words it.
pub fn on_activity(activity_id: &str, status: Status) -> Status {
    if status.code() == Code::NotFound {
        activity_not_found(activity_id)
    } else {
        status
    }
}

/// AlreadyExists for a standalone activity start that its id policies refuse, with the
/// ActivityExecutionAlreadyStartedFailure the SDKs decode.
pub fn activity_already_started(run_id: String, start_request_id: String) -> Status {
    with_detail(
        Code::AlreadyExists,
        "activity execution already started".to_string(),
        "temporal.api.errordetails.v1.ActivityExecutionAlreadyStartedFailure",
        &details::ActivityExecutionAlreadyStartedFailure {
            start_request_id,
            run_id,
        },
    )
}

/// A query the workflow answered with a failure.
pub fn query_failed(message: String, failure: Option<Failure>) -> Status {
    with_detail(
        Code::InvalidArgument,
        message,
        "temporal.api.errordetails.v1.QueryFailedFailure",
        &details::QueryFailedFailure { failure },
    )
}

/// FailedPrecondition with WorkflowNotReadyFailure: the run cannot take the request yet.
pub fn workflow_not_ready(message: &str) -> Status {
    with_detail(
        Code::FailedPrecondition,
        message.to_string(),
        "temporal.api.errordetails.v1.WorkflowNotReadyFailure",
        &details::WorkflowNotReadyFailure {},
    )
}

impl From<EngineError> for Status {
    fn from(error: EngineError) -> Status {
        let message = error.to_string();
        match error {
            EngineError::NotFound(_) | EngineError::Closed => Status::not_found(message),
            EngineError::InvalidArgument(_) => Status::invalid_argument(message),
            EngineError::FailedPrecondition(_) => Status::failed_precondition(message),
            EngineError::ResourceExhausted(_) => Status::resource_exhausted(message),
            EngineError::Unsupported(_) => Status::unimplemented(message),
            EngineError::NoChange => Status::internal("the request changed nothing"),
        }
    }
}

impl From<ShardError> for Status {
    fn from(error: ShardError) -> Status {
        match error {
            ShardError::Engine(engine) => engine.into(),
            ShardError::AlreadyStarted {
                run_id,
                start_request_id,
                message,
            } => with_detail(
                Code::AlreadyExists,
                message,
                "temporal.api.errordetails.v1.WorkflowExecutionAlreadyStartedFailure",
                &details::WorkflowExecutionAlreadyStartedFailure {
                    start_request_id,
                    run_id,
                    first_execution_run_id: String::new(),
                },
            ),
            error @ ShardError::Unavailable { .. } => Status::unavailable(error.to_string()),
            error @ ShardError::Corrupt { .. } => Status::data_loss(error.to_string()),
        }
    }
}

impl From<NamespaceError> for Status {
    fn from(error: NamespaceError) -> Status {
        match error {
            NamespaceError::AlreadyExists(_) => with_detail(
                Code::AlreadyExists,
                error.to_string(),
                "temporal.api.errordetails.v1.NamespaceAlreadyExistsFailure",
                &details::NamespaceAlreadyExistsFailure {},
            ),
            NamespaceError::NotFound(name) => namespace_not_found(&name),
            NamespaceError::InvalidSearchAttribute(message) => Status::invalid_argument(message),
            NamespaceError::Unavailable(_) => Status::unavailable(error.to_string()),
        }
    }
}

impl From<crate::deployments::DeploymentError> for Status {
    fn from(error: crate::deployments::DeploymentError) -> Status {
        use crate::deployments::DeploymentError as E;
        match error {
            E::NotFound(message) => Status::not_found(message),
            E::FailedPrecondition(message) => Status::failed_precondition(message),
            E::InvalidArgument(message) => Status::invalid_argument(message),
            E::AlreadyExists(message) => Status::already_exists(message),
            E::Metadata(error) => error.into(),
        }
    }
}

/// ExecuteMultiOperation's error: operation `failed` of `count` failed with `error` (its
/// details kept); the others are reported aborted, in a MultiOperationExecutionFailure.
pub fn multi_operation_failure(failed: usize, count: usize, error: Status) -> Status {
    use details::multi_operation_execution_failure::OperationStatus;
    let own_details = RpcStatus::decode(error.details())
        .map(|s| s.details)
        .unwrap_or_default();
    let aborted = OperationStatus {
        code: Code::Aborted as i32,
        message: "Operation was aborted.".to_string(),
        details: vec![prost_wkt_types::Any {
            type_url: "type.googleapis.com/temporal.api.failure.v1.MultiOperationExecutionAborted"
                .to_string(),
            value: Vec::new(),
        }],
    };
    let statuses = (0..count)
        .map(|index| {
            if index == failed {
                OperationStatus {
                    code: error.code() as i32,
                    message: error.message().to_string(),
                    details: own_details.clone(),
                }
            } else {
                aborted.clone()
            }
        })
        .collect();
    with_detail(
        error.code(),
        "Update-with-Start could not be executed.".to_string(),
        "temporal.api.errordetails.v1.MultiOperationExecutionFailure",
        &details::MultiOperationExecutionFailure { statuses },
    )
}
