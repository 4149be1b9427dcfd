//! One queue's poll loop: poll at a fixed rate, keep the latest state, wake the
//! subscribers whose view changed, back off only while the broker is unreachable.

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use backon::BackoffBuilder;
use tokio::sync::Notify;

use super::super::idle::IdleTracker;
use super::super::{ProviderOptions, QueueError, QueueMetrics, QueueProvider};
use super::{Inner, LoopKey, Signature, State, effective_interval, lock, statuses_of};

/// After this many failures in a row the provider is rebuilt from scratch, in case its
/// client cannot recover by itself.
const REBUILD_AFTER_FAILURES: u32 = 5;

/// Connects if needed and polls, bounded by [`poll_deadline`] so that a wedged client
/// cannot stall the loop (the provider is then rebuilt).
async fn poll_once(
    provider: &mut Option<Box<dyn QueueProvider>>,
    key: &LoopKey,
    options: &ProviderOptions,
    no_workers: bool,
) -> Result<QueueMetrics, QueueError> {
    let limit = poll_deadline(options);
    let attempt = async {
        let p = match provider.as_mut() {
            Some(p) => p,
            None => {
                provider.insert(super::super::connect(&key.uri, &key.credentials, options).await?)
            }
        };
        p.set_no_workers(no_workers);
        p.poll().await
    };
    match tokio::time::timeout(limit, attempt).await {
        Ok(result) => result,
        Err(_) => {
            *provider = None;
            Err(QueueError::Unavailable {
                queue: key.uri.redacted(),
                detail: format!("the poll did not finish within {limit:?}"),
            })
        }
    }
}

/// Generous upper bound of one connect + poll: a few request timeouts, plus the SQS
/// long poll when that is enabled.
fn poll_deadline(options: &ProviderOptions) -> Duration {
    let long_poll = if options.sqs_receive_long_poll {
        Duration::from_secs(u64::from(options.sqs_long_poll_seconds))
    } else {
        Duration::ZERO
    };
    options.request_timeout.saturating_mul(3) + long_poll
}

pub(super) async fn run_loop(inner: Weak<Inner>, key: LoopKey, id: u64, reschedule: Arc<Notify>) {
    let Some((settings, options)) = inner
        .upgrade()
        .map(|i| (i.settings.clone(), i.options.clone()))
    else {
        return;
    };
    let label = key.uri.redacted();
    let kind = key.uri.kind();
    let mut provider: Option<Box<dyn QueueProvider>> = None;
    let mut idle = IdleTracker::new(options.idle_window);
    let mut backoff: Option<backon::ExponentialBackoff> = None;
    // The error last logged at warn level: a queue that keeps failing the same way is
    // logged once, not on every poll.
    let mut logged_error: Option<QueueError> = None;
    loop {
        let no_workers = {
            let Some(registry) = inner.upgrade() else {
                return;
            };
            let state = lock(&registry.state);
            match state.loops.get(&key).filter(|lp| lp.id == id) {
                Some(lp) => lp.no_workers,
                None => return,
            }
        };
        let started = Instant::now();
        let result = poll_once(&mut provider, &key, &options, no_workers).await;
        let elapsed = started.elapsed();
        let Some(registry) = inner.upgrade() else {
            return;
        };
        if let Some(observer) = registry.observer() {
            observer.observe(kind, &label, elapsed, result.as_ref().map(|_| ()));
        }
        let (interval, wake, unreachable) = {
            let mut guard = lock(&registry.state);
            let State { subscribers, loops } = &mut *guard;
            let Some(lp) = loops.get_mut(&key).filter(|lp| lp.id == id) else {
                return;
            };
            let status = &mut lp.status;
            match result {
                Ok(metrics) => {
                    if status.stale {
                        tracing::info!(queue = %label, "queue readable again");
                    }
                    logged_error = None;
                    status.idle = idle.observe(&metrics, Instant::now()).is_idle();
                    status.last_success = Some(metrics.sampled_at);
                    status.metrics = Some(metrics);
                    status.stale = false;
                    status.error = None;
                    status.consecutive_failures = 0;
                }
                Err(error) => {
                    if logged_error.as_ref() == Some(&error) {
                        tracing::debug!(queue = %label, %error, "poll failed again");
                    } else {
                        tracing::warn!(queue = %label, %error, "poll failed; keeping the last metrics");
                        logged_error = Some(error.clone());
                    }
                    idle.reset();
                    status.idle = false;
                    status.stale = true;
                    status.error = Some(error);
                    status.consecutive_failures = status.consecutive_failures.saturating_add(1);
                    if status.consecutive_failures % REBUILD_AFTER_FAILURES == 0 {
                        provider = None;
                    }
                }
            }
            let interval = effective_interval(subscribers, lp, kind, &settings);
            let transient = lp
                .status
                .error
                .as_ref()
                .is_some_and(QueueError::is_transient);
            let mut wake = Vec::new();
            let loops = &*loops;
            if let Some(lp) = loops.get(&key) {
                for name in &lp.members {
                    let Some(sub) = subscribers.get_mut(name) else {
                        continue;
                    };
                    // A member watching several queues is woken for their combined view.
                    let now = Signature::of_all(statuses_of(loops, &sub.keys), sub.target);
                    if now.polled && sub.notified != Some(now) {
                        sub.notified = Some(now);
                        wake.push(name.clone());
                    }
                }
            }
            (interval, wake, transient)
        };
        for name in wake {
            // No receiver yet is fine: the state is still there to read.
            let _ = registry.wakeups.send(name);
        }
        drop(registry);
        let delay = if unreachable {
            let cap = settings.max_backoff;
            let next = backoff
                .get_or_insert_with(|| {
                    backon::ExponentialBuilder::default()
                        .with_min_delay(interval.min(cap))
                        .with_max_delay(cap)
                        .with_factor(2.0)
                        .with_jitter()
                        .without_max_times()
                        .build()
                })
                .next();
            next.unwrap_or(cap).min(cap)
        } else {
            backoff = None;
            interval.saturating_sub(elapsed)
        };
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = reschedule.notified() => {}
        }
    }
}
