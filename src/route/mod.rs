//! Route: the third stage (receive → shape → **route** → balance → deliver). Rules in order, first
//! match wins → a backend pool and an algorithm. Pure: no I/O, no clock, no runtime state; the
//! decision is plain data handed to Balance. May import `config` only.

use crate::config::Algorithm;
use crate::config::{Config, MatchConfig, RouteConfig};
use crate::hash::stable_hash;
use http::{HeaderMap, HeaderName};
use std::sync::Arc;

/// What Route looks at.
#[derive(Debug, Clone, Copy)]
pub struct RequestMeta<'a> {
    pub path: &'a str,
    pub headers: &'a HeaderMap,
    pub tier: &'a str,
    pub model: &'a str,
    /// Spreads rules with `weight` < 100 deterministically (the request id).
    pub request_id: &'a str,
}

/// Route's output: plain data. The stages after it keep their per-route runtime state (selector
/// state, slot queue) in tables of their own, indexed by [`RouteDecision::index`].
#[derive(Debug, Clone)]
pub struct RouteDecision {
    /// Position among [`Router::decisions`]: rules in order, then the default.
    pub index: usize,
    pub route: Arc<str>,
    /// `route` as the `x-sluice-route` header value (None if it cannot be one).
    pub header: Option<http::HeaderValue>,
    pub pool: Arc<[usize]>,
    pub algorithm: Algorithm,
    /// Skip unhealthy backends.
    pub health_check: bool,
}

#[derive(Debug)]
struct CompiledRule {
    headers: Vec<(HeaderName, String)>,
    path: Option<String>,
    tiers: Option<Vec<String>>,
    models: Option<Vec<String>>,
    weight: u32,
    decision: RouteDecision,
}

/// The compiled rule table.
#[derive(Debug)]
pub struct Router {
    rules: Vec<CompiledRule>,
    default: RouteDecision,
}

fn decision(index: usize, name: &str, r: &RouteConfig, cfg: &Config) -> RouteDecision {
    let pool: Vec<usize> = r
        .backend
        .value
        .as_slice()
        .iter()
        .filter_map(|n| cfg.backends.iter().position(|b| &b.value.name == n))
        .collect();
    RouteDecision {
        index,
        route: Arc::from(name),
        header: http::HeaderValue::from_str(name).ok(),
        pool: pool.into(),
        algorithm: r.algorithm.unwrap_or(cfg.routing.strategy),
        health_check: r.health_check,
    }
}

impl Router {
    /// Build from a validated config (backend names resolve).
    pub fn new(cfg: &Config) -> Router {
        let rules = cfg
            .routing
            .rules
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let r = &r.value;
                let MatchConfig {
                    headers,
                    path,
                    user_tier,
                    model,
                } = &r.matches;
                CompiledRule {
                    headers: headers
                        .iter()
                        .filter_map(|(k, v)| {
                            HeaderName::try_from(k.to_ascii_lowercase())
                                .ok()
                                .map(|h| (h, v.clone()))
                        })
                        .collect(),
                    path: path.clone(),
                    tiers: user_tier.as_ref().map(|t| t.as_slice().to_vec()),
                    models: model.as_ref().map(|m| m.as_slice().to_vec()),
                    weight: r.route.weight.unwrap_or(100),
                    decision: decision(i, &r.name, &r.route, cfg),
                }
            })
            .collect();
        let default = match &cfg.routing.default {
            Some(d) => decision(cfg.routing.rules.len(), "default", d, cfg),
            None => RouteDecision {
                index: cfg.routing.rules.len(),
                route: Arc::from("default"),
                header: Some(http::HeaderValue::from_static("default")),
                pool: (0..cfg.backends.len()).collect::<Vec<_>>().into(),
                algorithm: cfg.routing.strategy,
                health_check: true,
            },
        };
        Router { rules, default }
    }

    /// Every route's decision (rules, then the default), in [`RouteDecision::index`] order.
    pub fn decisions(&self) -> impl Iterator<Item = &RouteDecision> {
        self.rules
            .iter()
            .map(|r| &r.decision)
            .chain(std::iter::once(&self.default))
    }

    /// First matching rule, or the default route.
    pub fn decide(&self, meta: &RequestMeta<'_>) -> &RouteDecision {
        self.rules
            .iter()
            .find(|r| r.matches(meta))
            .map(|r| &r.decision)
            .unwrap_or(&self.default)
    }
}

