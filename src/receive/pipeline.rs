//! The built pipeline a request walks: what Receive holds itself (tenants, ids, limits), then each
//! later stage in flow order. `app` builds it; `handler` walks it.

use super::{BodyBudget, RequestIds, TenantTable};
use crate::config::{AffinityConfig, BoundsConfig};
use crate::deliver::Deliver;
use crate::observe::admin::Admin;
use crate::route::Router;
use crate::shape::Door;

pub struct Pipeline {
    // Receive.
    pub tenants: TenantTable,
    pub ids: RequestIds,
    /// `listen.max_body_bytes`.
    pub max_body_bytes: usize,
    /// `listen.max_header_bytes`.
    pub max_header_bytes: usize,
    /// Body timeouts and the node's budget for bodies being read.
    pub bounds: BoundsConfig,
    pub body_budget: BodyBudget,
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
    /// The access log and traces (`observe:`): one check per request when both are off.
    pub observe: crate::observe::Observer,
}
