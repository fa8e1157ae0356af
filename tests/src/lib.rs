//! keel-tests: the workspace's end-to-end tests (in tests/tests/) and the harnesses they share.
//!
//! - [`cluster`]: several nodes in one process, each with its own RocksDB, peer server on its
//!   own 127.0.0.x address, and link-fault seam, for failover and recovery scenarios.
//! - [`process`]: `keel` processes started from the built binary, for crash tests.
//! - [`dev`]: a `keel dev` process and a workflow service client; [`metrics`]: its
//!   Prometheus text, parsed.
//!
//! Nothing here is used by the server itself.

pub mod cluster;
pub mod dev;
pub mod metrics;
pub mod process;
