//! Waiting for what happens later: polling for an effect, acting as Stripe's retry, running
//! requests together, and the clock.

use std::future::Future;
use std::time::Duration;

pub fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// How long a test waits for localstripe's webhook. It arrives about a second after the call,
/// but localstripe delivers every event to every test's endpoint in turn, so under the whole
/// suite running in parallel a delivery can wait many seconds. A bound, not a pace.
pub const WEBHOOK_WAIT_SECS: u64 = 60;

/// How long a test waits for localstripe's own delivery before acting as Stripe's retry.
pub const RETRY_AFTER_SECS: u64 = 8;

/// Waits for what a webhook does. localstripe sends each event once, and can drop one (it walks
/// its webhook registry while other tests add theirs, and the delivery task dies), where Stripe
/// retries until it gets a 2xx. So after `RETRY_AFTER_SECS` without the effect, `redeliver` does
/// what Stripe's retry does (the same event again), and the wait goes on to its full bound.
pub async fn settle<T, F, Fut, R>(mut check: F, redeliver: R) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
    R: Future<Output = ()>,
{
    if let Some(value) = eventually(RETRY_AFTER_SECS, &mut check).await {
        return Some(value);
    }
    redeliver.await;
    eventually(WEBHOOK_WAIT_SECS, check).await
}

/// Polls `check` until it returns `Some`, for up to `secs` seconds (webhooks arrive ~1 s late).
pub async fn eventually<T, F, Fut>(secs: u64, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(value) = check().await {
            return Some(value);
        }
        if tokio::time::Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Runs the futures together on this task (each an independent request) and returns their
/// outputs in order.
pub async fn join_all<F: Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut pinned: Vec<_> = futures.into_iter().map(Box::pin).collect();
    let mut results: Vec<Option<F::Output>> = Vec::new();
    results.resize_with(pinned.len(), || None);
    std::future::poll_fn(|cx| {
        let mut done = true;
        for (i, fut) in pinned.iter_mut().enumerate() {
            if results[i].is_none() {
                match fut.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => results[i] = Some(v),
                    std::task::Poll::Pending => done = false,
                }
            }
        }
        if done {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
    results.into_iter().flatten().collect()
}
