//! How QuantaID's sidecars run, as opposed to what they agree on (`quantaid-protocol`):
//! reading the environment and the settings both sidecars share, the JSON log and trace
//! pipeline with its OTLP exporters, process metrics, and finding Redis (directly or
//! through Sentinel).

#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod env;
pub mod process;
pub mod redis_target;
pub mod settings;
pub mod stdout_lines;
pub mod telemetry;
