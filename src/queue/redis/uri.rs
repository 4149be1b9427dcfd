//! The Redis / Celery `queueURI` grammar:
//! `redis[s]://[user:pass@]host[:port]/<db>/<queue>[?priority_steps=0,3,6,9&sep=<sep>&prefix=<prefix>]`;
//! port 6379 by default; kombu's defaults are steps `0,3,6,9`, separator `\x06\x16` (write
//! it `%06%16`) and no prefix.

use super::location::{self, RedisQueueRef};
use crate::queue::uri::parts::{encode, quote};
use crate::queue::uri::redacted as shown;

/// Parses a `redis://` or `rediss://` queue URI.
pub(crate) fn parse(input: &str, scheme: &str) -> Result<RedisUri, String> {
    from_location(input, scheme == "rediss")
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

impl std::fmt::Debug for RedisUri {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisUri")
            .field("tls", &self.tls)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("db", &self.db)
            .field("queue", &self.queue)
            .field("username", &self.username)
            .field("password", &shown(&self.password))
            .field("priority_steps", &self.priority_steps)
            .field("separator", &self.separator)
            .field("prefix", &self.prefix)
            .finish()
    }
}

/// kombu's default `priority_steps` for the Redis transport.
pub const DEFAULT_PRIORITY_STEPS: [u32; 4] = [0, 3, 6, 9];

/// kombu's default priority separator for the Redis transport.
pub const DEFAULT_SEPARATOR: &str = "\x06\x16";

const MAX_PRIORITY_STEPS: usize = 256;

fn from_location(input: &str, tls: bool) -> Result<RedisUri, String> {
    let (at, query) = location::parse(input, tls, &["priority_steps", "sep", "prefix"])?;
    let RedisQueueRef {
        tls,
        host,
        port,
        db,
        queue,
        username,
        password,
    } = at;
    let priority_steps = match query.get("priority_steps") {
        Some(steps) => parse_priority_steps(steps)?,
        None => DEFAULT_PRIORITY_STEPS.to_vec(),
    };
    let separator = match query.get("sep") {
        Some(sep) if sep.is_empty() => return Err("`sep` must not be empty".to_string()),
        Some(sep) => sep.clone(),
        None => DEFAULT_SEPARATOR.to_string(),
    };
    let prefix = query.get("prefix").cloned().unwrap_or_default();
    Ok(RedisUri {
        tls,
        host,
        port,
        db,
        queue,
        username,
        password,
        priority_steps,
        separator,
        prefix,
    })
}

fn parse_priority_steps(value: &str) -> Result<Vec<u32>, String> {
    let mut steps = Vec::new();
    for part in value.split(',') {
        let part = part.trim();
        let step = part.parse::<u32>().map_err(|_| {
            format!(
                "bad priority step `{}`: expected comma-separated numbers >= 0 like 0,3,6,9",
                quote(part)
            )
        })?;
        if let Some(last) = steps.last()
            && step <= *last
        {
            return Err(format!(
                "bad priority step {step}: steps must be strictly increasing"
            ));
        }
        steps.push(step);
        if steps.len() > MAX_PRIORITY_STEPS {
            return Err(format!("more than {MAX_PRIORITY_STEPS} priority steps"));
        }
    }
    Ok(steps)
}

impl RedisUri {
    /// Canonical form with the password as `***`; non-default kombu settings kept.
    pub(crate) fn redacted(&self) -> String {
        let mut query = Vec::new();
        if self.priority_steps != DEFAULT_PRIORITY_STEPS {
            let steps: Vec<String> = self.priority_steps.iter().map(|s| s.to_string()).collect();
            query.push(format!("priority_steps={}", steps.join(",")));
        }
        if self.separator != DEFAULT_SEPARATOR {
            query.push(format!("sep={}", encode(&self.separator)));
        }
        if !self.prefix.is_empty() {
            query.push(format!("prefix={}", encode(&self.prefix)));
        }
        self.location().redacted("redis", &query)
    }

    /// Where the queue is, without the kombu settings.
    pub(crate) fn location(&self) -> RedisQueueRef {
        RedisQueueRef {
            tls: self.tls,
            host: self.host.clone(),
            port: self.port,
            db: self.db,
            queue: self.queue.clone(),
            username: self.username.clone(),
            password: self.password.clone(),
        }
    }
}
