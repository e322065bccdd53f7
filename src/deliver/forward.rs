//! The attempt loop: ask Balance for a backend (through Shape's slot queue), send, fail over on
//! connect error / timeout / 5xx / 429 while nothing has reached the client, and hand back a full or
//! streamed response.

use super::attempt::{Attempt, Failure};
use super::call::{Call, Delivered};
use super::client::UpstreamClient;
use crate::balance::{Backend, Balancer, InFlightGuard, Survey};
use crate::error::GatewayError;
use crate::observe::Metrics;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

pub struct Deliver {
    pub balancer: Arc<Balancer>,
    /// `[client set][backend id]`: set 0 for background tasks, one per serving worker after it.
    pub clients: Vec<Vec<UpstreamClient>>,
    pub max_attempts: u32,
    pub default_max_tokens: u32,
    /// What any one upstream answer may make Sluice hold.
    pub bounds: crate::config::BoundsConfig,
    /// Longest a request may wait for a cooldown to end: `shaping.max_wait_ms`.
    pub max_wait: Duration,
}

impl Deliver {
    /// A backend with a free slot for this call, excluding `tried`, waiting in Shape's queue while
    /// every backend of the route is at its limit, cooling down (upstream 429/503 with
    /// Retry-After) or paced until its quota resets: the queue serves waiters in priority order
    /// when capacity comes back. A waiter whose wait for a cooldown or quota reset outlasts what is
    /// left of its budget leaves at once with a 429 and when to come back, rather than sit out its
    /// queue wait for Sluice's own 503.
    async fn slot(
        &self,
        call: &Call<'_>,
        tried: &[usize],
    ) -> Result<(Arc<Backend>, InFlightGuard), GatewayError> {
        let want = call.want();
        let budget = self.budget(call);
        let entered = Instant::now();
        let got = call
            .admitted
            .slot(call.route.index, || {
                if let Some(slot) = self.balancer.take(call.route, &want, tried) {
                    return Ok(Ok(slot));
                }
                match self.balancer.survey(call.route, &want, tried) {
                    Survey::CoolingUntil(end) => {
                        let wait = end.saturating_duration_since(std::time::Instant::now());
                        if wait > budget.saturating_sub(entered.elapsed()) {
                            Ok(Err(wait))
                        } else {
                            // Back when the first cooldown or quota reset ends; a released slot
                            // (notify) may come first.
                            Err(Some(wait.max(Duration::from_millis(1))))
                        }
                    }
                    _ => Err(None),
                }
            })
            .await
            .map_err(GatewayError::Shed)?;
        got.map_err(|wait| GatewayError::UpstreamsRateLimited {
            route: call.route.route.to_string(),
            retry_after: wait.max(Duration::from_millis(1)),
        })
    }

    /// A slot taken at once, when no waiter goes first and a backend has room: the usual case,
    /// which needs no survey of the route (a backend with room is an available one).
    async fn slot_now(
        &self,
        call: &Call<'_>,
        tried: &[usize],
    ) -> Option<Result<(Arc<Backend>, InFlightGuard), GatewayError>> {
        let got = call
            .admitted
            .slot_now(call.route.index, || {
                self.balancer.take(call.route, &call.want(), tried)
            })
            .await?;
        Some(got.map_err(GatewayError::Shed))
    }

    /// How long this call may still wait for a backend's cooldown to end.
    fn budget(&self, call: &Call<'_>) -> Duration {
        call.admitted.deadline.map_or(self.max_wait, |d| {
            d.saturating_duration_since(Instant::now())
                .min(self.max_wait)
        })
    }