impl CompiledRule {
    fn matches(&self, m: &RequestMeta<'_>) -> bool {
        if let Some(p) = &self.path
            && !m.path.starts_with(p.as_str())
        {
            return false;
        }
        if let Some(t) = &self.tiers
            && !t.iter().any(|t| t == m.tier)
        {
            return false;
        }
        if let Some(models) = &self.models
            && !models.iter().any(|x| x == m.model)
        {
            return false;
        }
        let headers_ok = self
            .headers
            .iter()
            .all(|(k, v)| m.headers.get(k).and_then(|h| h.to_str().ok()) == Some(v.as_str()));
        if !headers_ok {
            return false;
        }
        self.weight >= 100 || (stable_hash(m.request_id.as_bytes()) % 100) < self.weight as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const YAML: &str = r#"
backends:
  - { name: premium-ai, url: "http://127.0.0.1:1", protocol: openai }
  - { name: openai-basic, url: "http://127.0.0.1:2", protocol: openai }
  - { name: anthropic-basic, url: "http://127.0.0.1:3", protocol: anthropic }
routing:
  strategy: adaptive
  rules:
    - name: high-priority
      match: { headers: { X-Priority: critical } }
      route: { backend: premium-ai, weight: 100 }
    - name: cost-optimized
      match: { path: /v1/completions, user_tier: free }
      route: { backend: [openai-basic, anthropic-basic], algorithm: least-cost }
    - name: canary
      match: { model: canary }
      route: { backend: anthropic-basic, weight: 30 }
  default: { backend: [openai-basic], algorithm: round-robin }
"#;

    fn meta<'a>(
        path: &'a str,
        h: &'a HeaderMap,
        tier: &'a str,
        model: &'a str,
        id: &'a str,
    ) -> RequestMeta<'a> {
        RequestMeta {
            path,
            headers: h,
            tier,
            model,
            request_id: id,
        }
    }

    #[test]
    fn first_match_wins_in_order() {
        let cfg = Config::parse(YAML).unwrap();
        let r = Router::new(&cfg);
        let mut h = HeaderMap::new();
        h.insert("x-priority", "critical".parse().unwrap());
        let d = r.decide(&meta("/v1/completions", &h, "free", "m", "1"));
        assert_eq!(&*d.route, "high-priority");
        assert_eq!(&*d.pool, &[0]);
        let empty = HeaderMap::new();
        let d = r.decide(&meta("/v1/completions", &empty, "free", "m", "1"));
        assert_eq!(&*d.route, "cost-optimized");
        assert_eq!(&*d.pool, &[1, 2]);
        assert_eq!(d.algorithm, Algorithm::LeastCost);
        let d = r.decide(&meta("/v1/completions", &empty, "premium", "m", "1"));
        assert_eq!(&*d.route, "default");
        assert_eq!(d.algorithm, Algorithm::RoundRobin);
    }

    #[test]
    fn weight_takes_its_share_and_the_rest_falls_through() {
        let cfg = Config::parse(YAML).unwrap();
        let r = Router::new(&cfg);
        let h = HeaderMap::new();
        let ids: Vec<String> = (0..10_000).map(|i| format!("req-{i}")).collect();
        let hits = ids
            .iter()
            .filter(|id| &*r.decide(&meta("/v1/chat", &h, "x", "canary", id)).route == "canary")
            .count();
        assert!((2_700..3_300).contains(&hits), "{hits}");
    }
}
