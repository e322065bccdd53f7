//! Waiting with a deadline: every wait in the tests polls a condition every 20 ms and gives up (with
//! what it waited for) when its time is up. Nothing sleeps a fixed time.

use std::future::Future;
use std::time::{Duration, Instant};

/// How often a condition is polled.
pub const EVERY: Duration = Duration::from_millis(20);

/// Poll `f` until it returns `Some` or `within` passes; `None` when it never did (for callers that
/// want to say more than [`poll`] does about what they saw).
pub async fn try_poll<T, F, Fut>(within: Duration, mut f: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f().await {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(EVERY).await;
    }
}

/// Poll `f` until it returns `Some`; panics naming `what` when `within` passes first.
pub async fn poll<T, F, Fut>(within: Duration, what: &str, f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    try_poll(within, f)
        .await
        .unwrap_or_else(|| panic!("timed out after {within:?} waiting for: {what}"))
}

/// Poll `f` until it returns true; panics naming `what` when `within` passes first.
pub async fn eventually<F, Fut>(within: Duration, what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    poll(within, what, || {
        let ready = f();
        async move { ready.await.then_some(()) }
    })
    .await
}

/// [`try_poll`] for code outside a runtime (process start-up, the benchmarks).
pub fn try_poll_blocking<T>(within: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(EVERY);
    }
}

/// [`poll`] for code outside a runtime.
pub fn poll_blocking<T>(within: Duration, what: &str, f: impl FnMut() -> Option<T>) -> T {
    try_poll_blocking(within, f)
        .unwrap_or_else(|| panic!("timed out after {within:?} waiting for: {what}"))
}
