//! keel-jepsen: the fault-injection harness for Keel clusters (real `keel node` processes in
//! network namespaces, nemeses, workloads through real clients, history checkers, a report).
//!
//! It must not link the server's internals: it drives `keel` as a binary and talks to it only
//! through public gRPC APIs. The checkers read nothing but the history file, so a saved history
//! can be checked again without a cluster.

pub mod checker;
pub mod client;
pub mod cluster;
pub mod history;
pub mod lazyfs;
pub mod nemesis;
pub mod report;
pub mod topology;
pub mod worker;
pub mod workload;
