//! keel-bench's library: the worker-protocol pieces (connections, workflow-task decisions,
//! update protocol messages) and the measurement pieces (percentiles, time series, SVG plots)
//! that the `keel-bench` binary and the fault-injection harness (keel-jepsen) share. It knows
//! nothing of Keel's internals and works against any Temporal-compatible endpoint.

pub mod connection;
pub mod decide;
pub mod driver;
pub mod load;
pub mod pacing;
pub mod plot;
pub mod recorder;
pub mod stats;
pub mod worker;
