//! Amazon SQS provider (and SQS-compatible servers such as moto or ElasticMQ).
//!
//! Measures, with one `GetQueueAttributes` call per poll:
//! `ApproximateNumberOfMessages` (visible), `ApproximateNumberOfMessagesNotVisible`
//! (in flight: received, not yet deleted) and `ApproximateNumberOfMessagesDelayed`
//! (delayed). These are SQS's own approximations: they can lag by seconds.
//!
//! Cannot see: consumers (SQS has no such notion), a publish rate and receive activity.
//! Those live in CloudWatch; with `--sqs-cloudwatch` they are read from there (see
//! [`cloudwatch`]): receives over the last ten minutes veto idleness and
//! `NumberOfMessagesSent` gives `sent_per_minute`. Without it `sent_per_minute` and `idle`
//! are `None` and the registry infers idleness from visible and in-flight staying at zero
//! for the idle window; a worker that received a message and deleted it between two polls
//! is then invisible, and the idle window is what keeps that from scaling to zero.
//!
//! Long polling at zero workers (practo's rule, on by default: `sqs_receive_long_poll`):
//! when a poll finds nothing visible and nothing in flight and the registry says no WPA on
//! the queue has workers, the provider waits in `ReceiveMessage` (WaitTimeSeconds =
//! `sqs_long_poll_seconds`, VisibilityTimeout 0, MaxNumberOfMessages 1) so the first
//! message is noticed as soon as it arrives instead of at the next poll. A long poll that
//! ends empty is followed at once by the next poll ([`QueueProvider::poll_again_now`]), so
//! the queue is waited on all the time rather than for 20 s of every 40 s (one
//! `GetQueueAttributes` and one `ReceiveMessage` per 20 s). The message stays
//! visible, but its receive count goes up by one: with a redrive policy (maxReceiveCount)
//! that receive moves it closer to the dead-letter queue. With workers running nobody
//! long-polls, so their own receives are the only ones.
//!
//! Credentials: a Secret's username/password are used as a static access key id and
//! secret access key; otherwise the AWS default chain (environment, web identity/IRSA,
//! profile, container and instance metadata).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use aws_sdk_sqs::Client;
use aws_sdk_sqs::config::retry::RetryConfig;
use aws_sdk_sqs::config::timeout::TimeoutConfig;
use aws_sdk_sqs::config::{BehaviorVersion, Region};
use aws_sdk_sqs::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_sqs::types::QueueAttributeName;

pub mod cloudwatch;
pub mod uri;

use self::cloudwatch::CloudWatchActivity;
use super::provider::{ConnectFuture, ProviderSpec, ProviderUri, boxed};
use super::{Credentials, ProviderOptions, QueueError, QueueMetrics, QueueProvider};
use uri::SqsUri;

/// Error codes (AWS JSON and query protocols, moto) for a queue that does not exist.
const NOT_FOUND_CODES: &[&str] = &[
    "QueueDoesNotExist",
    "AWS.SimpleQueueService.NonExistentQueue",
];
/// Error codes meaning the credentials are missing, wrong or lack permission.
const DENIED_CODES: &[&str] = &[
    "AccessDenied",
    "AccessDeniedException",
    "InvalidClientTokenId",
    "InvalidSecurity",
    "SignatureDoesNotMatch",
    "UnrecognizedClientException",
    "ExpiredToken",
    "MissingAuthenticationToken",
    "IncompleteSignature",
    "KmsAccessDenied",
];
/// SQS caps WaitTimeSeconds at 20.
const MAX_WAIT_SECONDS: u32 = 20;

/// Polls one SQS queue.
pub struct SqsProvider {
    client: Client,
    queue_url: String,
    long_poll: Option<Duration>,
    /// Every WPA on the queue is at zero replicas (from the registry).
    no_workers: bool,
    /// The last poll waited in a long poll that ended empty: the next one should start at
    /// once, so that the queue is always being waited on while nobody consumes it.
    long_polled_empty: bool,
    request_timeout: Duration,
    cloudwatch: Option<CloudWatchActivity>,
}

/// The three counters of one `GetQueueAttributes` answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Counts {
    visible: u64,
    not_visible: u64,
    delayed: u64,
}

