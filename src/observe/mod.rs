//! Observe: sits beside every stage. Metric names in one place, the Prometheus recorder, request ids.

pub mod metrics;

pub use self::metrics::{Metrics, install};
