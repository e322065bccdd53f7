//! `observe:` what Sluice tells about each request besides metrics: the access log and OpenTelemetry
//! traces exported over OTLP. Both off by default. The `OTEL_EXPORTER_OTLP_*` environment variables
//! turn traces on too, and fill what `otlp:` leaves out (resolved in `observe::otlp`).

use super::{ConfigError, Spanned};
use serde::Deserialize;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObserveConfig {
    /// One structured line per request at info level (target `sluice::access`).
    #[serde(default)]
    pub access_log: bool,
    /// Export traces over OTLP; absent: only when the `OTEL_EXPORTER_OTLP_*` variables say where.
    #[serde(default)]
    pub otlp: Option<Spanned<OtlpConfig>>,
}

/// The protocols Sluice exports with.
pub const OTLP_HTTP_PROTOBUF: &str = "http/protobuf";
pub const OTLP_GRPC: &str = "grpc";

/// How spans travel to the collector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtlpProtocol {
    /// Protobuf over HTTP: `POST …/v1/traces` (collectors listen on 4318).
    HttpProtobuf,
    /// OTLP/gRPC: `TraceService/Export` on the collector's base URL (collectors listen on 4317).
    Grpc,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OtlpConfig {
    /// The collector's base URL, like `OTEL_EXPORTER_OTLP_ENDPOINT`: for `http/protobuf`
    /// `/v1/traces` is appended unless it ends with it; for `grpc` it is used as it is. Absent: the
    /// environment's, else `http://localhost:4318` (`grpc`: `http://localhost:4317`).
    #[serde(default)]
    pub endpoint: Option<String>,
    /// `http/protobuf` or `grpc`. Absent: `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL`, then
    /// `OTEL_EXPORTER_OTLP_PROTOCOL`, else `http/protobuf`.
    #[serde(default)]
    pub protocol: Option<String>,
    /// Sent with every export (e.g. a collector's API key; gRPC metadata for `grpc`); merged with `OTEL_EXPORTER_OTLP_HEADERS`.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Share of new traces sampled (0..=1); a client's `traceparent` decides for its own trace.
    /// Absent: `OTEL_TRACES_SAMPLER_ARG`, else 1.
    #[serde(default)]
    pub sample_ratio: Option<f64>,
    /// `service.name` of the exported resource. Absent: `OTEL_SERVICE_NAME`, else `sluice`.
    #[serde(default)]
    pub service_name: Option<String>,
    /// Finished spans waiting for export at most; past it spans are dropped and counted.
    #[serde(default = "default_queue")]
    pub max_queue_spans: usize,
    /// Spans per export request at most.
    #[serde(default = "default_batch")]
    pub max_batch_spans: usize,
    /// How often the queue is exported (sooner when a batch is full).
    #[serde(default = "default_interval")]
    pub export_interval_ms: u64,
    /// One export request's bound.
    #[serde(default = "default_timeout")]
    pub export_timeout_ms: u64,
}

fn default_queue() -> usize {
    4096
}
fn default_batch() -> usize {
    512
}
fn default_interval() -> u64 {
    1000
}
fn default_timeout() -> u64 {
    10_000
}

impl OtlpConfig {
    /// The defaults of every field, for traces turned on by the environment alone.
    pub fn from_env_only() -> OtlpConfig {
        OtlpConfig {
            max_queue_spans: default_queue(),
            max_batch_spans: default_batch(),
            export_interval_ms: default_interval(),
            export_timeout_ms: default_timeout(),
            ..OtlpConfig::default()
        }
    }
}

