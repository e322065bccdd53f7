//! The Lua scripts and the Redis calls: one `EVALSHA` within the per-call budget, and the connection
//! set-up that loads the scripts and checks that Redis answers in time.

use super::cluster_limiter::Inner;
use super::plan::Plan;
use super::topology::Conn;
use crate::observe::Metrics;
use ::redis::{ErrorKind, FromRedisValue, RedisError, ScriptInvocation, Value};
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
    /// One script call for `plan`'s tenant within the per-call budget; failures are counted against
    /// the tenant's breaker group (and may open its breaker).
    pub(super) async fn call<T: FromRedisValue>(
        &self,
        plan: &Plan,
        inv: &ScriptInvocation<'_>,
    ) -> Result<T, CallError> {
        self.call_in(plan.group, inv).await
    }

    /// [`Inner::call`] counted against breaker group `group`.
    pub(super) async fn call_in<T: FromRedisValue>(
        &self,
        group: usize,
        inv: &ScriptInvocation<'_>,
    ) -> Result<T, CallError> {
        let conn = self.conn.read().unwrap_or_else(|e| e.into_inner()).clone();
        let Some(mut conn) = conn else {
            return Err(CallError::NoConnection);
        };
        let g = &self.groups[group];
        self.calls.fetch_add(1, Ordering::Relaxed);
        Metrics::limiter_redis_call();
        let err = match tokio::time::timeout(self.timeout, inv.invoke_async::<T>(&mut conn)).await {
            Ok(Ok(v)) => {
                g.breaker.success();
                if g.unsettled.swap(false, Ordering::Relaxed) {
                    // Failed calls before this one were answered by the fallback: count them
                    // against the global buckets now (once per failure streak).
                    self.charge_spent(g, &mut conn).await;
                }
                return Ok(v);
            }
            Ok(Err(e)) => CallError::Redis(e),
            Err(_) => CallError::Timeout,
        };
        let kind = err.kind();
        self.failed_kind(g, kind, &err);
        Err(err)
    }

    /// Load the scripts (so no request pays a NOSCRIPT round trip; in a cluster, on every primary).
    pub(super) async fn load_scripts(&self, conn: &mut Conn) -> Result<(), RedisError> {
        let load = async {
            self.check_script.load_async(conn).await?;
            self.reconcile_script.load_async(conn).await?;
            self.adjust_script.load_async(conn).await?;
            Ok::<_, RedisError>(())
        };
        tokio::time::timeout(self.connect_timeout, load)
            .await
            .unwrap_or_else(|_| Err(RedisError::from((ErrorKind::Io, "script load timed out"))))
    }

    /// Connect and load the scripts. One server: also check that it answers within the per-call
    /// budget (a slower Redis would only flap the breaker). A cluster: the first seed that answers
    /// is enough (a shard that is down must not keep the others in fallback); the slot groups are
    /// probed each on their own ([`Inner::probe`]) and a failed script load is retried then.
    pub(super) async fn connect(&self) -> Result<Conn, CallError> {
        let mut conn = tokio::time::timeout(
            self.connect_timeout,
            self.connector.open(self.connect_timeout),
        )
        .await
        .map_err(|_| CallError::Timeout)?
        .map_err(CallError::Redis)?;
        let loaded = self.load_scripts(&mut conn).await;
        if self.connector.sharded() {
            return Ok(conn);
        }
        loaded.map_err(CallError::Redis)?;
        let ping = ::redis::cmd("PING");
        self.answers(&ping, &mut conn).await.map(|_| conn)
    }

    /// Redis Cluster: whether the shard serving group `i`'s slot answers (`EXISTS` on one of its
    /// keys, which the client routes to that shard).
    pub(super) async fn probe(&self, i: usize, mut conn: Conn) -> bool {
        let Some(key) = &self.groups[i].probe_key else {
            return true;
        };
        let mut exists = ::redis::cmd("EXISTS");
        exists.arg(key);
        self.answers(&exists, &mut conn).await.is_ok()
    }

    /// `cmd` answered within the per-call budget, at most three tries.
    async fn answers(&self, cmd: &::redis::Cmd, conn: &mut Conn) -> Result<(), CallError> {
        let mut last = CallError::Timeout;
        for _ in 0..3 {
            match tokio::time::timeout(self.timeout, cmd.query_async::<Value>(conn)).await {
                Ok(Ok(_)) => return Ok(()),
                Ok(Err(e)) => last = CallError::Redis(e),
                Err(_) => last = CallError::Timeout,
            }
        }
        Err(last)
    }
}
