//! RabbitMQ provider: AMQP always, plus the management HTTP API when the queue URI names
//! one.
//!
//! AMQP passive `queue.declare` answers at once with the ready count (visible) and the
//! consumer count; it cannot see unacknowledged messages. The management API
//! (`GET /api/queues/{vhost}/{queue}`, basic auth) adds `messages_unacknowledged` (in
//! flight: delivered, not acked — with Celery's default early ack that is prefetched tasks
//! only; `task_acks_late=True` makes running tasks visible too), `consumers`, and
//! `message_stats.publish_details.rate` × 60 (sent per minute). Its counters are
//! statistics sampled by the broker every `collect_statistics_interval` (5 s by default),
//! so they lag, and they are absent from a queue until its first sample.
//!
//! With a management URL both are asked on every poll, concurrently: the ready count comes
//! from AMQP, so a new backlog is seen as fast as without management (the lagging sample
//! never hides it), and the rest from the management API. When only one answers, the
//! provider keeps working with what it has and says which signal is missing
//! ([`QueueMetrics::partial`]): without AMQP the ready count is the management sample;
//! without the management API in-flight and the publish rate are unknown (`None`), never
//! zero. Without a management URL in-flight is always unknown: work held by workers is
//! invisible, which is why the management API is recommended. Neither path reports
//! idleness (`idle` is `None`); the registry infers it over the idle window.
//!
//! A queue exists only once someone declares it (Celery declares its queues when a worker
//! starts or a task is sent), so a WPA on a new install, at zero replicas, often reads a
//! queue that does not exist. When the passive declare says `NOT_FOUND` the queue is read
//! as empty (0 ready, 0 unacknowledged, no consumers, idle; [`QueueMetrics::missing`] names
//! it), not as an error: it is asked again at the next tick, so the first publish is seen
//! as fast as on a declared queue. A vhost that does not exist or refused credentials fail
//! the connection instead and stay errors.
//!
//! With a management URL each poll also fills [`QueueMetrics::workers`]: one report per
//! manual-ack consumer, by its connection's peer IP, busy when its channel holds
//! unacknowledged messages or when lagging statistics cannot rule that out (see the
//! `consumers` module); without one, or when that listing cannot be read, `workers` is
//! `None`.
//!
//! Credentials: a Secret's username/password win over the URI's userinfo; with neither,
//! RabbitMQ's `guest`/`guest`. They are never logged or put in errors: errors name the
//! queue as `amqp://host:port/<vhost>/<queue>`.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use lapin::options::QueueDeclareOptions;
use lapin::protocol::{AMQPErrorKind, AMQPHardError, AMQPSoftError};
use lapin::types::FieldTable;
use lapin::uri::{AMQPAuthority, AMQPQueryString, AMQPScheme, AMQPUri, AMQPUserInfo};
use lapin::{Channel, Connection, ConnectionProperties, ErrorKind};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde::Deserialize;

mod consumers;
pub mod uri;

use super::events::{AmqpEvents, EventSource};
use super::provider::{ConnectFuture, ProviderSpec, ProviderUri, boxed};
use super::{Credentials, ProviderOptions, QueueError, QueueMetrics, QueueProvider};
use uri::AmqpUri;

/// Everything but RFC 3986 unreserved characters: `/` in a vhost must become `%2F`.
const PATH_SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');
/// Heartbeat so a silently dead connection is noticed by lapin too.
const HEARTBEAT_SECONDS: u16 = 30;

/// Polls one RabbitMQ queue. Keeps one AMQP connection and channel (opened when needed);
/// a closed channel or dropped connection is re-opened on the next poll.
pub struct RabbitmqProvider {
    label: String,
    queue: String,
    amqp_uri: AMQPUri,
    timeout: Duration,
    management: Option<Arc<Management>>,
    connection: Option<Connection>,
    channel: Option<Channel>,
    /// AMQP ready counts of the last `SAMPLE_LAG` (with a management URL only).
    recent_ready: VecDeque<(Instant, u64)>,
}

