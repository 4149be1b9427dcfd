//! RabbitMQ provider: the management HTTP API when the queue URI names one, AMQP
//! otherwise (and as a fallback).
//!
//! With management (`GET /api/queues/{vhost}/{queue}`, basic auth): `messages_ready`
//! (visible), `messages_unacknowledged` (in flight: delivered, not acked — with Celery's
//! default early ack that is prefetched tasks only; `task_acks_late=True` makes running
//! tasks visible too), `consumers`, and `message_stats.publish_details.rate` × 60
//! (sent per minute). The management counters are statistics sampled by the broker
//! (every `collect_statistics_interval`, 5 s by default), so they lag; they are absent
//! from a new queue until its first sample: the provider then takes the ready count from
//! AMQP and reports in-flight as unknown (`None`), never as zero.
//!
//! Without management: AMQP passive `queue.declare`, which answers at once with the
//! ready count and the consumer count only. AMQP cannot see unacknowledged messages, so
//! `in_flight` is `None`: work held by workers is invisible, which is why the management
//! API is recommended. Neither path reports idleness (`idle` is `None`); the registry
//! infers it over the idle window.
//!
//! Credentials: a Secret's username/password win over the URI's userinfo; with neither,
//! RabbitMQ's `guest`/`guest`. They are never logged or put in errors: errors name the
//! queue as `amqp://host:port/<vhost>/<queue>`.

use std::time::Duration;

use async_trait::async_trait;
use lapin::options::QueueDeclareOptions;
use lapin::protocol::{AMQPErrorKind, AMQPSoftError};
use lapin::types::FieldTable;
use lapin::uri::{AMQPAuthority, AMQPQueryString, AMQPScheme, AMQPUri, AMQPUserInfo};
use lapin::{Channel, Connection, ConnectionProperties, ErrorKind};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde::Deserialize;

use super::uri::AmqpUri;
use super::{Credentials, ProviderKind, ProviderOptions, QueueError, QueueMetrics, QueueProvider};

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
    management: Option<Management>,
    connection: Option<Connection>,
    channel: Option<Channel>,
}

