//! `workerpodautoscaler inspect QUEUE_URI... [--watch SECONDS]`: what the controller sees.
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
//! Several queues (as in `queueURIs`) are polled in turn, one line each, followed by the
//! line the controller decides on: `{"total":true,"queue":"<q1>, <q2>",...}` with the
//! counts added up and `idle` true only when every queue is idle (no total line in a
//! round where a queue failed).
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
    #[serde(skip_serializing_if = "Option::is_none")]
    provider: Option<ProviderKind>,
    queue: &'a str,
    visible: u64,
    in_flight: Option<u64>,
    delayed: Option<u64>,
    sent_per_minute: Option<u64>,
    consumers: Option<u64>,
    idle: Option<bool>,
    sampled_at: jiff::Timestamp,
}

/// Several queues read as one, as the controller combines them.
#[derive(Serialize)]
struct Total<'a> {
    total: bool,
    #[serde(flatten)]
    sample: Sample<'a>,
}

#[derive(Serialize)]
struct Failure<'a> {
    provider: ProviderKind,
    queue: &'a str,
    error: String,
    sampled_at: jiff::Timestamp,
}

/// One queue being inspected.
struct Inspected {
    label: String,
    kind: ProviderKind,
    provider: Box<dyn super::QueueProvider>,
    idle: IdleTracker,
}

/// Polls `uris` once (or every `watch` period until the future is dropped) and writes one
/// JSON line per queue and poll to `out`, plus a total line for several queues.
pub async fn inspect(
    uris: &[String],
    watch: Option<Duration>,
    credentials: Credentials,
    options: ProviderOptions,
    out: &mut (dyn Write + Send),
) -> Result<(), InspectError> {
    if uris.is_empty() {
        return Err(QueueError::Config("no queue URI given".to_string()).into());
    }
    let mut parsed = Vec::with_capacity(uris.len());
    for text in uris {
        let uri = QueueUri::parse(text)?;
        uri.validate(&credentials)?;
        parsed.push(uri);
    }
    let mut queues = Vec::with_capacity(parsed.len());
    for uri in &parsed {
        queues.push(Inspected {
            label: uri.redacted(),
            kind: uri.kind(),
            provider: uri.connect(&credentials, &options).await?,
            idle: IdleTracker::new(options.idle_window),
        });
    }
    let total_label = queues
        .iter()
        .map(|q| q.label.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    let mut ticker = watch.map(|period| {
        let mut t = tokio::time::interval(period.max(Duration::from_millis(100)));
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        t
    });
    loop {
        if let Some(t) = ticker.as_mut() {
            t.tick().await;
        }
        let mut round: Vec<(QueueMetrics, Option<bool>)> = Vec::with_capacity(queues.len());
        for queue in &mut queues {
            match queue.provider.poll().await {
                Ok(metrics) => {
                    let verdict = queue.idle.observe(&metrics, Instant::now()).known();
                    write_line(
                        out,
                        &sample(Some(queue.kind), &queue.label, &metrics, verdict),
                    )?;
                    round.push((metrics, verdict));
                }
                Err(error) if watch.is_some() => {
                    queue.idle.reset();
                    let failure = Failure {
                        provider: queue.kind,
                        queue: &queue.label,
                        error: error.to_string(),
                        sampled_at: jiff::Timestamp::now(),
                    };
                    write_line(out, &failure)?;
                }
                Err(error) => return Err(error.into()),
            }
        }
        if queues.len() > 1 && round.len() == queues.len() {
            write_line(out, &total(&total_label, &round))?;
        }
        if ticker.is_none() {
            return Ok(());
        }
    }
}

/// The total line of one round in which every queue answered.
fn total<'a>(label: &'a str, round: &[(QueueMetrics, Option<bool>)]) -> Total<'a> {
    let metrics: Vec<&QueueMetrics> = round.iter().map(|(m, _)| m).collect();
    let combined = super::registry::combined::combine_metrics(&metrics);
    let idle = if round.iter().any(|(_, v)| *v == Some(false)) {
        Some(false)
    } else if round.iter().all(|(_, v)| *v == Some(true)) {
        Some(true)
    } else {
        None
    };
    Total {
        total: true,
        // Queues of several providers have no one provider.
        sample: sample(None, label, &combined, idle),
    }
}

fn sample<'a>(
    kind: Option<ProviderKind>,
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