/// How old the management API's statistics may be: RabbitMQ's default
/// `collect_statistics_interval` is 5 s; twice that covers a sample taken just before.
const SAMPLE_LAG: Duration = Duration::from_secs(10);

struct Management {
    http: reqwest::Client,
    /// The management API's base URL, without a trailing slash.
    base: String,
    /// The queue object's URL.
    url: String,
    username: String,
    password: String,
}

/// The part of the management API's queue object we use. Every field is optional:
/// counters are absent until the first statistics sample.
#[derive(Debug, Deserialize)]
struct QueueInfo {
    messages_ready: Option<u64>,
    messages_unacknowledged: Option<u64>,
    consumers: Option<u64>,
    message_stats: Option<MessageStats>,
    /// Read apart from the figures, so that an odd listing costs the per-consumer reports
    /// only, never the queue's figures.
    consumer_details: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
struct MessageStats {
    publish_details: Option<RateDetails>,
}

#[derive(Debug, Deserialize)]
struct RateDetails {
    rate: Option<f64>,
}

/// What a passive declare tells.
struct AmqpCounts {
    ready: u64,
    consumers: u64,
}

impl RabbitmqProvider {
    /// Prepares the provider. Without a management URL it opens the AMQP connection
    /// now, so wrong credentials (`Denied`) or an unreachable broker (`Unavailable`)
    /// show up at once; with one, nothing is contacted until the first poll, which can
    /// then work with either source alone.
    pub async fn connect(
        uri: &AmqpUri,
        creds: &Credentials,
        opts: &ProviderOptions,
    ) -> Result<Self, QueueError> {
        if uri.queue.is_empty() {
            return Err(QueueError::Config(
                "the AMQP queue URI names no queue".into(),
            ));
        }
        let (username, password) = resolve_credentials(uri, creds);
        let scheme = if uri.tls { "amqps" } else { "amqp" };
        let vhost_segment = utf8_percent_encode(&uri.vhost, PATH_SEGMENT).to_string();
        let label = format!(
            "{scheme}://{}:{}/{vhost_segment}/{}",
            uri.host, uri.port, uri.queue
        );
        let amqp_uri = amqp_uri(
            uri.tls,
            &uri.host,
            uri.port,
            &uri.vhost,
            (&username, &password),
            opts.request_timeout,
        );
        let management = match &uri.management {
            Some(base) => {
                let http = reqwest::Client::builder()
                    .timeout(opts.request_timeout)
                    .connect_timeout(opts.request_timeout)
                    .build()
                    .map_err(|e| QueueError::Config(format!("cannot build an HTTP client: {e}")))?;
                let base = base.trim_end_matches('/').to_string();
                let url = format!(
                    "{base}/api/queues/{vhost_segment}/{}",
                    utf8_percent_encode(&uri.queue, PATH_SEGMENT)
                );
                Some(Arc::new(Management {
                    http,
                    base,
                    url,
                    username,
                    password,
                }))
            }
            None => None,
        };
        let mut provider = Self {
            label,
            queue: uri.queue.clone(),
            amqp_uri,
            timeout: opts.request_timeout,
            management,
            connection: None,
            channel: None,
            recent_ready: VecDeque::new(),
        };
        if provider.management.is_none() {
            provider.ensure_channel().await?;
        }
        Ok(provider)
    }

    fn unavailable(&self, detail: impl Into<String>) -> QueueError {
        QueueError::Unavailable {
            queue: self.label.clone(),
            detail: detail.into(),
        }
    }

