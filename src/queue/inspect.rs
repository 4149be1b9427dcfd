//! `workerpodautoscaler inspect QUEUE_URI [--watch SECONDS]`: what the controller sees.
//!
//! Polls the queue with the same provider code as the controller and prints one JSON
//! object per poll:
//!
//! ```json
//! {"provider":"redis","queue":"redis://h:6379/0/celery","visible":3,"in_flight":1,
//!  "delayed":null,"sent_per_minute":null,"consumers":null,"idle":false,
//!  "sampled_at":"2026-11-23T10:00:00Z"}
//! ```
//!
//! `null` means unknown. `idle` goes through the same inference as the registry: without
//! a provider verdict it is `true` only after the backlog stayed at zero for the whole
//! idle window, so a single poll of an empty queue prints `null` (not yet known) unless
//! the window is zero. With `--watch` a failed poll prints
//! `{"provider":..,"queue":..,"error":"...","sampled_at":..}` and watching goes on.
//! Exit codes: 1 for a bad URI or configuration, 2 when the broker cannot be reached,
//! denies access, answers nonsense or the queue does not exist.

use std::io::Write;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::idle::IdleTracker;
use super::{
    Credentials, ProviderKind, ProviderOptions, QueueError, QueueMetrics, QueueUri, UriError,
};

/// Why `inspect` stopped.
#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    #[error(transparent)]
    Uri(#[from] UriError),
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error("cannot write the output: {0}")]
    Output(#[from] std::io::Error),
}

impl InspectError {
    /// 1: the input is wrong; 2: the queue could not be read.
    pub fn exit_code(&self) -> i32 {
        match self {
            InspectError::Uri(_) | InspectError::Queue(QueueError::Config(_)) => 1,
            InspectError::Queue(QueueError::Uri(_)) => 1,
            InspectError::Queue(_) => 2,
            InspectError::Output(_) => 1,
        }
    }
}

#[derive(Serialize)]
struct Sample<'a> {
    provider: ProviderKind,
    queue: &'a str,
    visible: u64,
    in_flight: Option<u64>,
    delayed: Option<u64>,
    sent_per_minute: Option<u64>,
    consumers: Option<u64>,
    idle: Option<bool>,
    sampled_at: jiff::Timestamp,
}

#[derive(Serialize)]
struct Failure<'a> {
    provider: ProviderKind,
    queue: &'a str,
    error: String,
    sampled_at: jiff::Timestamp,
}

/// Polls `uri` once (or every `watch` period until the future is dropped) and writes one
/// JSON line per poll to `out`.
pub async fn inspect(
    uri: &str,
    watch: Option<Duration>,
    credentials: Credentials,
    options: ProviderOptions,
    out: &mut (dyn Write + Send),
) -> Result<(), InspectError> {
    let uri = QueueUri::parse(uri)?;
    super::validate(&uri, &credentials)?;
    let label = uri.redacted();
    let kind = uri.kind();
    let mut provider = super::connect(&uri, &credentials, &options).await?;
    let mut idle = IdleTracker::new(options.idle_window);
    let mut ticker = watch.map(|period| {
        let mut t = tokio::time::interval(period.max(Duration::from_millis(100)));
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        t
    });
    loop {
        if let Some(t) = ticker.as_mut() {
            t.tick().await;
        }
        match provider.poll().await {
            Ok(metrics) => {
                let verdict = idle.observe(&metrics, Instant::now()).known();
                write_line(out, &sample(kind, &label, &metrics, verdict))?;
            }
            Err(error) if watch.is_some() => {
                idle.reset();
                let failure = Failure {
                    provider: kind,
                    queue: &label,
                    error: error.to_string(),
                    sampled_at: jiff::Timestamp::now(),
                };
                write_line(out, &failure)?;
            }
            Err(error) => return Err(error.into()),
        }
        if ticker.is_none() {
            return Ok(());
        }
    }
}

fn sample<'a>(
    kind: ProviderKind,
    label: &'a str,
    m: &QueueMetrics,
    idle: Option<bool>,
) -> Sample<'a> {
    Sample {
        provider: kind,
        queue: label,
        visible: m.visible,
        in_flight: m.in_flight,
        delayed: m.delayed,
        sent_per_minute: m.sent_per_minute,
        consumers: m.consumers,
        idle,
        sampled_at: m.sampled_at,
    }
}

fn write_line(out: &mut (dyn Write + Send), value: &impl Serialize) -> Result<(), InspectError> {
    let line = serde_json::to_string(value).map_err(std::io::Error::other)?;
    writeln!(out, "{line}")?;
    out.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes() {
        let uri_err = QueueUri::parse("nope://x").unwrap_err();
        assert_eq!(InspectError::from(uri_err).exit_code(), 1);
        assert_eq!(
            InspectError::from(QueueError::Config("x".into())).exit_code(),
            1
        );
        assert_eq!(
            InspectError::from(QueueError::NotFound { queue: "q".into() }).exit_code(),
            2
        );
        assert_eq!(
            InspectError::from(QueueError::Unavailable {
                queue: "q".into(),
                detail: "refused".into()
            })
            .exit_code(),
            2
        );
    }
}
