//! Queue providers behind one trait, and the registry that polls them.
//!
//! A provider turns one parsed queue reference ([`QueueUri`]) into [`QueueMetrics`]. Each
//! broker or framework is one folder (provider and `queueURI` grammar, implementing
//! [`provider::ProviderUri`]) with one row in the provider table ([`kinds`]).

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use serde::Serialize;

pub mod events;
pub mod idle;
pub mod inspect;
pub mod kinds;
pub mod provider;
pub mod registry;
pub mod uri;

pub use provider::{ProviderSpec, ProviderUri};
pub use uri::UriError;

// The provider table: one row per provider folder, `folder::UriType as Kind`. Everything
// else about a provider is derived from its folder's `ProviderUri` implementation
// (docs/adding-a-provider.md).
kinds::provider_table! {
    sqs::SqsUri as Sqs,
    rabbitmq::AmqpUri as Rabbitmq,
    redis::RedisUri as Redis,
    beanstalk::BeanstalkUri as Beanstalkd,
    http::HttpUri as Http,
    rq::RqUri as Rq,
    dramatiq::DramatiqUri as Dramatiq,
    bullmq::BullmqUri as Bullmq,
    sidekiq::SidekiqUri as Sidekiq,
}

/// What a provider measured in one poll. Counts are messages; `None` means the broker
/// cannot tell (never "zero").
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QueueMetrics {
    /// Messages waiting to be delivered (SQS visible, RabbitMQ ready, Redis LLEN sum,
    /// beanstalkd ready).
    pub visible: u64,
    /// Messages handed to a worker and not yet acknowledged (SQS not-visible, RabbitMQ
    /// unacknowledged, kombu `unacked`, beanstalkd reserved).
    pub in_flight: Option<u64>,
    /// Messages that exist but are not deliverable yet (SQS delayed, beanstalkd delayed).
    pub delayed: Option<u64>,
    /// Messages published per minute, where the broker reports a rate.
    pub sent_per_minute: Option<u64>,
    /// Consumers attached to the queue, where the broker reports them.
    pub consumers: Option<u64>,
    /// The broker's own evidence that the workers are idle (empty receives, waiting
    /// workers). `None` when the broker has no such signal; the registry then infers
    /// idleness from the backlog staying at zero over the idle window.
    pub idle: Option<bool>,
    /// Set when the provider has two sources and only one answered: says which signal is
    /// missing and why (shown in the `MetricsAvailable` condition). `None` when complete.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partial: Option<String>,
    /// When the sample was taken.
    pub sampled_at: jiff::Timestamp,
    /// What the broker or endpoint says about each consumer (RabbitMQ's management API, the
    /// HTTP endpoint's `workers` list); `None` when it says nothing per consumer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workers: Option<Vec<ConsumerReport>>,
    /// The queues (as printed, credentials redacted) that do not exist yet and were read as
    /// empty: a RabbitMQ queue nobody has declared. Empty when every queue exists.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub missing: Vec<String>,
}

/// One consumer of a queue as its broker (or endpoint) reports it: which pod it runs in,
/// by name or by IP, and whether it holds work now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConsumerReport {
    /// The pod's name, when the report names it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    /// The pod's IP (a broker connection's peer address).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    /// It holds unacknowledged messages or says it is working.
    pub busy: bool,
    /// The broker's name of the channel the consumer receives on, where it has one:
    /// consumers of several queues on one channel are one holder of messages.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
}

impl QueueMetrics {
    /// A queue with nothing in it and nobody consuming it, sampled now: nothing visible or
    /// in flight, no consumers, idle.
    pub fn empty() -> Self {
        QueueMetrics {
            visible: 0,
            in_flight: Some(0),
            delayed: None,
            sent_per_minute: None,
            consumers: Some(0),
            idle: Some(true),
            partial: None,
            sampled_at: jiff::Timestamp::now(),
            workers: None,
            missing: Vec::new(),
        }
    }

    /// A queue that does not exist yet, read as [empty](Self::empty): no worker is busy
    /// with it. `queue` names it.
    pub fn missing_queue(queue: String) -> Self {
        QueueMetrics {
            missing: vec![queue],
            ..QueueMetrics::empty()
        }
    }

    /// What the workers have to do: visible plus in-flight messages (in flight counts as
    /// zero where the broker cannot tell).
    pub fn backlog(&self) -> u64 {
        self.visible.saturating_add(self.in_flight.unwrap_or(0))
    }
}

/// Samples for the unit tests of the queue modules.
#[cfg(test)]
pub(crate) mod test_support {
    use super::QueueMetrics;

    /// A sample with these counts and idle evidence, nothing else known, taken at the epoch.
    pub(crate) fn sample(visible: u64, in_flight: Option<u64>, idle: Option<bool>) -> QueueMetrics {
        QueueMetrics {
            missing: Vec::new(),
            visible,
            in_flight,
            delayed: None,
            sent_per_minute: None,
            consumers: None,
            idle,
            partial: None,
            sampled_at: jiff::Timestamp::UNIX_EPOCH,
            workers: None,
        }
    }
}