    /// Returns an open channel, re-opening the connection and/or channel as needed.
    async fn ensure_channel(&mut self) -> Result<Channel, QueueError> {
        if let Some(channel) = &self.channel
            && channel.status().connected()
        {
            return Ok(channel.clone());
        }
        self.channel = None;
        if !self
            .connection
            .as_ref()
            .is_some_and(|c| c.status().connected())
        {
            self.connection = None;
            let connect =
                Connection::connect_uri(self.amqp_uri.clone(), ConnectionProperties::default());
            let c = tokio::time::timeout(self.timeout, connect)
                .await
                .map_err(|_| self.unavailable("timed out opening the AMQP connection"))?
                .map_err(|e| self.map_amqp_error(&e))?;
            self.connection = Some(c);
        }
        let Some(connection) = &self.connection else {
            return Err(self.unavailable("no AMQP connection"));
        };
        let opened = tokio::time::timeout(self.timeout, connection.create_channel()).await;
        let channel = match opened {
            Ok(Ok(channel)) => channel,
            Ok(Err(e)) => {
                self.connection = None;
                return Err(self.map_amqp_error(&e));
            }
            Err(_) => {
                self.connection = None;
                return Err(self.unavailable("timed out opening an AMQP channel"));
            }
        };
        self.channel = Some(channel.clone());
        Ok(channel)
    }

    /// Passive declare: ready and consumer counts, without creating the queue.
    async fn declare_once(&mut self) -> Result<AmqpCounts, QueueError> {
        let channel = self.ensure_channel().await?;
        let options = QueueDeclareOptions {
            passive: true,
            ..QueueDeclareOptions::default()
        };
        let declare =
            channel.queue_declare(self.queue.as_str().into(), options, FieldTable::default());
        match tokio::time::timeout(self.timeout, declare).await {
            Ok(Ok(queue)) => Ok(AmqpCounts {
                ready: u64::from(queue.message_count()),
                consumers: u64::from(queue.consumer_count()),
            }),
            Ok(Err(e)) => {
                // A failed declare closes the channel (404) or the connection.
                self.channel = None;
                if !e.is_amqp_soft_error() {
                    self.connection = None;
                }
                Err(self.map_amqp_error(&e))
            }
            Err(_) => {
                self.channel = None;
                self.connection = None;
                Err(self.unavailable("timed out waiting for queue.declare-ok"))
            }
        }
    }

    /// One passive declare, retried once on a fresh connection when a kept connection
    /// turns out to be dead (a restarted broker is then seen on the first poll).
    async fn declare(&mut self) -> Result<AmqpCounts, QueueError> {
        let reused = self.connection.is_some();
        match self.declare_once().await {
            Err(QueueError::Unavailable { .. }) if reused => {
                tracing::debug!(queue = %self.label, "AMQP connection broken, reconnecting");
                self.declare_once().await
            }
            other => other,
        }
    }

