//! What Deliver is handed: one client request, parsed, admitted and routed.

use crate::balance::{Backend, Want};
use crate::observe::Record;
use crate::protocol::{Endpoint, RequestBody, RespBody};
use crate::route::RouteDecision;
use crate::shape::{Admitted, UsageSink};
use crate::translate::PlanInput;
use http::{HeaderMap, Response};
use std::sync::Arc;

pub struct Call<'a> {
    pub endpoint: Endpoint,
    pub body: &'a RequestBody,
    pub stream: bool,
    pub include_usage: bool,
    pub model: &'a str,
    pub tenant: &'a str,
    pub route: &'a RouteDecision,
    pub request_id: &'a str,
    pub client_headers: &'a HeaderMap,
    pub affinity_key: Option<&'a str>,
    /// A Responses call's first field that only a backend serving Responses can express.
    pub needs_responses: Option<&'a str>,
    /// The backend a Responses follow-up must reach (it holds `previous_response_id`).
    pub pinned: Option<usize>,
    pub est_input_tokens: u64,
    /// Shape's pass: class, deadline, and the way to a backend slot.
    pub admitted: &'a Admitted<'a>,
    /// Told the tokens used once the response completes (token buckets only).
    pub on_usage: Option<UsageSink>,
    /// What the access log and traces are told (both off: `None`).
    pub trace: Option<Arc<Record>>,
}

impl Call<'_> {
    /// What Balance needs to choose.
    pub fn want(&self) -> Want<'_> {
        Want {
            endpoint: self.endpoint,
            model: self.model,
            stream: self.stream,
            priority: self.admitted.priority,
            est_input_tokens: self.est_input_tokens,
            est_output_tokens: self.admitted.est_output,
            affinity_key: self.affinity_key,
            needs_responses: self.needs_responses.is_some(),
            pinned: self.pinned,
        }
    }

    /// What Translate needs to plan the upstream request.
    pub fn plan_input(&self) -> PlanInput<'_> {
        PlanInput {
            endpoint: self.endpoint,
            body: self.body,
            model: self.model,
            stream: self.stream,
            include_usage: self.include_usage,
        }
    }
}

/// What Deliver returns: the response and the backend that answered (for headers and metrics).
pub struct Delivered {
    pub response: Response<RespBody>,
    pub backend: Option<Arc<Backend>>,
}