struct Management {
    http: reqwest::Client,
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
    /// show up at once; with one, no request is made until the first poll.
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
        let (username, password) = match (&creds.username, &creds.password) {
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
        };
        let scheme = if uri.tls { "amqps" } else { "amqp" };
        let vhost_segment = utf8_percent_encode(&uri.vhost, PATH_SEGMENT).to_string();
        let label = format!(
            "{scheme}://{}:{}/{vhost_segment}/{}",
            uri.host, uri.port, uri.queue
        );
        let timeout_ms = u64::try_from(opts.request_timeout.as_millis()).unwrap_or(u64::MAX);
        let amqp_uri = AMQPUri {
            scheme: if uri.tls {
                AMQPScheme::AMQPS
            } else {
                AMQPScheme::AMQP
            },
            authority: AMQPAuthority {
                userinfo: AMQPUserInfo {
                    username: username.clone(),
                    password: password.clone(),
                },
                host: uri.host.clone(),
                port: uri.port,
            },
            vhost: uri.vhost.clone(),
            query: AMQPQueryString {
                heartbeat: Some(HEARTBEAT_SECONDS),
                connection_timeout: Some(timeout_ms),
                ..AMQPQueryString::default()
            },
        };
        let management = match &uri.management {
            Some(base) => {
                let http = reqwest::Client::builder()
                    .timeout(opts.request_timeout)
                    .connect_timeout(opts.request_timeout)
                    .build()
                    .map_err(|e| QueueError::Config(format!("cannot build an HTTP client: {e}")))?;
                let url = format!(
                    "{}/api/queues/{vhost_segment}/{}",
                    base.trim_end_matches('/'),
                    utf8_percent_encode(&uri.queue, PATH_SEGMENT)
                );
                Some(Management {
                    http,
                    url,
                    username,
                    password,
                })
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
        let queue = self.label.clone();
        match err.kind() {
            ErrorKind::ProtocolError(amqp) => match amqp.kind() {
                AMQPErrorKind::Soft(AMQPSoftError::NOTFOUND) => QueueError::NotFound { queue },
                AMQPErrorKind::Soft(AMQPSoftError::ACCESSREFUSED) => QueueError::Denied {
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

    async fn fetch_management(&self, mgmt: &Management) -> Result<QueueInfo, QueueError> {
        let queue = self.label.clone();
        let response = mgmt
            .http
            .get(&mgmt.url)
            .basic_auth(&mgmt.username, Some(&mgmt.password))
            .send()
            .await
            .map_err(|e| self.unavailable(format!("management API: {}", e.without_url())))?;
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
            500.. => return Err(self.unavailable(format!("management API answered {status}"))),
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
            .map_err(|e| self.unavailable(format!("management API body: {}", e.without_url())))?;
        serde_json::from_slice(&body).map_err(|e| QueueError::BadResponse {
            queue,
            detail: format!("management API queue object: {e}"),
        })
    }
}

/// Messages per second -> per minute; `None` for absent or nonsensical rates.
fn per_minute(rate: Option<f64>) -> Option<u64> {
    let per_minute = rate? * 60.0;
    // Float-to-int `as` saturates; negative or NaN rates are rejected first.
    (per_minute.is_finite() && per_minute >= 0.0).then(|| per_minute.round() as u64)
}

#[async_trait]
impl QueueProvider for RabbitmqProvider {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Rabbitmq
    }

    async fn poll(&mut self) -> Result<QueueMetrics, QueueError> {
        let Some(mgmt) = &self.management else {
            let counts = self.declare().await?;
            return Ok(QueueMetrics {
                visible: counts.ready,
                in_flight: None,
                delayed: None,
                sent_per_minute: None,
                consumers: Some(counts.consumers),
                idle: None,
                sampled_at: jiff::Timestamp::now(),
            });
        };
        let info = self.fetch_management(mgmt).await?;
        let sent_per_minute = per_minute(
            info.message_stats
                .and_then(|s| s.publish_details)
                .and_then(|d| d.rate),
        );
        let (visible, in_flight, consumers) = match info.messages_ready {
            Some(ready) => (ready, info.messages_unacknowledged, info.consumers),
            None => {
                // Not sampled yet: AMQP knows the ready count now; unacked stays unknown.
                let counts = self.declare().await?;
                (counts.ready, None, Some(counts.consumers))
            }
        };
        Ok(QueueMetrics {
            visible,
            in_flight,
            delayed: None,
            sent_per_minute,
            consumers,
            idle: None,
            sampled_at: jiff::Timestamp::now(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sampled_and_unsampled_queue_objects() {
        let sampled: QueueInfo = serde_json::from_str(
            r#"{"name":"q","messages_ready":4,"messages_unacknowledged":2,"consumers":1,
                "message_stats":{"publish":6,"publish_details":{"rate":0.5}},"arguments":{}}"#,
        )
        .unwrap();
        assert_eq!(sampled.messages_ready, Some(4));
        assert_eq!(sampled.messages_unacknowledged, Some(2));
        assert_eq!(
            per_minute(
                sampled
                    .message_stats
                    .and_then(|s| s.publish_details)
                    .and_then(|d| d.rate)
            ),
            Some(30)
        );
        let fresh: QueueInfo =
            serde_json::from_str(r#"{"name":"q","arguments":{},"type":"classic"}"#).unwrap();
        assert_eq!(
            (fresh.messages_ready, fresh.messages_unacknowledged),
            (None, None)
        );
        assert!(fresh.message_stats.is_none());
    }

    #[test]
    fn odd_json_is_an_error_not_a_panic() {
        assert!(serde_json::from_str::<QueueInfo>(r#"{"messages_ready":-1}"#).is_err());
        assert!(serde_json::from_str::<QueueInfo>(r#"{"messages_ready":"many"}"#).is_err());
        assert!(serde_json::from_str::<QueueInfo>("[]").is_err());
        assert_eq!(per_minute(Some(f64::NAN)), None);
        assert_eq!(per_minute(Some(-1.0)), None);
        assert_eq!(per_minute(None), None);
    }

    #[test]
    fn vhost_is_one_path_segment() {
        assert_eq!(utf8_percent_encode("/", PATH_SEGMENT).to_string(), "%2F");
        assert_eq!(
            utf8_percent_encode("a b/c", PATH_SEGMENT).to_string(),
            "a%20b%2Fc"
        );
    }
}