    pub async fn forward(&self, mut call: Call<'_>) -> Result<Delivered, GatewayError> {
        let mut tried: Vec<usize> = Vec::new();
        let mut last: Option<Failure> = None;
        let mut last_backend: Option<Arc<Backend>> = None;
        // Waiting out a cooldown is not an attempt: only sends count.
        let mut attempt = 0;
        while attempt < self.max_attempts {
            let queued_at = call
                .trace
                .as_ref()
                .map(|_| (std::time::SystemTime::now(), Instant::now()));
            let now = self.slot_now(&call, &tried).await;
            let survey = match now {
                Some(_) => Survey::Available,
                None => self.balancer.survey(call.route, &call.want(), &tried),
            };
            match survey {
                Survey::Available => {}
                Survey::NotServed => {
                    if let Some(field) = call.needs_responses {
                        let reason = match call
                            .pinned
                            .and_then(|id| self.balancer.backends().get(id))
                        {
                            Some(b) => format!(
                                "the backend holding it (`{}`) does not serve model `{}` on route `{}`",
                                b.name(),
                                call.model,
                                call.route.route
                            ),
                            None => format!(
                                "needs a backend that serves the responses api, and none serves model `{}`",
                                call.model
                            ),
                        };
                        return Err(GatewayError::BadRequest {
                            field: field.to_string(),
                            reason,
                        });
                    }
                    return Err(GatewayError::ModelNotFound(call.model.to_string()));
                }
                Survey::Unavailable if attempt == 0 && call.pinned.is_some() => {
                    let name = call
                        .pinned
                        .and_then(|id| self.balancer.backends().get(id))
                        .map_or("-", |b| b.name());
                    return Err(GatewayError::UpstreamUnavailable {
                        backend: name.to_string(),
                        reason: "it holds the response named by previous_response_id and is not available now".into(),
                    });
                }
                Survey::Unavailable => break,
                Survey::CoolingUntil(end) => {
                    // Every backend is only cooling down after upstream 429s or paced by its quota:
                    // past the request's budget, answer 429 with when; within it, wait in the slot
                    // queue (below), in priority order with the other waiters.
                    let wait = end.saturating_duration_since(std::time::Instant::now());
                    if wait > self.budget(&call) {
                        return Err(GatewayError::UpstreamsRateLimited {
                            route: call.route.route.to_string(),
                            retry_after: wait.max(Duration::from_millis(1)),
                        });
                    }
                }
            }
            let got = match now {
                Some(got) => got,
                None => self.slot(&call, &tried).await,
            };
            if let (Some(t), Some((at, since))) = (&call.trace, queued_at) {
                t.queued(
                    at,
                    since.elapsed(),
                    if got.is_ok() { "slot" } else { "shed" },
                );
            }
            let (backend, guard) = got?;
            attempt += 1;
            tried.push(backend.id);
            Metrics::routing(
                &call.route.route,
                backend.name(),
                call.route.algorithm.as_str(),
            );
            last_backend = Some(backend.clone());
            let client =
                &self.clients[super::client::client_set().min(self.clients.len() - 1)][backend.id];
            let mut span = call
                .trace
                .as_ref()
                .and_then(|t| t.attempt(backend.name(), backend.cfg.protocol.as_str()));
            let outcome = super::attempt::attempt(
                &mut call,
                &backend,
                client,
                guard,
                self.default_max_tokens,
                &self.bounds,
                &mut span,
            )
            .await;
            if let Some(s) = span {
                super::attempt::end_span(s, &outcome);
            }
            match outcome {
                Attempt::Done(response) => {
                    return Ok(Delivered {
                        response,
                        backend: last_backend,
                    });
                }
                Attempt::Retry(reason, failure) => {
                    if attempt < self.max_attempts {
                        Metrics::failover(backend.name(), reason);
                        tracing::info!(request_id = %call.request_id, backend = %backend.name(), reason, "failing over");
                    }
                    last = Some(failure);
                }
            }
        }
        match last {
            Some(Failure::Upstream(response)) => Ok(Delivered {
                response,
                backend: last_backend,
            }),
            Some(Failure::Error(e)) => Err(e),
            None => Err(GatewayError::NoHealthyBackend(call.route.route.to_string())),
        }
    }
}