/// Why a poll failed. Never turned into zeros: the registry keeps the last metrics and
/// marks them stale with this error.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum QueueError {
    #[error("cannot reach the broker for {queue}: {detail}")]
    Unavailable { queue: String, detail: String },
    #[error("queue {queue} does not exist")]
    NotFound { queue: String },
    #[error("access to {queue} was denied: {detail}")]
    Denied { queue: String, detail: String },
    #[error("the broker for {queue} answered something unexpected: {detail}")]
    BadResponse { queue: String, detail: String },
    #[error("invalid queue configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Uri(#[from] UriError),
}

impl QueueError {
    /// The broker could not be asked, or answered something we cannot read: retry with
    /// backoff. Every other error is the broker's clear answer (the queue is missing,
    /// access is refused) or a configuration problem, and is asked again at the normal
    /// interval so that a fix is noticed at once.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            QueueError::Unavailable { .. } | QueueError::BadResponse { .. }
        )
    }
}

/// Credentials resolved by the controller from the Secret a WPA references (or taken from
/// the URI's userinfo). `Debug` never prints the values.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct Credentials {
    pub username: Option<String>,
    pub password: Option<String>,
    /// Sent verbatim as the `Authorization` header by the HTTP provider.
    pub authorization: Option<String>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown = |v: &Option<String>| if v.is_some() { "<redacted>" } else { "<none>" };
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &shown(&self.password))
            .field("authorization", &shown(&self.authorization))
            .finish()
    }
}

/// Provider settings that come from controller flags rather than from the WPA.
#[derive(Debug, Clone, PartialEq)]
pub struct ProviderOptions {
    /// Default AWS region for SQS-compatible endpoints whose URL does not name one.
    pub aws_region: Option<String>,
    /// As practo: when an SQS queue is empty and no WPA on it has workers, wait in a
    /// ReceiveMessage long poll (VisibilityTimeout 0) to see the first message at once.
    /// Raises receive counts (matters with redrive policies). On by default.
    pub sqs_receive_long_poll: bool,
    /// WaitTimeSeconds for that long poll (practo's `--sqs-long-poll-interval`, 0..=20).
    pub sqs_long_poll_seconds: u32,
    /// Ask CloudWatch for NumberOfMessagesReceived/Sent (practo's signals). Off where no
    /// CloudWatch exists (moto, ElasticMQ).
    pub sqs_cloudwatch: bool,
    /// CloudWatch endpoint override (a VPC endpoint, LocalStack); `None`: the AWS default
    /// (which also honours `AWS_ENDPOINT_URL_CLOUDWATCH`).
    pub sqs_cloudwatch_endpoint: Option<String>,
    /// Timeout of one broker request.
    pub request_timeout: Duration,
    /// How long the backlog must stay at zero (and no receives seen) before workers count
    /// as idle.
    pub idle_window: Duration,
    /// Redis connections shared by the queues built with these options (and their clones).
    pub redis_connections: redis::pool::RedisConnections,
    /// beanstalkd connections shared by the queues built with these options (and their
    /// clones): one per server.
    pub beanstalk_connections: beanstalk::pool::BeanstalkConnections,
}

impl Default for ProviderOptions {
    fn default() -> Self {
        Self {
            aws_region: None,
            sqs_receive_long_poll: true,
            sqs_long_poll_seconds: 20,
            sqs_cloudwatch: false,
            sqs_cloudwatch_endpoint: None,
            request_timeout: Duration::from_secs(5),
            idle_window: Duration::from_secs(60),
            redis_connections: redis::pool::RedisConnections::default(),
            beanstalk_connections: beanstalk::pool::BeanstalkConnections::default(),
        }
    }
}

/// One queue's poller. The registry owns exactly one per distinct queue and calls `poll`
/// from a single task, so implementations may keep connections and history in `self`.
#[async_trait]
pub trait QueueProvider: Send + 'static {
    /// Measure the queue now. Must not panic on any broker answer.
    async fn poll(&mut self) -> Result<QueueMetrics, QueueError>;
    /// Whether every WPA on this queue is known to be at zero replicas, set by the
    /// registry before each poll. SQS then long-polls at zero backlog (practo's rule);
    /// other providers ignore it.
    fn set_no_workers(&mut self, _no_workers: bool) {}
    /// Whether the next poll should start as soon as this one ended, rather than at the
    /// next tick: the SQS long poll at zero workers, which waits for the whole interval
    /// itself, so that it is always waiting.
    fn poll_again_now(&self) -> bool {
        false
    }
    /// Whether every poll ends within a few request timeouts by itself. The registry then
    /// sets no deadline of its own around it (a timer per poll, thousands a second).
    fn polls_end_in_time(&self) -> bool {
        false
    }
}
