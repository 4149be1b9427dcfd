//! One queue's poll loop: poll at a fixed rate, keep the latest state, wake the
//! subscribers whose view changed, back off only while the broker is unreachable.

use std::sync::{Arc, Weak};
use std::time::Duration;

use backon::BackoffBuilder;
use tokio::time::Instant;

use super::super::idle::IdleTracker;
use super::super::{ProviderOptions, QueueError, QueueMetrics, QueueProvider};
use super::{Inner, LoopControl, LoopKey, Signature, State, lock, statuses_of};

/// After this many failures in a row the provider is rebuilt from scratch, in case its
/// client cannot recover by itself.
const REBUILD_AFTER_FAILURES: u32 = 5;

/// Connects if needed and polls, bounded by [`poll_deadline`] so that a wedged client
/// cannot stall the loop (the provider is then rebuilt). A provider whose polls end in
/// time by themselves is polled without that extra timer.
async fn poll_once(
    provider: &mut Option<Box<dyn QueueProvider>>,
    key: &LoopKey,
    options: &ProviderOptions,
    no_workers: bool,
) -> Result<QueueMetrics, QueueError> {
    if let Some(p) = provider.as_mut().filter(|p| p.polls_end_in_time()) {
        p.set_no_workers(no_workers);
        return p.poll().await;
    }
    let limit = poll_deadline(options);
    let attempt = async {
        let p = match provider.as_mut() {
            Some(p) => p,
            None => provider.insert(key.uri.connect(&key.credentials, options).await?),
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

/// The first tick after `now` of a clock that ticks every `interval` from `epoch`.
/// Loops with the same interval share their ticks.
pub fn next_tick(epoch: Instant, interval: Duration, now: Instant) -> Instant {
    let interval = interval.max(Duration::from_millis(1));
    let since = now.saturating_duration_since(epoch);
    let ticks = since.as_nanos() / interval.as_nanos() + 1;
    let offset = interval
        .checked_mul(u32::try_from(ticks).unwrap_or(u32::MAX))
        .unwrap_or(Duration::MAX);
    epoch.checked_add(offset).unwrap_or(now + interval)
}

pub(super) async fn run_loop(inner: Weak<Inner>, key: LoopKey, id: u64, control: Arc<LoopControl>) {
    let Some((max_backoff, options, epoch)) = inner
        .upgrade()
        .map(|i| (i.settings.max_backoff, i.options.clone(), i.epoch()))
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
    // This queue's own signature at the last poll (target 1: the backlog itself, since
    // members divide it by targets of their own).
    let mut last_seen: Option<Signature> = None;
    // The queue did not exist at the last successful poll (logged once per change).
    let mut was_missing = false;
    loop {
        let started = Instant::now();
        let result = poll_once(&mut provider, &key, &options, control.no_workers()).await;
        // One clock read serves the duration, the idle window and the next tick.
        let finished = Instant::now();
        let elapsed = finished.saturating_duration_since(started);
        // A provider that waited the whole interval in its poll (SQS's long poll at zero
        // workers) is polled again at once; a failed poll goes by the rules below.
        let again_now = result.is_ok() && provider.as_ref().is_some_and(|p| p.poll_again_now());
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
                    let missing = !metrics.missing.is_empty();
                    if missing != was_missing {
                        if missing {
                            tracing::info!(
                                queue = %label,
                                "the queue does not exist yet; reading it as empty until a producer or worker declares it"
                            );
                        } else {
                            tracing::info!(queue = %label, "the queue exists now");
                        }
                        was_missing = missing;
                    }
                    status.idle = idle.observe(&metrics, finished.into_std()).is_idle();
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
            let interval = lp.interval;
            let transient = lp
                .status
                .error
                .as_ref()
                .is_some_and(QueueError::is_transient);
            let mut wake = Vec::new();
            let seen = Signature::of(&lp.status, 1);
            // Members are only looked at when this queue's own state moved (new members
            // are woken by `attach` itself): at rest a poll costs one map lookup.
            if last_seen != Some(seen) {
                last_seen = Some(seen);
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
            }
            (interval, wake, transient)
        };
        for name in wake {
            // No receiver yet is fine: the state is still there to read.
            let _ = registry.wakeups.send(name);
        }
        drop(registry);
        let wake_at = if unreachable {
            let cap = max_backoff;
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
            Instant::now() + next.unwrap_or(cap).min(cap)
        } else if again_now {
            backoff = None;
            Instant::now()
        } else {
            backoff = None;
            next_tick(epoch, interval, finished)
        };
        tokio::select! {
            () = tokio::time::sleep_until(wake_at) => {}
            () = control.reschedule.notified() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_shared_by_loops_with_the_same_interval() {
        let epoch = Instant::now();
        let second = Duration::from_secs(1);
        // Wherever a loop is within the interval, its next tick is the same.
        for offset_ms in [0, 1, 250, 999] {
            let now = epoch + Duration::from_secs(7) + Duration::from_millis(offset_ms);
            assert_eq!(
                next_tick(epoch, second, now),
                epoch + Duration::from_secs(8)
            );
        }
        // Always after now, never more than one interval away.
        let now = epoch + Duration::from_millis(1500);
        let next = next_tick(epoch, Duration::from_secs(3), now);
        assert_eq!(next, epoch + Duration::from_secs(3));
        // A zero interval is treated as 1 ms rather than dividing by zero.
        assert_eq!(
            next_tick(epoch, Duration::ZERO, epoch),
            epoch + Duration::from_millis(1)
        );
    }
}
