//! The Dramatiq `queueURI` grammar:
//! `redis[s]+dramatiq://[user:pass@]host[:port]/<db>/<queue>[?namespace=dramatiq&heartbeat_timeout=60000&client_names=true]`.
//!
//! `namespace` and `heartbeat_timeout` (milliseconds) are the `RedisBroker` options of the
//! same names and must match what the workers use; `client_names` turns on the per-worker
//! report, which needs the workers to name their Redis connections (see
//! docs/frameworks/dramatiq.md).

use std::time::Duration;

use crate::queue::redis::location::{self, RedisQueueRef};
use crate::queue::uri::parts::{encode, quote};

/// `RedisBroker(namespace=...)`'s default.
pub const DEFAULT_NAMESPACE: &str = "dramatiq";
/// `RedisBroker(heartbeat_timeout=...)`'s default (`DEFAULT_HEARTBEAT_TIMEOUT`), in ms.
pub const DEFAULT_HEARTBEAT_TIMEOUT_MS: u64 = 60_000;
/// A day: a longer timeout is a typo (seconds written as milliseconds the other way round
/// would be caught by the lower bound).
const MAX_HEARTBEAT_TIMEOUT_MS: u64 = 86_400_000;
/// Dramatiq's workers beat at least every `worker_timeout` (1 s by default); a timeout
/// shorter than this would count live workers dead.
const MIN_HEARTBEAT_TIMEOUT_MS: u64 = 1_000;

const PARAMS: [&str; 3] = ["namespace", "heartbeat_timeout", "client_names"];

/// A Dramatiq queue on a Redis server.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DramatiqUri {
    /// Server, database, queue name and credentials (the `Debug` hides the password).
    pub location: RedisQueueRef,
    /// The key prefix of every Dramatiq key (`<namespace>:<queue>`).
    pub namespace: String,
    /// A worker whose last heartbeat is older than this is dead (Dramatiq's own rule).
    pub heartbeat_timeout_ms: u64,
    /// Map worker ids to pods through the names of their Redis connections.
    pub client_names: bool,
}

/// Parses a `redis+dramatiq://` or `rediss+dramatiq://` queue URI.
pub(crate) fn parse(input: &str, scheme: &str) -> Result<DramatiqUri, String> {
    let (location, query) = location::parse(input, scheme.starts_with("rediss"), &PARAMS)?;
    check_queue_name(&location.queue)?;
    let namespace = match query.get("namespace") {
        Some(ns) if ns.is_empty() => return Err("`namespace` must not be empty".to_string()),
        Some(ns) => ns.clone(),
        None => DEFAULT_NAMESPACE.to_string(),
    };
    let heartbeat_timeout_ms = match query.get("heartbeat_timeout") {
        Some(ms) => parse_timeout(ms)?,
        None => DEFAULT_HEARTBEAT_TIMEOUT_MS,
    };
    let client_names = match query.get("client_names").map(String::as_str) {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return Err(format!(
                "bad client_names `{}`: expected true or false",
                quote(other)
            ));
        }
    };
    Ok(DramatiqUri {
        location,
        namespace,
        heartbeat_timeout_ms,
        client_names,
    })
}

/// Dramatiq's own rule for queue names (`actor._queue_name_re`), and not one of the
/// derived queues: `<q>.DQ` and `<q>.XQ` are the delay and dead-letter queues of `<q>`,
/// which this provider reads through `<q>`.
fn check_queue_name(queue: &str) -> Result<(), String> {
    let mut chars = queue.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if !(first_ok && rest_ok) {
        return Err(format!(
            "bad queue `{}`: Dramatiq queue names match [a-zA-Z_][a-zA-Z0-9._-]*",
            quote(queue)
        ));
    }
    if let Some(base) = queue
        .strip_suffix(".DQ")
        .or_else(|| queue.strip_suffix(".XQ"))
    {
        return Err(format!(
            "queue `{}` is a delay or dead-letter queue; name the queue itself (`{}`)",
            quote(queue),
            quote(base)
        ));
    }
    Ok(())
}

fn parse_timeout(ms: &str) -> Result<u64, String> {
    ms.parse::<u64>()
        .ok()
        .filter(|ms| (MIN_HEARTBEAT_TIMEOUT_MS..=MAX_HEARTBEAT_TIMEOUT_MS).contains(ms))
        .ok_or_else(|| {
            format!(
                "bad heartbeat_timeout `{}`: expected milliseconds from \
                 {MIN_HEARTBEAT_TIMEOUT_MS} to {MAX_HEARTBEAT_TIMEOUT_MS}, as given to RedisBroker",
                quote(ms)
            )
        })
}

