//! Beside the pipeline: the access log, one structured line per request at info level (target
//! `sluice::access`) when `observe.access_log` is on. Ids, names, numbers and durations only: never
//! a key, a header value or a body.

use std::time::Duration;

/// One finished request.
pub struct Line<'a> {
    pub request_id: &'a str,
    pub tenant: &'a str,
    pub route: &'a str,
    pub backend: &'a str,
    pub model: &'a str,
    pub status: u16,
    pub total: Duration,
    pub queue_wait: Option<Duration>,
    pub ttft: Option<Duration>,
    pub attempts: u32,
    /// Input and output tokens.
    pub usage: Option<(u64, u64)>,
    /// How a stream ended (`complete`, a fault, `client_gone`); absent for whole responses.
    pub stream_end: Option<&'static str>,
    pub trace_id: Option<&'a str>,
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

pub fn write(l: &Line<'_>) {
    tracing::info!(
        target: "sluice::access",
        request_id = l.request_id,
        tenant = l.tenant,
        route = l.route,
        backend = l.backend,
        model = l.model,
        status = l.status,
        total_ms = ms(l.total),
        queue_wait_ms = l.queue_wait.map(ms),
        ttft_ms = l.ttft.map(ms),
        attempts = l.attempts,
        input_tokens = l.usage.map(|u| u.0),
        output_tokens = l.usage.map(|u| u.1),
        stream_end = l.stream_end,
        trace_id = l.trace_id,
        "access"
    );
}
