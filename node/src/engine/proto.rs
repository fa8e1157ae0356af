//! Short paths to Temporal's message types and the conversions the engine needs (time,
//! durations, protobuf encoding of stored blobs).

pub use temporalio_protos::temporal::api::activity::v1 as activity;
pub use temporalio_protos::temporal::api::command::v1 as command;
pub use temporalio_protos::temporal::api::common::v1 as common;
pub use temporalio_protos::temporal::api::enums::v1 as enums;
pub use temporalio_protos::temporal::api::failure::v1 as failure;
pub use temporalio_protos::temporal::api::history::v1 as history;
pub use temporalio_protos::temporal::api::protocol::v1 as protocol;
pub use temporalio_protos::temporal::api::taskqueue::v1 as taskqueue;
pub use temporalio_protos::temporal::api::update::v1 as update;
pub use temporalio_protos::temporal::api::workflow::v1 as workflow;

pub use history::history_event::Attributes;
pub use history::HistoryEvent;

/// A protobuf timestamp for `ns` nanoseconds since the Unix epoch.
pub fn timestamp(ns: i64) -> prost_wkt_types::Timestamp {
    prost_wkt_types::Timestamp {
        seconds: ns.div_euclid(1_000_000_000),
        nanos: ns.rem_euclid(1_000_000_000) as i32,
    }
}

/// Nanoseconds since the Unix epoch of a protobuf timestamp (saturating outside the years
/// 1678-2262).
pub fn timestamp_ns(t: &prost_wkt_types::Timestamp) -> i64 {
    t.seconds
        .saturating_mul(1_000_000_000)
        .saturating_add(i64::from(t.nanos))
}

/// A protobuf duration of `ms` milliseconds, or None for 0 (Temporal's "not set").
pub fn duration(ms: i64) -> Option<prost_wkt_types::Duration> {
    (ms > 0).then(|| prost_wkt_types::Duration {
        seconds: ms / 1000,
        nanos: ((ms % 1000) * 1_000_000) as i32,
    })
}

/// A timeout as Temporal writes it in events and tasks: present, zero when there is none (some
/// SDKs, TypeScript's among them, require the field).
pub fn timeout(ms: i64) -> Option<prost_wkt_types::Duration> {
    Some(duration(ms).unwrap_or_default())
}

/// Milliseconds of an optional protobuf duration (None and negatives are 0), rounded up.
pub fn duration_ms(d: Option<&prost_wkt_types::Duration>) -> i64 {
    match d {
        Some(d) if d.seconds > 0 || d.nanos > 0 => d
            .seconds
            .max(0)
            .saturating_mul(1000)
            .saturating_add((i64::from(d.nanos.max(0)) + 999_999) / 1_000_000),
        _ => 0,
    }
}

/// Encodes an optional message; None becomes empty bytes.
pub fn encode_opt<M: prost::Message>(message: Option<&M>) -> Vec<u8> {
    message.map(|m| m.encode_to_vec()).unwrap_or_default()
}

/// Decodes bytes written by [`encode_opt`]; empty (or undecodable) bytes become None.
pub fn decode_opt<M: prost::Message + Default>(bytes: &[u8]) -> Option<M> {
    if bytes.is_empty() {
        None
    } else {
        M::decode(bytes).ok()
    }
}

/// A string as a JSON payload, as the SDKs' default converter encodes it.
pub fn json_payload(text: &str) -> common::Payload {
    common::Payload {
        metadata: [("encoding".to_string(), b"json/plain".to_vec())].into(),
        data: serde_json::to_vec(text).unwrap_or_default(),
        ..Default::default()
    }
}

/// A JSON string payload with a search attribute type (`Keyword`, `Datetime`...), as Temporal
/// encodes search attribute values it writes itself.
pub fn typed_json_payload(text: &str, kind: &str) -> common::Payload {
    let mut payload = json_payload(text);
    payload
        .metadata
        .insert("type".to_string(), kind.as_bytes().to_vec());
    payload
}