    fn map_amqp_error(&self, err: &lapin::Error) -> QueueError {
        map_amqp_error(&self.label, err)
    }
}

/// The user name and password to log in with: a Secret's values win over the URI's
/// userinfo; with neither, RabbitMQ's `guest`/`guest` (a user name without a password
/// logs in with an empty one).
pub(crate) fn resolve_credentials(uri: &AmqpUri, creds: &Credentials) -> (String, String) {
    match (&creds.username, &creds.password) {
        (Some(u), p) => (u.clone(), p.clone().unwrap_or_default()),
        (None, Some(p)) => (
            uri.username.clone().unwrap_or_else(|| "guest".into()),
            p.clone(),
        ),
        (None, None) => (
            uri.username.clone().unwrap_or_else(|| "guest".into()),
            uri.password.clone().unwrap_or_else(|| {
                if uri.username.is_some() {
                    String::new()
                } else {
                    "guest".into()
                }
            }),
        ),
    }
}

/// lapin's connection settings for a broker: our heartbeat, and `timeout` for the
/// connection handshake.
pub(crate) fn amqp_uri(
    tls: bool,
    host: &str,
    port: u16,
    vhost: &str,
    (username, password): (&str, &str),
    timeout: Duration,
) -> AMQPUri {
    let timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
    AMQPUri {
        scheme: if tls {
            AMQPScheme::AMQPS
        } else {
            AMQPScheme::AMQP
        },
        authority: AMQPAuthority {
            userinfo: AMQPUserInfo {
                username: username.to_string(),
                password: password.to_string(),
            },
            host: host.to_string(),
            port,
        },
        vhost: vhost.to_string(),
        query: AMQPQueryString {
            heartbeat: Some(HEARTBEAT_SECONDS),
            connection_timeout: Some(timeout_ms),
            ..AMQPQueryString::default()
        },
    }
}

/// Maps a lapin error to the provider contract's error kinds; `label` names the queue
/// (or broker) without credentials.
pub(crate) fn map_amqp_error(label: &str, err: &lapin::Error) -> QueueError {
    let queue = label.to_string();
    match err.kind() {
        ErrorKind::ProtocolError(amqp) => match amqp.kind() {
            AMQPErrorKind::Soft(AMQPSoftError::NOTFOUND) => QueueError::NotFound { queue },
            // NOT_ALLOWED closes the connection when the vhost does not exist or the user
            // may not use it: a clear answer, asked again at the normal interval.
            AMQPErrorKind::Soft(AMQPSoftError::ACCESSREFUSED)
            | AMQPErrorKind::Hard(AMQPHardError::NOTALLOWED) => QueueError::Denied {
                queue,
                detail: amqp.get_message().to_string(),
            },
            _ => QueueError::BadResponse {
                queue,
                detail: amqp.to_string(),
            },
        },
        ErrorKind::AuthProviderError(detail) => QueueError::Denied {
            queue,
            detail: detail.clone(),
        },
        // lapin's parser errors are opaque ("ParserErrors { .. }"): say what they mean.
        ErrorKind::ParsingError(e) => QueueError::BadResponse {
            queue,
            detail: format!("not an AMQP 0-9-1 answer ({e})"),
        },
        _ => QueueError::Unavailable {
            queue,
            detail: err.to_string(),
        },
    }
}

/// One management API read of the queue object.
async fn fetch_management(mgmt: &Management, label: &str) -> Result<QueueInfo, QueueError> {
    let unavailable = |detail: String| QueueError::Unavailable {
        queue: label.to_string(),
        detail,
    };
    let queue = label.to_string();
    let response = mgmt
        .http
        .get(&mgmt.url)
        .basic_auth(&mgmt.username, Some(&mgmt.password))
        .send()
        .await
        .map_err(|e| unavailable(format!("management API: {}", e.without_url())))?;
    let status = response.status();
    match status.as_u16() {
        200 => {}
        404 => return Err(QueueError::NotFound { queue }),
        401 | 403 => {
            return Err(QueueError::Denied {
                queue,
                detail: format!("management API answered {status}"),
            });
        }
        500.. => return Err(unavailable(format!("management API answered {status}"))),
        _ => {
            return Err(QueueError::BadResponse {
                queue,
                detail: format!("management API answered {status}"),
            });
        }
    }
    let body = response
        .bytes()
        .await
        .map_err(|e| unavailable(format!("management API body: {}", e.without_url())))?;
    serde_json::from_slice(&body).map_err(|e| QueueError::BadResponse {
        queue,
        detail: format!("management API queue object: {e}"),
    })
}

/// The queue object, then (when it answered) its consumers' channel statistics, all
/// before `deadline`. The observation is `None` when the queue object did not answer.
async fn fetch_management_and_consumers(
    mgmt: &Management,
    label: &str,
    deadline: tokio::time::Instant,
) -> (
    Result<QueueInfo, QueueError>,
    Option<Result<consumers::Observed, String>>,
) {
    let info = match fetch_management(mgmt, label).await {
        Ok(info) => info,
        Err(e) => return (Err(e), None),
    };
    let observed = consumers::observe(mgmt, info.consumer_details.as_ref(), deadline).await;
    (Ok(info), Some(observed))
}

/// Adds the per-consumer reports to a sample; their gaps are added to `partial`.
fn attach_reports(
    metrics: &mut QueueMetrics,
    observed: Result<consumers::Observed, String>,
    amqp_consumers: Option<u64>,
) {
    let reports = consumers::reports(observed, metrics.in_flight, amqp_consumers);
    metrics.workers = reports.workers;
    if let Some(note) = reports.partial {
        metrics.partial = Some(match metrics.partial.take() {
            Some(before) => format!("{before}; {note}"),
            None => note,
        });
    }
}

impl RabbitmqProvider {
    /// The queue does not exist: no producer or worker has declared it yet (Celery declares
    /// its queues when a worker starts or a task is sent), or it was deleted. Nothing can
    /// wait in it and nobody consumes it, which is an empty queue, not an error. Messages
    /// remembered as ready belonged to a queue that is gone.
    fn missing(&mut self) -> QueueMetrics {
        self.recent_ready.clear();
        QueueMetrics::missing_queue(self.label.clone())
    }

