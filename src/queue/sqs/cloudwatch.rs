//! SQS activity from CloudWatch (`--sqs-cloudwatch`, practo's source for these signals):
//! `NumberOfMessagesReceived` and `NumberOfMessagesSent` of the `AWS/SQS` namespace.
//!
//! - Received: a worker that receives and deletes a message between two polls never shows in
//!   the queue's counters, but it shows here. Any receive over the lookback vetoes idleness;
//!   none leaves the decision to the idle window (CloudWatch lags by minutes, so it is never
//!   allowed to declare workers idle by itself).
//! - Sent: the publish rate per minute, which `secondsToProcessOneJob` needs.
//!
//! One `GetMetricData` call for both metrics, at most once a minute per queue (SQS publishes
//! one-minute points at best, and each metric requested is billed). A failure is logged and
//! the last answer is used while it is younger than the lookback; after that the signals are
//! unknown, never zero.

use std::time::{Duration, Instant};

use aws_sdk_cloudwatch::Client;
use aws_sdk_cloudwatch::error::DisplayErrorContext;
use aws_sdk_cloudwatch::primitives::DateTime;
use aws_sdk_cloudwatch::types::{Dimension, Metric, MetricDataQuery, MetricStat};

use crate::queue::QueueError;

/// How often CloudWatch is asked again.
pub const REFRESH: Duration = Duration::from_secs(60);
/// The shortest lookback: SQS metrics arrive in CloudWatch minutes late.
pub const MIN_LOOKBACK: Duration = Duration::from_secs(600);

const RECEIVED_ID: &str = "received";
const SENT_ID: &str = "sent";

/// What CloudWatch said about a queue over the lookback.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Activity {
    /// Messages received by consumers over the lookback.
    pub received: f64,
    /// Messages sent to the queue per minute, averaged over the lookback.
    pub sent_per_minute: f64,
}

/// Asks CloudWatch about one queue and caches the answer.
pub struct CloudWatchActivity {
    client: Client,
    queue_name: String,
    lookback: Duration,
    last: Option<(Instant, Activity)>,
    last_attempt: Option<Instant>,
}

impl CloudWatchActivity {
    /// `lookback` is raised to [`MIN_LOOKBACK`] when shorter.
    pub fn new(client: Client, queue_name: String, lookback: Duration) -> Self {
        Self {
            client,
            queue_name,
            lookback: lookback.max(MIN_LOOKBACK),
            last: None,
            last_attempt: None,
        }
    }

    /// The queue's activity, fetched when the cached answer is older than [`REFRESH`];
    /// `None` while CloudWatch has not answered within the lookback.
    pub async fn activity(&mut self, now: Instant) -> Option<Activity> {
        let due = self
            .last_attempt
            .is_none_or(|at| now.saturating_duration_since(at) >= REFRESH);
        if due {
            self.last_attempt = Some(now);
            match self.fetch(jiff::Timestamp::now()).await {
                Ok(activity) => self.last = Some((now, activity)),
                Err(error) => tracing::warn!(
                    queue = %self.queue_name,
                    %error,
                    "CloudWatch activity unavailable; idleness falls back to the idle window"
                ),
            }
        }
        self.last
            .filter(|(at, _)| now.saturating_duration_since(*at) < self.lookback)
            .map(|(_, activity)| activity)
    }

    async fn fetch(&self, now: jiff::Timestamp) -> Result<Activity, QueueError> {
        let lookback_secs = i64::try_from(self.lookback.as_secs()).unwrap_or(i64::MAX / 2);
        let end = now.as_second();
        let start = end.saturating_sub(lookback_secs);
        let out = self
            .client
            .get_metric_data()
            .start_time(DateTime::from_secs(start))
            .end_time(DateTime::from_secs(end))
            .metric_data_queries(self.query(RECEIVED_ID, "NumberOfMessagesReceived"))
            .metric_data_queries(self.query(SENT_ID, "NumberOfMessagesSent"))
            .send()
            .await
            .map_err(|e| QueueError::Unavailable {
                queue: self.queue_name.clone(),
                detail: format!("CloudWatch GetMetricData: {}", DisplayErrorContext(&e)),
            })?;
        let sum = |id: &str| -> Result<f64, QueueError> {
            let values: Vec<f64> = out
                .metric_data_results()
                .iter()
                .filter(|r| r.id() == Some(id))
                .flat_map(|r| r.values().iter().copied())
                .collect();
            if values.iter().any(|v| !v.is_finite() || *v < 0.0) {
                return Err(QueueError::BadResponse {
                    queue: self.queue_name.clone(),
                    detail: format!("CloudWatch returned {values:?} for {id}"),
                });
            }
            Ok(values.iter().sum())
        };
        let minutes = self.lookback.as_secs_f64() / 60.0;
        Ok(Activity {
            received: sum(RECEIVED_ID)?,
            sent_per_minute: sum(SENT_ID)? / minutes,
        })
    }

    fn query(&self, id: &str, metric_name: &str) -> MetricDataQuery {
        let dimension = Dimension::builder()
            .name("QueueName")
            .value(&self.queue_name)
            .build();
        let metric = Metric::builder()
            .namespace("AWS/SQS")
            .metric_name(metric_name)
            .dimensions(dimension)
            .build();
        let stat = MetricStat::builder()
            .metric(metric)
            .period(60)
            .stat("Sum")
            .build();
        MetricDataQuery::builder()
            .id(id)
            .metric_stat(stat)
            .return_data(true)
            .build()
    }
}
