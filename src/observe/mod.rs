//! Observe: beside every stage. The metric catalogue (every name and label in one place), the typed
//! helpers the stages record through, the Prometheus recorder, and the operator endpoints
//! (`/healthz`, `/readyz`, `/metrics`, `/admin/cluster`); the access log and OpenTelemetry traces
//! ([`record`] per request, [`trace`] spans, [`otlp`] export). Imports `config` and reads the other
//! stages only through the admin endpoint's inputs.

pub mod access_log;
pub mod admin;
pub mod catalogue;
pub mod lag;
pub mod log_gate;
pub mod metrics;
pub mod otlp;
pub mod record;
pub mod trace;

pub use self::metrics::{Metrics, install};
pub use self::record::{AttemptSpan, Observer, Record};