impl DramatiqUri {
    /// The canonical URI without the password; parameters at their default are left out.
    pub fn redacted(&self) -> String {
        let mut query = Vec::new();
        if self.namespace != DEFAULT_NAMESPACE {
            query.push(format!("namespace={}", encode(&self.namespace)));
        }
        if self.heartbeat_timeout_ms != DEFAULT_HEARTBEAT_TIMEOUT_MS {
            query.push(format!("heartbeat_timeout={}", self.heartbeat_timeout_ms));
        }
        if self.client_names {
            query.push("client_names=true".to_string());
        }
        self.location.redacted("redis+dramatiq", &query)
    }

    pub fn heartbeat_timeout(&self) -> Duration {
        Duration::from_millis(self.heartbeat_timeout_ms)
    }

    /// `<namespace>:<queue>`: the list of waiting message ids (the dispatch script's
    /// `queue_full_name`).
    pub fn queue_key(&self) -> String {
        format!("{}:{}", self.namespace, self.location.queue)
    }

    /// `<namespace>:<queue>.DQ`: the delay queue's list.
    pub fn delay_queue_key(&self) -> String {
        format!("{}.DQ", self.queue_key())
    }

    /// `<namespace>:__heartbeats__`: worker id -> last dispatch time (ms).
    pub fn heartbeats_key(&self) -> String {
        format!("{}:__heartbeats__", self.namespace)
    }

    /// `<namespace>:__acks__.<worker>.<queue>`: what that worker fetched and has not acked.
    pub fn acks_key(&self, worker: &str) -> String {
        format!("{}:__acks__.{worker}.{}", self.namespace, self.location.queue)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(input: &str) -> DramatiqUri {
        let scheme = input.split("://").next().unwrap_or_default();
        parse(input, scheme).unwrap_or_else(|e| panic!("{input}: {e}"))
    }

    fn refused(input: &str) -> String {
        let scheme = input.split("://").next().unwrap_or_default();
        parse(input, scheme).expect_err(input)
    }

    #[test]
    fn defaults_are_dramatiqs() {
        let uri = parsed("redis+dramatiq://redis:6379/0/default");
        assert_eq!(uri.namespace, "dramatiq");
        assert_eq!(uri.heartbeat_timeout(), Duration::from_secs(60));
        assert!(!uri.client_names);
        assert!(!uri.location.tls);
        assert_eq!(uri.redacted(), "redis+dramatiq://redis:6379/0/default");
    }

    #[test]
    fn keys_are_the_dispatch_scripts() {
        let uri = parsed("redis+dramatiq://h/2/emails?namespace=app");
        assert_eq!(uri.queue_key(), "app:emails");
        assert_eq!(uri.delay_queue_key(), "app:emails.DQ");
        assert_eq!(uri.heartbeats_key(), "app:__heartbeats__");
        assert_eq!(
            uri.acks_key("0b6e6b9c-1c1e-4d57-9b1d-2f1d6a1f8a11"),
            "app:__acks__.0b6e6b9c-1c1e-4d57-9b1d-2f1d6a1f8a11.emails"
        );
    }

    #[test]
    fn every_parameter_round_trips_without_the_password() {
        let uri = parsed(
            "rediss+dramatiq://u:s3cret@redis.example:6380/3/jobs.high?namespace=my%20ns&heartbeat_timeout=15000&client_names=true",
        );
        assert!(uri.location.tls);
        assert_eq!(uri.location.password.as_deref(), Some("s3cret"));
        assert_eq!(uri.namespace, "my ns");
        assert_eq!(uri.heartbeat_timeout_ms, 15_000);
        assert!(uri.client_names);
        let shown = uri.redacted();
        assert_eq!(
            shown,
            "rediss+dramatiq://u:***@redis.example:6380/3/jobs.high?namespace=my%20ns&heartbeat_timeout=15000&client_names=true"
        );
        assert!(!format!("{uri:?}").contains("s3cret"));
        let again = parsed(&shown);
        assert_eq!(
            (again.namespace, again.heartbeat_timeout_ms, again.client_names),
            ("my ns".to_string(), 15_000, true)
        );
    }

    #[test]
    fn bad_uris_are_refused_with_the_reason() {
        assert!(refused("redis+dramatiq://h/0/q?prefix=x").contains("prefix"));
        assert!(refused("redis+dramatiq://h/0/q?namespace=").contains("namespace"));
        assert!(refused("redis+dramatiq://h/0/q?heartbeat_timeout=60").contains("milliseconds"));
        assert!(refused("redis+dramatiq://h/0/q?heartbeat_timeout=-1").contains("heartbeat"));
        assert!(refused("redis+dramatiq://h/0/q?client_names=yes").contains("client_names"));
        assert!(refused("redis+dramatiq://h/0/9lives").contains("[a-zA-Z_]"));
        assert!(refused("redis+dramatiq://h/0/a%20b").contains("queue"));
        assert!(refused("redis+dramatiq://h/0/default.DQ").contains("`default`"));
        assert!(refused("redis+dramatiq://h/0/default.XQ").contains("dead-letter"));
        assert!(refused("redis+dramatiq://h/x/default").contains("bad db"));
        assert!(refused("redis+dramatiq://h/0").contains("<db>/<queue>"));
    }
}