impl SqsProvider {
    /// Builds the SDK client. Does not contact SQS; fails only on configuration (no
    /// region anywhere).
    pub async fn connect(
        uri: &SqsUri,
        creds: &Credentials,
        opts: &ProviderOptions,
    ) -> Result<Self, QueueError> {
        let mut loader = aws_config::defaults(BehaviorVersion::latest());
        if let Some(region) = uri.region.clone().or_else(|| opts.aws_region.clone()) {
            loader = loader.region(Region::new(region));
        }
        if let (Some(key_id), Some(secret)) = (&creds.username, &creds.password) {
            loader = loader.credentials_provider(aws_sdk_sqs::config::Credentials::new(
                key_id.clone(),
                secret.clone(),
                None,
                None,
                "wpa-secret",
            ));
        }
        let shared = loader.load().await;
        if shared.region().is_none() {
            return Err(QueueError::Config(format!(
                "no AWS region for {}: set it in the queue URL, the controller's default region or AWS_REGION",
                uri.queue_url
            )));
        }
        let mut config = aws_sdk_sqs::config::Builder::from(&shared)
            .timeout_config(timeouts(opts.request_timeout))
            // The registry polls again soon: one retry for a blip is enough.
            .retry_config(RetryConfig::standard().with_max_attempts(2));
        if let Some(endpoint) = &uri.endpoint {
            config = config.endpoint_url(endpoint);
        }
        // A zero-second "long" poll would only add receives.
        let long_poll = (opts.sqs_receive_long_poll && opts.sqs_long_poll_seconds > 0).then(|| {
            Duration::from_secs(u64::from(opts.sqs_long_poll_seconds.min(MAX_WAIT_SECONDS)))
        });
        let cloudwatch = opts.sqs_cloudwatch.then(|| {
            let mut config = aws_sdk_cloudwatch::config::Builder::from(&shared)
                .timeout_config(timeouts(opts.request_timeout))
                .retry_config(RetryConfig::standard().with_max_attempts(2));
            if let Some(endpoint) = &opts.sqs_cloudwatch_endpoint {
                config = config.endpoint_url(endpoint);
            }
            CloudWatchActivity::new(
                aws_sdk_cloudwatch::Client::from_conf(config.build()),
                uri.queue.clone(),
                opts.idle_window,
            )
        });
        Ok(Self {
            client: Client::from_conf(config.build()),
            queue_url: uri.queue_url.clone(),
            long_poll,
            no_workers: false,
            long_polled_empty: false,
            request_timeout: opts.request_timeout,
            cloudwatch,
        })
    }

    async fn counts(&self) -> Result<Counts, QueueError> {
        let out = self
            .client
            .get_queue_attributes()
            .queue_url(&self.queue_url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesDelayed)
            .send()
            .await
            .map_err(|e| map_sdk_error(&self.queue_url, e))?;
        let empty = HashMap::new();
        let attrs = out.attributes().unwrap_or(&empty);
        let get = |name: QueueAttributeName| -> Result<u64, QueueError> {
            let value = attrs.get(&name).ok_or_else(|| QueueError::BadResponse {
                queue: self.queue_url.clone(),
                detail: format!("GetQueueAttributes lacks {}", name.as_str()),
            })?;
            value.trim().parse().map_err(|_| QueueError::BadResponse {
                queue: self.queue_url.clone(),
                detail: format!(
                    "{} is not a count: {:?}",
                    name.as_str(),
                    value.chars().take(32).collect::<String>()
                ),
            })
        };
        Ok(Counts {
            visible: get(QueueAttributeName::ApproximateNumberOfMessages)?,
            not_visible: get(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)?,
            delayed: get(QueueAttributeName::ApproximateNumberOfMessagesDelayed)?,
        })
    }

    /// Waits up to `wait` for a message; returns how many were received (left visible).
    async fn long_poll(&self, wait: Duration) -> Result<u64, QueueError> {
        let seconds = i32::try_from(wait.as_secs()).unwrap_or(MAX_WAIT_SECONDS as i32);
        let out = self
            .client
            .receive_message()
            .queue_url(&self.queue_url)
            .wait_time_seconds(seconds)
            .visibility_timeout(0)
            .max_number_of_messages(1)
            .customize()
            // The call legitimately takes the whole wait.
            .config_override(
                aws_sdk_sqs::config::Builder::default()
                    .timeout_config(timeouts(wait + self.request_timeout)),
            )
            .send()
            .await
            .map_err(|e| map_sdk_error(&self.queue_url, e))?;
        Ok(out.messages().len() as u64)
    }
}

