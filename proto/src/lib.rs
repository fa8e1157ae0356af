//! keel-proto: generated gRPC code for Keel's own protocols (the Raft transport between nodes and
//! the debug key/value service). Later it also hosts the server traits for Temporal's
//! WorkflowService and OperatorService.
//!
//! This crate holds generated code only: no logic, no I/O beyond what tonic generates.

/// Node-to-node Raft transport (`keel.raft.v1`).
pub mod raft {
    tonic::include_proto!("keel.raft.v1");
}

/// Cluster administration for `keel cluster status` (`keel.admin.v1`).
pub mod admin {
    tonic::include_proto!("keel.admin.v1");
}

/// Forwarding of shard work between nodes (`keel.shard.v1`).
pub mod shard {
    tonic::include_proto!("keel.shard.v1");
}

/// Test-only replicated key/value service (`keel.debug.v1`).
pub mod debug {
    tonic::include_proto!("keel.debug.v1");
}

/// Server traits (and clients, for tests and tools) for Temporal's public services. Message types
/// come from `temporalio_protos`, re-exported here as [`temporal`].
#[allow(clippy::all, rustdoc::all)]
pub mod temporal_services {
    /// `temporal.api.workflowservice.v1.WorkflowService`.
    pub mod workflowservice {
        tonic::include_proto!("temporal.api.workflowservice.v1");
    }
    /// `temporal.api.operatorservice.v1.OperatorService`.
    pub mod operatorservice {
        tonic::include_proto!("temporal.api.operatorservice.v1");
    }
    /// `grpc.health.v1.Health`.
    pub mod health {
        tonic::include_proto!("grpc.health.v1");
    }
}

pub use temporalio_protos::temporal;

/// The gRPC path (`/package.Service/Method`) of every method of every service above, for
/// per-method metrics.
pub const GRPC_METHODS: &[&str] = include!(concat!(env!("OUT_DIR"), "/grpc_methods.rs"));
