//! Which broker's Celery worker events to listen to, derived from a queue's URI by its
//! provider (`ProviderUri::celery_events`). Plain data: the listeners are in `workers/`.
//!
//! Queues on the same broker share one [`EventSource`] (it is a map key), so one listener
//! serves them all. The credentials are part of the key because they decide what the
//! listener may see; they never appear in `Debug` or `Display`.
//!
//! - Redis: server, database and kombu `global_keyprefix` (the channel is
//!   `<prefix>/<db>.celeryev/worker.*`), plus the identity. A `redis://` queue URI cannot
//!   tell a Celery queue from a plain list, so every Redis queue gets a source; for a plain
//!   list it simply never hears anything.
//! - RabbitMQ: server and vhost (the `celeryev` exchange is per vhost), plus the identity.
//! - SQS, beanstalkd and HTTP carry no Celery worker events: no source.
//!
//! Not covered: a Celery `event_exchange` other than `celeryev`, and kombu's legacy Redis
//! transport options `fanout_prefix=False` / `fanout_patterns=False` (channels without the
//! `/<db>.` prefix or without the routing key), which Celery has not used by default since
//! 4.0.

use std::fmt;

use super::uri::parts::{encode, render_host, render_userinfo};
use super::uri::redacted;

/// The exchange Celery sends events to (Celery's `event_exchange` default).
pub const EVENT_EXCHANGE: &str = "celeryev";

/// The routing keys of worker events: `worker.heartbeat`, `worker.online`,
/// `worker.offline`.
pub const WORKER_ROUTING_PREFIX: &str = "worker.";

/// A broker whose Celery worker events a listener follows.
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum EventSource {
    Redis(RedisEvents),
    Rabbitmq(AmqpEvents),
}

/// Worker events on a Redis server: PUBLISHed on `<prefix>/<db>.celeryev/worker.*`.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct RedisEvents {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    /// The database the workers use: only part of the channel name (Redis channels are
    /// shared by all databases).
    pub db: i64,
    /// kombu's `global_keyprefix`, prepended to the channel name too.
    pub prefix: String,
    pub username: Option<String>,
    pub password: Option<String>,
}

/// Worker events on a RabbitMQ vhost: the `celeryev` topic exchange.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct AmqpEvents {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    pub vhost: String,
    /// Resolved as the RabbitMQ provider does (Secret, then URI, then `guest`).
    pub username: String,
    pub password: String,
}

impl EventSource {
    /// The broker with the password as `***`: safe for logs and errors.
    pub fn redacted(&self) -> String {
        match self {
            EventSource::Redis(r) => r.redacted(),
            EventSource::Rabbitmq(a) => a.redacted(),
        }
    }
}

impl RedisEvents {
    /// What every worker-event channel of this database starts with:
    /// `<prefix>/<db>.celeryev/worker.` (kombu's `keyprefix_fanout`, exchange, `/`,
    /// routing key).
    pub fn channel_prefix(&self) -> String {
        format!(
            "{}/{}.{EVENT_EXCHANGE}/{WORKER_ROUTING_PREFIX}",
            self.prefix, self.db
        )
    }

    /// The PSUBSCRIBE pattern matching exactly [`Self::channel_prefix`] followed by
    /// anything: glob characters in the prefix are escaped so that they match themselves.
    pub fn channel_pattern(&self) -> String {
        let mut pattern = String::new();
        for c in self.channel_prefix().chars() {
            if matches!(c, '*' | '?' | '[' | ']' | '\\') {
                pattern.push('\\');
            }
            pattern.push(c);
        }
        pattern.push('*');
        pattern
    }

    /// `redis[s]://[user[:***]@]host:port/<db>[?prefix=..]`.
    pub fn redacted(&self) -> String {
        let mut s = format!(
            "{}://{}{}:{}/{}",
            if self.tls { "rediss" } else { "redis" },
            render_userinfo(&self.username, &self.password),
            render_host(&self.host),
            self.port,
            self.db
        );
        if !self.prefix.is_empty() {
            s.push_str("?prefix=");
            s.push_str(&encode(&self.prefix));
        }
        s
    }
}

impl AmqpEvents {
    /// `amqp[s]://user:***@host:port/<vhost>`.
    pub fn redacted(&self) -> String {
        let vhost = if self.vhost == "/" {
            "%2F".to_string()
        } else {
            encode(&self.vhost)
        };
        format!(
            "{}://{}{}:{}/{vhost}",
            if self.tls { "amqps" } else { "amqp" },
            render_userinfo(&Some(self.username.clone()), &Some(String::new())),
            render_host(&self.host),
            self.port,
        )
    }
}