fn timeouts(operation: Duration) -> TimeoutConfig {
    TimeoutConfig::builder()
        .operation_timeout(operation)
        .operation_attempt_timeout(operation)
        .build()
}

#[async_trait]
impl QueueProvider for SqsProvider {
    fn set_no_workers(&mut self, no_workers: bool) {
        self.no_workers = no_workers;
    }

    fn poll_again_now(&self) -> bool {
        self.long_polled_empty
    }

    async fn poll(&mut self) -> Result<QueueMetrics, QueueError> {
        self.long_polled_empty = false;
        let mut counts = self.counts().await?;
        if let Some(wait) = self.long_poll
            && self.no_workers
            && counts.visible == 0
            && counts.not_visible == 0
        {
            let started = Instant::now();
            let received = self.long_poll(wait).await?;
            // Only a long poll that really waited: a server that answers an empty long poll
            // at once (not SQS) must not be asked in a tight loop.
            self.long_polled_empty = received == 0 && started.elapsed() >= wait / 2;
            if received > 0 {
                // Re-read so in-flight and delayed are current; the approximate counter
                // may not show the message yet, but we know it is there.
                counts = self.counts().await?;
                counts.visible = counts.visible.max(received);
            }
        }
        let activity = match &mut self.cloudwatch {
            Some(cloudwatch) => cloudwatch.activity(Instant::now()).await,
            None => None,
        };
        Ok(QueueMetrics {
            missing: Vec::new(),
            visible: counts.visible,
            in_flight: Some(counts.not_visible),
            delayed: Some(counts.delayed),
            // Whole messages per minute; the rate is a float average over the lookback.
            sent_per_minute: activity.map(|a| a.sent_per_minute.round() as u64),
            consumers: None,
            // Receives veto idleness; their absence leaves it to the idle window.
            idle: activity.and_then(|a| (a.received > 0.0).then_some(false)),
            partial: None,
            sampled_at: jiff::Timestamp::now(),
            workers: None,
        })
    }
}

/// Maps an SDK failure to a [`QueueError`] naming the queue URL (which carries no
/// credentials: SQS URLs have no userinfo and the parser strips the query).
fn map_sdk_error<E, R>(queue_url: &str, err: SdkError<E, R>) -> QueueError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug,
{
    let queue = queue_url.to_string();
    match &err {
        SdkError::ServiceError(ctx) => {
            let code = ctx.err().code().unwrap_or("");
            let detail = match ctx.err().message() {
                Some(m) => format!("{code}: {m}"),
                None => code.to_string(),
            };
            if NOT_FOUND_CODES.contains(&code) {
                QueueError::NotFound { queue }
            } else if DENIED_CODES.contains(&code) {
                QueueError::Denied { queue, detail }
            } else if code == "RequestThrottled" || code == "ThrottlingException" || code.is_empty()
            {
                QueueError::Unavailable {
                    queue,
                    detail: format!("service error {detail}"),
                }
            } else {
                QueueError::BadResponse { queue, detail }
            }
        }
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            let detail = DisplayErrorContext(&err).to_string();
            // Identity resolution failures surface as dispatch failures.
            if detail.contains("credentials") {
                QueueError::Denied { queue, detail }
            } else {
                QueueError::Unavailable { queue, detail }
            }
        }
        _ => QueueError::Config(format!(
            "cannot build a request for {queue}: {}",
            DisplayErrorContext(&err)
        )),
    }
}

impl ProviderUri for SqsUri {
    const SPEC: ProviderSpec = ProviderSpec {
        name: "sqs",
        aliases: &[],
        schemes: &["https", "http"],
        default_interval: Duration::from_secs(20),
        interval_flag: "--sqs-short-poll-interval",
        example: "https://sqs.ap-south-1.amazonaws.com/82910/sms-sender",
    };

    fn parse(input: &str, scheme: &str) -> Result<Self, String> {
        uri::parse(input, scheme)
    }

    fn redacted(&self) -> String {
        SqsUri::redacted(self)
    }

    fn connect<'a>(
        &'a self,
        creds: &'a Credentials,
        opts: &'a ProviderOptions,
    ) -> ConnectFuture<'a> {
        boxed(SqsProvider::connect(self, creds, opts))
    }
}
