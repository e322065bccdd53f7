//! The built pipeline a request walks: what Receive holds itself (tenants, ids, limits), then each
//! later stage in flow order. `app` builds it from one config; `handler` walks it. A config reload
//! builds the next one and swaps it into the [`Live`] the listeners read: each request loads the
//! current pipeline once and keeps it to the end.

use super::{BodyBudget, RequestIds, TenantTable};
use crate::config::{AffinityConfig, BoundsConfig};
use crate::deliver::Deliver;
use crate::observe::admin::Admin;
use crate::reload::Reloader;
use crate::route::Router;
use crate::shape::Door;
use std::sync::Arc;

/// The pipeline new requests get: swapped whole by a config reload.
pub type Live = std::sync::Arc<arc_swap::ArcSwap<Pipeline>>;

pub struct Pipeline {
    // Receive.
    pub tenants: TenantTable,
    /// Shared by every config's pipeline, as the body budget and the reloader are.
    pub ids: Arc<RequestIds>,
    /// `listen.max_body_bytes`.
    pub max_body_bytes: usize,
    /// `listen.max_header_bytes`.
    pub max_header_bytes: usize,
    /// Body timeouts and the node's budget for bodies being read.
    pub bounds: BoundsConfig,
    pub body_budget: Arc<BodyBudget>,
    pub affinity: Option<AffinityConfig>,
    /// `/v1/models`.
    pub models: super::models::ModelList,
    /// `x-sluice-node` on every response.
    pub node_header: http::HeaderValue,
    // Shape, Route, Balance + Deliver.
    pub door: Door,
    pub router: Router,
    pub deliver: Deliver,
    // Beside them.
    pub admin: Admin,
    /// `POST /admin/reload`.
    pub reloader: Arc<Reloader>,
    /// The access log and traces (`observe:`): one check per request when both are off.
    pub observe: Arc<crate::observe::Observer>,
}
