//! The over-limit cache: after Redis refuses a tenant with a retry-after, the node refuses that
//! tenant itself until then, without a Redis call. A request-bucket refusal covers every request; a
//! token-bucket refusal covers requests asking at least as many tokens (a smaller ask may fit).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

#[derive(Debug, Clone, Copy, Default)]
struct Entry {
    /// The request bucket is empty until then.
    requests_until: Option<Instant>,
    /// Asks of at least `.1` tokens do not fit until `.0`.
    tokens_until: Option<(Instant, u64)>,
}

#[derive(Debug, Default)]
pub(crate) struct OverLimitCache {
    entries: Mutex<HashMap<String, Entry>>,
}

/// Why a cached refusal applies and for how long.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Hit {
    pub(crate) wait: Duration,
    pub(crate) requests: bool,
    pub(crate) tokens: bool,
}

impl OverLimitCache {
    /// Remember a refusal: request bucket empty for `requests_wait`, `tokens` (clamped ask) not
    /// fitting for `tokens_wait`. Zero waits mean that bucket did not refuse.
    pub(crate) fn refused(
        &self,
        tenant: &str,
        now: Instant,
        requests_wait: Duration,
        tokens: u64,
        tokens_wait: Duration,
    ) {
        let mut map = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let e = map.entry(tenant.to_string()).or_default();
        if !requests_wait.is_zero() {
            e.requests_until = Some(now + requests_wait);
        }
        if !tokens_wait.is_zero() {
            e.tokens_until = Some((now + tokens_wait, tokens));
        }
    }

    /// Tokens came back to the bucket (a local reconcile refund): token refusals may be stale.
    pub(crate) fn tokens_returned(&self, tenant: &str) {
        let mut map = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(e) = map.get_mut(tenant) {
            e.tokens_until = None;
        }
    }

    /// A cached refusal for this ask, if one still holds.
    pub(crate) fn check(
        &self,
        tenant: &str,
        requests: u32,
        tokens: u64,
        now: Instant,
    ) -> Option<Hit> {
        let mut map = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let e = map.get_mut(tenant)?;
        if e.requests_until.is_some_and(|u| u <= now) {
            e.requests_until = None;
        }
        if e.tokens_until.is_some_and(|(u, _)| u <= now) {
            e.tokens_until = None;
        }
        if e.requests_until.is_none() && e.tokens_until.is_none() {
            map.remove(tenant);
            return None;
        }
        let mut hit = Hit {
            wait: Duration::ZERO,
            requests: false,
            tokens: false,
        };
        if let Some(u) = e.requests_until
            && requests > 0
        {
            hit.wait = u - now;
            hit.requests = true;
        }
        if let Some((u, need)) = e.tokens_until
            && tokens > 0
            && tokens >= need
        {
            hit.wait = hit.wait.max(u - now);
            hit.tokens = true;
        }
        (hit.requests || hit.tokens).then_some(hit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_refusal_covers_everything_until_it_passes() {
        let c = OverLimitCache::default();
        let t0 = Instant::now();
        c.refused("a", t0, Duration::from_millis(500), 0, Duration::ZERO);
        let hit = c.check("a", 1, 0, t0 + Duration::from_millis(100)).unwrap();
        assert_eq!(hit.wait, Duration::from_millis(400));
        assert!(hit.requests && !hit.tokens);
        assert!(c.check("b", 1, 0, t0).is_none());
        assert!(
            c.check("a", 1, 0, t0 + Duration::from_millis(500))
                .is_none()
        );
        assert!(
            c.entries.lock().unwrap().is_empty(),
            "expired entries are dropped"
        );
    }

    #[test]
    fn token_refusal_covers_only_asks_as_large() {
        let c = OverLimitCache::default();
        let t0 = Instant::now();
        c.refused("a", t0, Duration::ZERO, 300, Duration::from_secs(6));
        assert!(c.check("a", 1, 299, t0).is_none());
        assert!(c.check("a", 1, 0, t0).is_none());
        let hit = c.check("a", 1, 300, t0).unwrap();
        assert!(hit.tokens && !hit.requests);
        assert_eq!(hit.wait, Duration::from_secs(6));
        c.tokens_returned("a");
        assert!(c.check("a", 1, 300, t0).is_none());
    }
}