    /// Records a ready count; returns the highest one of the last `SAMPLE_LAG`.
    fn remember_ready(&mut self, ready: u64, now: Instant) -> u64 {
        remember(&mut self.recent_ready, ready, now)
    }
}

fn remember(recent: &mut VecDeque<(Instant, u64)>, ready: u64, now: Instant) -> u64 {
    while recent
        .front()
        .is_some_and(|(at, _)| now.duration_since(*at) > SAMPLE_LAG)
    {
        recent.pop_front();
    }
    recent.push_back((now, ready));
    recent.iter().map(|(_, r)| *r).max().unwrap_or(ready)
}

/// Joins what AMQP and the management API answered into one sample. Errors only when
/// neither can tell the ready count, or when the management API says the queue does not
/// exist while AMQP cannot be asked (a 404 may also mean a vhost that does not exist).
/// AMQP's own "not found" never reaches here: the queue is then read as empty.
///
/// `recent_peak` is the highest AMQP ready count of the last `SAMPLE_LAG`: messages that
/// left the ready state since may be unacknowledged, which a management sample that old
/// cannot show yet.
fn combine(
    amqp: Result<AmqpCounts, QueueError>,
    management: Result<QueueInfo, QueueError>,
    recent_peak: u64,
) -> Result<QueueMetrics, QueueError> {
    let sampled_at = jiff::Timestamp::now();
    match (amqp, management) {
        // AMQP is authoritative on existence; the management API only when AMQP is down.
        // A vhost that does not exist is refused by AMQP and a 404 for the management API:
        // AMQP's answer says which.
        (Err(e @ (QueueError::NotFound { .. } | QueueError::Denied { .. })), _) => Err(e),
        (Err(_), Err(e @ QueueError::NotFound { .. })) => Err(e),
        (Ok(counts), Ok(info)) => {
            let sampled = info.messages_ready.is_some();
            // Before the first statistics sample unacked is absent: unknown, not zero.
            // Messages that left the ready state within the sample's possible age (the
            // sample showed them ready, or AMQP did recently) may be unacknowledged by now,
            // which the sample cannot show yet: in flight is at least that many until that
            // age has passed. A lagging sample may delay a scale-down by that long, never
            // make busy consumers look idle.
            let left_ready = info
                .messages_ready
                .unwrap_or(0)
                .max(recent_peak)
                .saturating_sub(counts.ready);
            Ok(QueueMetrics {
                missing: Vec::new(),
                visible: counts.ready,
                in_flight: match info.messages_unacknowledged {
                    Some(unacked) => Some(unacked.max(left_ready)),
                    None => (left_ready > 0).then_some(left_ready),
                },
                delayed: None,
                sent_per_minute: publish_rate(&info),
                // AMQP's count is current; the sample may be seconds old.
                consumers: Some(counts.consumers),
                idle: None,
                partial: (!sampled).then(|| {
                    "the management API has no statistics sample for this queue yet: \
                     unacknowledged messages unknown"
                        .to_string()
                }),
                sampled_at,
                workers: None,
            })
        }
        (Ok(counts), Err(e)) => Ok(QueueMetrics {
            missing: Vec::new(),
            visible: counts.ready,
            // Unknown, except that messages ready moments ago may be unacknowledged now.
            in_flight: Some(recent_peak.saturating_sub(counts.ready)).filter(|n| *n > 0),
            delayed: None,
            sent_per_minute: None,
            consumers: Some(counts.consumers),
            idle: None,
            partial: Some(format!(
                "management API unavailable ({e}): unacknowledged messages and publish rate unknown"
            )),
            sampled_at,
            workers: None,
        }),
        (Err(e), Ok(info)) => {
            let Some(ready) = info.messages_ready else {
                // Neither source can tell the ready count: report AMQP's failure.
                return Err(e);
            };
            Ok(QueueMetrics {
                missing: Vec::new(),
                visible: ready,
                in_flight: info.messages_unacknowledged,
                delayed: None,
                sent_per_minute: publish_rate(&info),
                consumers: info.consumers,
                idle: None,
                partial: Some(format!(
                    "AMQP unavailable ({e}): ready count from the management API's statistics sample, which lags"
                )),
                sampled_at,
                workers: None,
            })
        }
        (Err(amqp), Err(_)) => Err(amqp),
    }
}

fn publish_rate(info: &QueueInfo) -> Option<u64> {
    per_minute(
        info.message_stats
            .as_ref()
            .and_then(|s| s.publish_details.as_ref())
            .and_then(|d| d.rate),
    )
}

/// Messages per second -> per minute; `None` for absent or nonsensical rates.
fn per_minute(rate: Option<f64>) -> Option<u64> {
    let per_minute = rate? * 60.0;
    // Float-to-int `as` saturates; negative or NaN rates are rejected first.
    (per_minute.is_finite() && per_minute >= 0.0).then(|| per_minute.round() as u64)
}

#[async_trait]
impl QueueProvider for RabbitmqProvider {
    async fn poll(&mut self) -> Result<QueueMetrics, QueueError> {
        let Some(mgmt) = self.management.clone() else {
            let counts = match self.declare().await {
                Err(QueueError::NotFound { .. }) => return Ok(self.missing()),
                other => other?,
            };
            return Ok(QueueMetrics {
                missing: Vec::new(),
                visible: counts.ready,
                in_flight: None,
                delayed: None,
                sent_per_minute: None,
                consumers: Some(counts.consumers),
                idle: None,
                partial: None,
                sampled_at: jiff::Timestamp::now(),
                workers: None,
            });
        };
        let label = self.label.clone();
        let deadline = tokio::time::Instant::now() + self.timeout;
        let (amqp, (management, observed)) = tokio::join!(
            self.declare(),
            fetch_management_and_consumers(&mgmt, &label, deadline)
        );
        let recent_peak = match &amqp {
            Ok(counts) => self.remember_ready(counts.ready, Instant::now()),
            // AMQP is authoritative on existence: whatever the management API answered
            // raced with a declaration, or is a 404 too.
            Err(QueueError::NotFound { .. }) => return Ok(self.missing()),
            Err(_) => 0,
        };
        let amqp_consumers = amqp.as_ref().ok().map(|c| c.consumers);
        let mut metrics = combine(amqp, management, recent_peak)?;
        if let Some(observed) = observed {
            attach_reports(&mut metrics, observed, amqp_consumers);
        }
        Ok(metrics)
    }
}

impl ProviderUri for AmqpUri {
    const SPEC: ProviderSpec = ProviderSpec {
        name: "rabbitmq",
        aliases: &["amqp"],
        schemes: &["amqp", "amqps"],
        default_interval: Duration::from_secs(1),
        interval_flag: "--rabbitmq-poll-interval",
        example: "amqp://rabbitmq:5672/%2F/celery",
    };

    fn parse(input: &str, scheme: &str) -> Result<Self, String> {
        uri::parse(input, scheme)
    }

    fn redacted(&self) -> String {
        AmqpUri::redacted(self)
    }

    /// The vhost's `celeryev` exchange, with the credentials the provider logs in with.
    fn celery_events(&self, creds: &Credentials) -> Option<EventSource> {
        let (username, password) = resolve_credentials(self, creds);
        Some(EventSource::Rabbitmq(AmqpEvents {
            tls: self.tls,
            host: self.host.clone(),
            port: self.port,
            vhost: self.vhost.clone(),
            username,
            password,
        }))
    }

    fn connect<'a>(
        &'a self,
        creds: &'a Credentials,
        opts: &'a ProviderOptions,
    ) -> ConnectFuture<'a> {
        boxed(RabbitmqProvider::connect(self, creds, opts))
    }
}

#[cfg(test)]
mod tests;
