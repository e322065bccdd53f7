//! API key → tenant. Keys come from `Authorization: Bearer` (OpenAI clients) or `x-api-key` (Anthropic).

use crate::config::TenantConfig;
use crate::protocol::headers::X_API_KEY;
use http::HeaderMap;
use std::collections::HashMap;
use std::sync::Arc;

#[derive(Debug)]
pub struct Tenant {
    pub id: String,
    pub tier: String,
    pub weight: u32,
}

#[derive(Debug, Default)]
pub struct TenantTable {
    by_key: HashMap<String, Arc<Tenant>>,
}

impl TenantTable {
    pub fn new<'a>(tenants: impl IntoIterator<Item = &'a TenantConfig>) -> TenantTable {
        let mut by_key = HashMap::new();
        for t in tenants {
            let tenant = Arc::new(Tenant {
                id: t.id.clone(),
                tier: t.tier.clone(),
                weight: t.weight,
            });
            for k in t.resolved_keys() {
                by_key.insert(k, tenant.clone());
            }
        }
        TenantTable { by_key }
    }

    /// The tenant whose key the request carries, if any.
    pub fn authenticate(&self, headers: &HeaderMap) -> Option<&Arc<Tenant>> {
        let key = headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .or_else(|| headers.get(&X_API_KEY).and_then(|v| v.to_str().ok()))?;
        self.by_key.get(key.trim())
    }
}