impl fmt::Display for EventSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl fmt::Debug for EventSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EventSource::Redis(r) => f.debug_tuple("Redis").field(r).finish(),
            EventSource::Rabbitmq(a) => f.debug_tuple("Rabbitmq").field(a).finish(),
        }
    }
}

impl fmt::Debug for RedisEvents {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisEvents")
            .field("tls", &self.tls)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("db", &self.db)
            .field("prefix", &self.prefix)
            .field("username", &self.username)
            .field("password", &redacted(&self.password))
            .finish()
    }
}

impl fmt::Debug for AmqpEvents {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AmqpEvents")
            .field("tls", &self.tls)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("vhost", &self.vhost)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::{Credentials, QueueUri};

    fn source(uri: &str, creds: &Credentials) -> Option<EventSource> {
        QueueUri::parse(uri).unwrap().celery_events(creds)
    }

    fn redis(uri: &str) -> RedisEvents {
        match source(uri, &Credentials::default()) {
            Some(EventSource::Redis(r)) => r,
            other => panic!("expected a Redis source, got {other:?}"),
        }
    }

    #[test]
    fn redis_channels_carry_the_db_and_the_prefix() {
        // As captured from real workers: `/3.celeryev/worker.online`,
        // `wpa:/0.celeryev/worker.heartbeat`.
        assert_eq!(
            redis("redis://h/3/q").channel_prefix(),
            "/3.celeryev/worker."
        );
        assert_eq!(
            redis("redis://h/3/q").channel_pattern(),
            "/3.celeryev/worker.*"
        );
        let prefixed = redis("redis://h/0/q?prefix=wpa%3A");
        assert_eq!(prefixed.channel_prefix(), "wpa:/0.celeryev/worker.");
        assert_eq!(prefixed.channel_pattern(), "wpa:/0.celeryev/worker.*");
    }

    #[test]
    fn glob_characters_in_the_prefix_match_themselves() {
        let r = redis("redis://h/0/q?prefix=a*b%3Fc%5Bd%5D%5C");
        assert_eq!(r.channel_pattern(), r"a\*b\?c\[d\]\\/0.celeryev/worker.*");
    }

    #[test]
    fn queues_on_one_broker_share_a_source() {
        let none = Credentials::default();
        assert_eq!(
            source("redis://h/0/a", &none),
            source("redis://h:6379/0/b?priority_steps=0", &none)
        );
        assert_ne!(
            source("redis://h/0/a", &none),
            source("redis://h/1/a", &none)
        );
        assert_ne!(
            source("redis://h/0/a", &none),
            source("redis://h/0/a?prefix=p", &none)
        );
        assert_eq!(
            source("amqp://h/%2F/a", &none),
            source("amqp://guest:guest@h:5672//b", &none)
        );
        assert_ne!(
            source("amqp://h/v1/a", &none),
            source("amqp://h/v2/a", &none)
        );
    }

    #[test]
    fn secret_credentials_win_over_the_uri() {
        let creds = Credentials {
            username: Some("svc".into()),
            password: Some("from-secret".into()),
            authorization: None,
        };
        let Some(EventSource::Redis(r)) = source("redis://u:p@h/0/q", &creds) else {
            panic!("redis source expected")
        };
        assert_eq!(
            (r.username.as_deref(), r.password.as_deref()),
            (Some("svc"), Some("from-secret"))
        );
        let Some(EventSource::Rabbitmq(a)) = source("amqp://u:p@h/%2F/q", &creds) else {
            panic!("amqp source expected")
        };
        assert_eq!(
            (a.username.as_str(), a.password.as_str()),
            ("svc", "from-secret")
        );
    }

    #[test]
    fn brokers_without_worker_events_have_no_source() {
        let none = Credentials::default();
        for uri in [
            "https://sqs.eu-west-1.amazonaws.com/123456789012/q",
            "beanstalk://h/tube",
            "http+json://h/metrics",
        ] {
            let parsed = QueueUri::parse(uri).unwrap();
            assert_eq!(parsed.celery_events(&none), None, "{uri}");
        }
    }

    #[test]
    fn passwords_never_show() {
        let none = Credentials::default();
        for uri in ["redis://u:hunter22@h/0/q", "amqp://u:hunter22@h/%2F/q"] {
            let s = source(uri, &none).unwrap();
            for shown in [s.to_string(), format!("{s:?}")] {
                assert!(!shown.contains("hunter22"), "{shown}");
            }
        }
        assert_eq!(
            source("redis://u:hunter22@h/0/q?prefix=p", &none)
                .unwrap()
                .to_string(),
            "redis://u:***@h:6379/0?prefix=p"
        );
        assert_eq!(
            source("amqp://u:hunter22@h/%2F/q", &none)
                .unwrap()
                .to_string(),
            "amqp://u:***@h:5672/%2F"
        );
    }
}
