//! The `runner-manager` binary's library: config, command line, console output, HTTP server
//! and daemon loop. The manager itself is reached through [`ops::Operations`].

pub mod app;
pub mod backend;
pub mod cli;
pub mod config;
/// A stand-in `Operations` for tests and benchmarks (feature `test-doubles`): off in the binary.
#[cfg(any(test, feature = "test-doubles"))]
pub mod counting_ops;
pub mod daemon;
pub mod deliveries;
pub mod ha;
pub mod images;
pub mod logging;
pub mod ops;
pub mod output;
pub mod scaleset;
pub mod secret;
pub mod server;
pub mod webhook;
