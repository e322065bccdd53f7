//! Every gossip key Sluice writes, in one place, and their parsing into typed values.
//!
//! | key | value | written by |
//! |---|---|---|
//! | `status` | `ready` / `leaving` | [`super::Cluster::join`], [`super::Cluster::leave`] |
//! | `backend:<name>:state` | a [`super::BackendReport`] (`h=1;lat=12.5;…`) | [`super::publisher`] |
//! | `backend:<name>:quota` | the node's latest quota observation (`t=…;requests=60/12/48000`) | [`super::publisher`] via [`super::quota`] |
//! | `config` | the config version the node serves (a short hash of its file) | [`super::Cluster::set_config_version`] |
//!
//! Values are strings (chitchat's model). Keys stay short: every live node gossips all of its keys.

/// The config version the node serves: operators see in `/admin/cluster` when nodes disagree.
pub const CONFIG_VERSION: &str = "config";

/// The node's lifecycle: `ready` from `join`, `leaving` once `leave` starts.
pub const STATUS: &str = "status";

/// Prefix of the per-backend report keys: `backend:<name>:state`.
pub const BACKEND_PREFIX: &str = "backend:";
/// Suffix of the per-backend report keys.
pub const BACKEND_STATE_SUFFIX: &str = ":state";

/// Suffix of the per-backend quota keys.
pub const BACKEND_QUOTA_SUFFIX: &str = ":quota";

/// `backend:<name>:quota`.
pub fn backend_quota_key(backend: &str) -> String {
    format!("{BACKEND_PREFIX}{backend}{BACKEND_QUOTA_SUFFIX}")
}

/// A node's lifecycle as gossiped under [`STATUS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeStatus {
    /// Serving; counts as a live member.
    Ready,
    /// Announced a graceful leave: no longer counted, even before the failure detector notices.
    Leaving,
}

impl NodeStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeStatus::Ready => "ready",
            NodeStatus::Leaving => "leaving",
        }
    }

    /// Missing or unknown values count as `Ready`: a newer node may write statuses we do not know.
    pub fn parse(value: Option<&str>) -> NodeStatus {
        match value {
            Some("leaving") => NodeStatus::Leaving,
            _ => NodeStatus::Ready,
        }
    }
}

/// `backend:<name>:state`.
pub fn backend_state_key(backend: &str) -> String {
    format!("{BACKEND_PREFIX}{backend}{BACKEND_STATE_SUFFIX}")
}

/// The backend name of a `backend:<name>:state` key (names may contain `:`).
pub fn parse_backend_state_key(key: &str) -> Option<&str> {
    let name = key
        .strip_prefix(BACKEND_PREFIX)?
        .strip_suffix(BACKEND_STATE_SUFFIX)?;
    (!name.is_empty()).then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_key_round_trip() {
        assert_eq!(
            backend_state_key("openai-basic"),
            "backend:openai-basic:state"
        );
        assert_eq!(
            parse_backend_state_key("backend:openai-basic:state"),
            Some("openai-basic")
        );
        assert_eq!(parse_backend_state_key("backend:a:b:state"), Some("a:b"));
        assert_eq!(parse_backend_state_key("backend::state"), None);
        assert_eq!(parse_backend_state_key("status"), None);
        assert_eq!(parse_backend_state_key("backend:x:other"), None);
    }

    #[test]
    fn status_parse() {
        assert_eq!(NodeStatus::parse(Some("leaving")), NodeStatus::Leaving);
        assert_eq!(NodeStatus::parse(Some("ready")), NodeStatus::Ready);
        assert_eq!(NodeStatus::parse(None), NodeStatus::Ready);
        assert_eq!(NodeStatus::parse(Some("draining")), NodeStatus::Ready);
    }
}
