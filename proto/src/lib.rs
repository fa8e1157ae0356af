//! keel-proto: generated gRPC code for Keel's own protocols (the Raft transport between nodes and
//! the debug key/value service). Later it also hosts the server traits for Temporal's
//! WorkflowService and OperatorService.
//!
//! This crate holds generated code only: no logic, no I/O beyond what tonic generates.

/// Node-to-node Raft transport (`keel.raft.v1`).
pub mod raft {
    tonic::include_proto!("keel.raft.v1");
}

/// Test-only replicated key/value service (`keel.debug.v1`).
pub mod debug {
    tonic::include_proto!("keel.debug.v1");
}
