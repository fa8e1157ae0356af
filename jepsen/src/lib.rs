//! keel-jepsen: the fault-injection harness for Keel clusters (real `keel node` processes in
//! network namespaces, nemeses, workloads through real clients, history checkers, a report).
//!
//! It must not link the server's internals: it drives `keel` as a binary and talks to it only
//! through public gRPC APIs. Nothing is built here yet (see the project's jepsen issue); the
//! crate exists so the workspace has its agreed layout.