/// A normal-kind task queue message.
pub fn task_queue(name: &str) -> taskqueue::TaskQueue {
    taskqueue::TaskQueue {
        name: name.to_string(),
        kind: enums::TaskQueueKind::Normal as i32,
        ..Default::default()
    }
}

/// The event type of an attributes variant.
pub fn event_type(attributes: &Attributes) -> enums::EventType {
    use enums::EventType as T;
    match attributes {
        Attributes::WorkflowExecutionStartedEventAttributes(_) => T::WorkflowExecutionStarted,
        Attributes::WorkflowExecutionCompletedEventAttributes(_) => T::WorkflowExecutionCompleted,
        Attributes::WorkflowExecutionFailedEventAttributes(_) => T::WorkflowExecutionFailed,
        Attributes::WorkflowExecutionTimedOutEventAttributes(_) => T::WorkflowExecutionTimedOut,
        Attributes::WorkflowTaskScheduledEventAttributes(_) => T::WorkflowTaskScheduled,
        Attributes::WorkflowTaskStartedEventAttributes(_) => T::WorkflowTaskStarted,
        Attributes::WorkflowTaskCompletedEventAttributes(_) => T::WorkflowTaskCompleted,
        Attributes::WorkflowTaskTimedOutEventAttributes(_) => T::WorkflowTaskTimedOut,
        Attributes::WorkflowTaskFailedEventAttributes(_) => T::WorkflowTaskFailed,
        Attributes::ActivityTaskScheduledEventAttributes(_) => T::ActivityTaskScheduled,
        Attributes::ActivityTaskStartedEventAttributes(_) => T::ActivityTaskStarted,
        Attributes::ActivityTaskCompletedEventAttributes(_) => T::ActivityTaskCompleted,
        Attributes::ActivityTaskFailedEventAttributes(_) => T::ActivityTaskFailed,
        Attributes::ActivityTaskTimedOutEventAttributes(_) => T::ActivityTaskTimedOut,
        Attributes::ActivityTaskCancelRequestedEventAttributes(_) => T::ActivityTaskCancelRequested,
        Attributes::ActivityTaskCanceledEventAttributes(_) => T::ActivityTaskCanceled,
        Attributes::TimerStartedEventAttributes(_) => T::TimerStarted,
        Attributes::TimerFiredEventAttributes(_) => T::TimerFired,
        Attributes::TimerCanceledEventAttributes(_) => T::TimerCanceled,
        Attributes::WorkflowExecutionCancelRequestedEventAttributes(_) => {
            T::WorkflowExecutionCancelRequested
        }
        Attributes::WorkflowExecutionCanceledEventAttributes(_) => T::WorkflowExecutionCanceled,
        Attributes::RequestCancelExternalWorkflowExecutionInitiatedEventAttributes(_) => {
            T::RequestCancelExternalWorkflowExecutionInitiated
        }
        Attributes::RequestCancelExternalWorkflowExecutionFailedEventAttributes(_) => {
            T::RequestCancelExternalWorkflowExecutionFailed
        }
        Attributes::ExternalWorkflowExecutionCancelRequestedEventAttributes(_) => {
            T::ExternalWorkflowExecutionCancelRequested
        }
        Attributes::MarkerRecordedEventAttributes(_) => T::MarkerRecorded,
        Attributes::WorkflowExecutionSignaledEventAttributes(_) => T::WorkflowExecutionSignaled,
        Attributes::WorkflowExecutionTerminatedEventAttributes(_) => T::WorkflowExecutionTerminated,
        Attributes::WorkflowExecutionContinuedAsNewEventAttributes(_) => {
            T::WorkflowExecutionContinuedAsNew
        }
        Attributes::StartChildWorkflowExecutionInitiatedEventAttributes(_) => {
            T::StartChildWorkflowExecutionInitiated
        }
        Attributes::StartChildWorkflowExecutionFailedEventAttributes(_) => {
            T::StartChildWorkflowExecutionFailed
        }
        Attributes::ChildWorkflowExecutionStartedEventAttributes(_) => {
            T::ChildWorkflowExecutionStarted
        }
        Attributes::ChildWorkflowExecutionCompletedEventAttributes(_) => {
            T::ChildWorkflowExecutionCompleted
        }
        Attributes::ChildWorkflowExecutionFailedEventAttributes(_) => {
            T::ChildWorkflowExecutionFailed
        }
        Attributes::ChildWorkflowExecutionCanceledEventAttributes(_) => {
            T::ChildWorkflowExecutionCanceled
        }
        Attributes::ChildWorkflowExecutionTimedOutEventAttributes(_) => {
            T::ChildWorkflowExecutionTimedOut
        }
        Attributes::ChildWorkflowExecutionTerminatedEventAttributes(_) => {
            T::ChildWorkflowExecutionTerminated
        }
        Attributes::SignalExternalWorkflowExecutionInitiatedEventAttributes(_) => {
            T::SignalExternalWorkflowExecutionInitiated
        }
        Attributes::SignalExternalWorkflowExecutionFailedEventAttributes(_) => {
            T::SignalExternalWorkflowExecutionFailed
        }
        Attributes::ExternalWorkflowExecutionSignaledEventAttributes(_) => {
            T::ExternalWorkflowExecutionSignaled
        }
        Attributes::UpsertWorkflowSearchAttributesEventAttributes(_) => {
            T::UpsertWorkflowSearchAttributes
        }
        Attributes::WorkflowExecutionUpdateAdmittedEventAttributes(_) => {
            T::WorkflowExecutionUpdateAdmitted
        }
        Attributes::WorkflowExecutionUpdateAcceptedEventAttributes(_) => {
            T::WorkflowExecutionUpdateAccepted
        }
        Attributes::WorkflowExecutionUpdateRejectedEventAttributes(_) => {
            T::WorkflowExecutionUpdateRejected
        }
        Attributes::WorkflowExecutionUpdateCompletedEventAttributes(_) => {
            T::WorkflowExecutionUpdateCompleted
        }
        Attributes::WorkflowPropertiesModifiedExternallyEventAttributes(_) => {
            T::WorkflowPropertiesModifiedExternally
        }
        Attributes::ActivityPropertiesModifiedExternallyEventAttributes(_) => {
            T::ActivityPropertiesModifiedExternally
        }
        Attributes::WorkflowPropertiesModifiedEventAttributes(_) => T::WorkflowPropertiesModified,
        Attributes::NexusOperationScheduledEventAttributes(_) => T::NexusOperationScheduled,
        Attributes::NexusOperationStartedEventAttributes(_) => T::NexusOperationStarted,
        Attributes::NexusOperationCompletedEventAttributes(_) => T::NexusOperationCompleted,
        Attributes::NexusOperationFailedEventAttributes(_) => T::NexusOperationFailed,
        Attributes::NexusOperationCanceledEventAttributes(_) => T::NexusOperationCanceled,
        Attributes::NexusOperationTimedOutEventAttributes(_) => T::NexusOperationTimedOut,
        Attributes::NexusOperationCancelRequestedEventAttributes(_) => {
            T::NexusOperationCancelRequested
        }
        Attributes::WorkflowExecutionOptionsUpdatedEventAttributes(_) => {
            T::WorkflowExecutionOptionsUpdated
        }
        Attributes::NexusOperationCancelRequestCompletedEventAttributes(_) => {
            T::NexusOperationCancelRequestCompleted
        }
        Attributes::NexusOperationCancelRequestFailedEventAttributes(_) => {
            T::NexusOperationCancelRequestFailed
        }
        Attributes::WorkflowExecutionPausedEventAttributes(_) => T::WorkflowExecutionPaused,
        Attributes::WorkflowExecutionUnpausedEventAttributes(_) => T::WorkflowExecutionUnpaused,
        Attributes::WorkflowExecutionTimeSkippingTransitionedEventAttributes(_) => {
            T::WorkflowExecutionTimeSkippingTransitioned
        }
    }
}
