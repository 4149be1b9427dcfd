//! The `queueURI` grammar: one scheme per provider, parsed with the `url` crate.
//!
//! Every parsed form keeps credentials found in userinfo apart from the address, so that
//! [`QueueUri::redacted`] can print the queue without them.

/// A parsed `queueURI`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum QueueUri {
    Sqs(SqsUri),
    Rabbitmq(AmqpUri),
    Redis(RedisUri),
    Beanstalk(BeanstalkUri),
    Http(HttpUri),
}

/// `https://sqs.<region>.amazonaws.com/<account>/<queue>`, or any other
/// `http(s)://host[:port]/<account>/<queue>` for SQS-compatible servers.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SqsUri {
    /// The queue URL as SQS expects it (no query string, no userinfo).
    pub queue_url: String,
    /// `Some(scheme://host[:port])` for a non-AWS endpoint; `None` for amazonaws.com.
    pub endpoint: Option<String>,
    /// From the amazonaws.com host name or `?region=`; `None` means the AWS environment.
    pub region: Option<String>,
    pub account: String,
    pub queue: String,
}

/// `amqp[s]://[user:pass@]host[:port]/<vhost, percent-encoded>/<queue>[?management=http[s]://host:port]`
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct AmqpUri {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    /// Decoded vhost ("/" for the default vhost, written `%2F` in the URI).
    pub vhost: String,
    pub queue: String,
    pub username: Option<String>,
    pub password: Option<String>,
    /// Base URL of the management HTTP API, when given.
    pub management: Option<String>,
}

/// `redis[s]://[user:pass@]host[:port]/<db>/<queue>[?priority_steps=0,3,6,9&sep=..&prefix=..]`
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct RedisUri {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    pub db: i64,
    pub queue: String,
    pub username: Option<String>,
    pub password: Option<String>,
    /// kombu priority steps; default `[0, 3, 6, 9]`.
    pub priority_steps: Vec<u32>,
    /// kombu priority separator; default `"\x06\x16"`.
    pub separator: String,
    /// kombu `global_keyprefix`; default empty.
    pub prefix: String,
}

/// `beanstalk://host:port/<tube>`
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BeanstalkUri {
    pub host: String,
    pub port: u16,
    pub tube: String,
}

/// `http+json://...` or `https+json://...`: the URL (with `http`/`https`) that returns
/// the queue's metrics as JSON.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct HttpUri {
    pub url: String,
}

/// A `queueURI` that cannot be used; the message names the problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid queueURI {uri}: {problem}")]
pub struct UriError {
    /// The URI with credentials redacted.
    pub uri: String,
    pub problem: String,
}

/// Shows whether a secret is set without showing it.
fn redacted(secret: &Option<String>) -> &'static str {
    if secret.is_some() {
        "<redacted>"
    } else {
        "<none>"
    }
}

impl std::fmt::Debug for AmqpUri {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AmqpUri")
            .field("tls", &self.tls)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("vhost", &self.vhost)
            .field("queue", &self.queue)
            .field("username", &self.username)
            .field("password", &redacted(&self.password))
            .field("management", &self.management)
            .finish()
    }
}

impl std::fmt::Debug for RedisUri {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisUri")
            .field("tls", &self.tls)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("db", &self.db)
            .field("queue", &self.queue)
            .field("username", &self.username)
            .field("password", &redacted(&self.password))
            .field("priority_steps", &self.priority_steps)
            .field("separator", &self.separator)
            .field("prefix", &self.prefix)
            .finish()
    }
}

impl std::fmt::Debug for HttpUri {
    // The URL may carry a token in its query or userinfo: show scheme, host and path only.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown = match url::Url::parse(&self.url) {
            Ok(u) => format!(
                "{}://{}{}",
                u.scheme(),
                u.host_str().unwrap_or(""),
                u.path()
            ),
            Err(_) => "<unparseable>".to_string(),
        };
        f.debug_struct("HttpUri").field("url", &shown).finish()
    }
}
