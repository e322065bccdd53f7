//! The Lua scripts and the Redis calls: one `EVALSHA` within the per-call budget, and the connection
//! set-up that loads the scripts and checks that Redis answers in time.

use super::cluster_limiter::Inner;
use crate::observe::Metrics;
use ::redis::aio::MultiplexedConnection;
use ::redis::{AsyncConnectionConfig, FromRedisValue, RedisError, ScriptInvocation};
use std::sync::atomic::Ordering;

/// Check-and-take of a tenant's request and token buckets (contract in the script's header).
pub const TOKEN_BUCKET_LUA: &str = include_str!("../../lua/token_bucket.lua");
/// Refund or charge a token reservation after the response (contract in the script's header).
pub const RECONCILE_LUA: &str = include_str!("../../lua/reconcile.lua");
/// Give back (a booked request gave up) or charge (fallback admissions) after the fact (contract in the script's header).
pub const ADJUST_LUA: &str = include_str!("../../lua/adjust.lua");

#[derive(Debug)]
pub(super) enum CallError {
    /// Breaker closed but no connection installed (a transition in progress): not a failure.
    NoConnection,
    Timeout,
    Redis(RedisError),
    BadReply(usize),
}

impl CallError {
    pub(super) fn kind(&self) -> &'static str {
        match self {
            CallError::Timeout => "timeout",
            CallError::Redis(e) if e.is_timeout() => "timeout",
            _ => "error",
        }
    }
}

impl CallError {
    /// Redis refused the credentials (wrong password or ACL user), or the user may not run what the
    /// limiter needs: retrying will not help until the config or the ACL changes.
    pub(super) fn auth_failed(&self) -> bool {
        match self {
            CallError::Redis(e) => {
                e.kind() == ::redis::ErrorKind::AuthenticationFailed
                    || matches!(e.code(), Some("NOAUTH" | "WRONGPASS" | "NOPERM"))
            }
            _ => false,
        }
    }
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::NoConnection => f.write_str("no connection"),
            CallError::Timeout => f.write_str("timed out"),
            CallError::Redis(e) => write!(f, "{e}"),
            CallError::BadReply(n) => write!(f, "unexpected script reply ({n} values)"),
        }
    }
}

impl Inner {
    /// One script call within the per-call budget; failures are counted (and may open the breaker).
    pub(super) async fn call<T: FromRedisValue>(
        &self,
        inv: &ScriptInvocation<'_>,
    ) -> Result<T, CallError> {
        let conn = self.conn.read().unwrap_or_else(|e| e.into_inner()).clone();
        let Some(mut conn) = conn else {
            return Err(CallError::NoConnection);
        };
        self.calls.fetch_add(1, Ordering::Relaxed);
        Metrics::limiter_redis_call();
        let err = match tokio::time::timeout(self.timeout, inv.invoke_async::<T>(&mut conn)).await {
            Ok(Ok(v)) => {
                self.breaker.success();
                if self.unsettled.swap(false, Ordering::Relaxed) {
                    // Failed calls before this one were answered by the fallback: count them
                    // against the global buckets now (once per failure streak).
                    self.charge_spent(&mut conn).await;
                }
                return Ok(v);
            }
            Ok(Err(e)) => CallError::Redis(e),
            Err(_) => CallError::Timeout,
        };
        let kind = err.kind();
        self.failed_kind(kind, &err);
        Err(err)
    }

    /// Connect, load the scripts (so no request pays a NOSCRIPT round trip) and check that Redis
    /// answers within the per-call budget (a slower Redis would only flap the breaker).
    pub(super) async fn connect(&self) -> Result<MultiplexedConnection, CallError> {
        let cfg = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.connect_timeout))
            .set_response_timeout(Some(self.connect_timeout));
        let setup = async {
            let mut conn = self
                .client
                .get_multiplexed_async_connection_with_config(&cfg)
                .await?;
            self.check_script.load_async(&mut conn).await?;
            self.reconcile_script.load_async(&mut conn).await?;
            self.adjust_script.load_async(&mut conn).await?;
            Ok::<_, RedisError>(conn)
        };
        let mut conn = tokio::time::timeout(self.connect_timeout, setup)
            .await
            .map_err(|_| CallError::Timeout)?
            .map_err(CallError::Redis)?;
        let mut last = CallError::Timeout;
        let ping_cmd = ::redis::cmd("PING");
        for _ in 0..3 {
            let ping = ping_cmd.query_async::<String>(&mut conn);
            match tokio::time::timeout(self.timeout, ping).await {
                Ok(Ok(_)) => return Ok(conn),
                Ok(Err(e)) => last = CallError::Redis(e),
                Err(_) => last = CallError::Timeout,
            }
        }
        Err(last)
    }
}