impl ObserveConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        let Some(o) = &self.otlp else { return Ok(()) };
        let line = Some(o.referenced.line());
        let o = &o.value;
        let bad = |field: &str, reason: String| {
            ConfigError::invalid(format!("observe.otlp.{field}"), line, reason)
        };
        if let Some(e) = &o.endpoint {
            check_endpoint(e).map_err(|r| bad("endpoint", r))?;
        }
        if let Some(p) = &o.protocol {
            check_protocol(p).map_err(|r| bad("protocol", r))?;
        }
        for (k, v) in &o.headers {
            if http::HeaderName::from_bytes(k.as_bytes()).is_err()
                || http::HeaderValue::from_str(v).is_err()
            {
                return Err(bad("headers", format!("`{k}` is not a valid header")));
            }
        }
        if let Some(r) = o.sample_ratio
            && !(0.0..=1.0).contains(&r)
        {
            return Err(bad("sample_ratio", "must be between 0 and 1".into()));
        }
        if o.max_queue_spans == 0 {
            return Err(bad("max_queue_spans", "must be at least 1".into()));
        }
        if o.max_batch_spans == 0 || o.max_batch_spans > o.max_queue_spans {
            return Err(bad(
                "max_batch_spans",
                "must be between 1 and max_queue_spans".into(),
            ));
        }
        if o.export_interval_ms == 0 || o.export_timeout_ms == 0 {
            return Err(bad(
                "export_interval_ms",
                "intervals and timeouts must be above 0".into(),
            ));
        }
        Ok(())
    }
}

/// An `http://` or `https://` URL.
pub fn check_endpoint(e: &str) -> Result<(), String> {
    match e.parse::<http::Uri>() {
        Ok(u) if matches!(u.scheme_str(), Some("http" | "https")) && u.authority().is_some() => {
            Ok(())
        }
        _ => Err(format!("`{e}` is not an http(s) url")),
    }
}

/// `http/protobuf` or `grpc` (`http/json` is not spoken).
pub fn check_protocol(p: &str) -> Result<OtlpProtocol, String> {
    match p {
        OTLP_HTTP_PROTOBUF => Ok(OtlpProtocol::HttpProtobuf),
        OTLP_GRPC => Ok(OtlpProtocol::Grpc),
        other => Err(format!(
            "`{other}` is not one of: {OTLP_HTTP_PROTOBUF}, {OTLP_GRPC}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    const MIN: &str =
        "backends:\n  - { name: a, url: \"http://127.0.0.1:9\", protocol: openai }\nrouting: {}\n";

    fn err(observe: &str) -> String {
        Config::parse(&format!("{MIN}observe:\n{observe}"))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn off_by_default_and_a_full_section_parses() {
        let c = Config::parse(MIN).unwrap();
        assert!(!c.observe.access_log && c.observe.otlp.is_none());
        let c = Config::parse(&format!(
            "{MIN}observe:\n  access_log: true\n  otlp:\n    endpoint: https://collector:4318\n    protocol: http/protobuf\n    headers: {{ x-api-key: k }}\n    sample_ratio: 0.25\n"
        ))
        .unwrap();
        let o = &c.observe.otlp.unwrap().value;
        assert_eq!(o.sample_ratio, Some(0.25));
        assert_eq!(o.max_queue_spans, 4096);
        let c = Config::parse(&format!(
            "{MIN}observe:\n  otlp:\n    endpoint: https://collector:4317\n    protocol: grpc\n"
        ))
        .unwrap();
        assert_eq!(
            c.observe.otlp.unwrap().value.protocol.as_deref(),
            Some("grpc")
        );
    }

    #[test]
    fn errors_name_the_field_and_the_line() {
        for (observe, field) in [
            (
                "  otlp:\n    protocol: http/json\n",
                "observe.otlp.protocol",
            ),
            (
                "  otlp:\n    endpoint: collector:4318\n",
                "observe.otlp.endpoint",
            ),
            (
                "  otlp:\n    sample_ratio: 1.5\n",
                "observe.otlp.sample_ratio",
            ),
            (
                "  otlp:\n    max_queue_spans: 0\n",
                "observe.otlp.max_queue_spans",
            ),
            (
                "  otlp:\n    max_batch_spans: 10\n    max_queue_spans: 5\n",
                "observe.otlp.max_batch_spans",
            ),
        ] {
            let e = err(observe);
            assert!(e.contains(field) && e.contains("line 6"), "{e}");
        }
        assert!(
            err("  otlp:\n    protocol: foo\n")
                .contains("`foo` is not one of: http/protobuf, grpc")
        );
        // Unknown fields are refused by the reader.
        assert!(err("  acces_log: true\n").contains("acces_log"));
    }
}
