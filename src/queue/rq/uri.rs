//! The RQ `queueURI` grammar:
//! `redis+rq://[user:pass@]host[:port]/<db>/<queue>[?prefix=<prefix>]` (`rediss+rq://` for
//! TLS); port 6379 by default.
//!
//! `prefix` is RQ's key prefix: RQ >= 3.0 reads it from the `RQ_KEY_PREFIX` environment
//! variable of the process that imports `rq` (default `rq`), so a deployment that sets it
//! must say so here or every key would be looked up under the wrong name.

use std::collections::HashMap;

use crate::queue::redis::location::{self, RedisQueueRef};
use crate::queue::uri::parts::{encode, quote};

/// RQ's key prefix when `RQ_KEY_PREFIX` is not set.
pub const DEFAULT_PREFIX: &str = "rq";

/// `redis+rq://[user:pass@]host[:port]/<db>/<queue>[?prefix=<prefix>]`
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RqUri {
    /// Server, database, queue name and credentials (its `Debug` hides the password).
    pub location: RedisQueueRef,
    /// RQ's key prefix (`RQ_KEY_PREFIX`), `rq` by default.
    pub prefix: String,
}

/// Parses a `redis+rq://` or `rediss+rq://` queue URI.
pub(crate) fn parse(input: &str, scheme: &str) -> Result<RqUri, String> {
    let (location, query) = location::parse(input, scheme == "rediss+rq", &["prefix"])?;
    let prefix = prefix_of(&query)?;
    Ok(RqUri { location, prefix })
}

fn prefix_of(query: &HashMap<String, String>) -> Result<String, String> {
    let Some(prefix) = query.get("prefix") else {
        return Ok(DEFAULT_PREFIX.to_string());
    };
    // The same rule RQ enforces on RQ_KEY_PREFIX (rq/defaults.py): a prefix RQ would refuse
    // to start with cannot name any queue's keys.
    let allowed = |c: char| c.is_ascii_alphanumeric() || "_.:{}-".contains(c);
    if prefix.is_empty() || !prefix.chars().all(allowed) {
        return Err(format!(
            "bad prefix `{}`: RQ allows only letters, digits and _ . : - {{ }} in RQ_KEY_PREFIX",
            quote(prefix)
        ));
    }
    Ok(prefix.clone())
}

impl RqUri {
    /// Canonical form with the password as `***`; `prefix` only when not RQ's default.
    pub(crate) fn redacted(&self) -> String {
        let mut query = Vec::new();
        if self.prefix != DEFAULT_PREFIX {
            query.push(format!("prefix={}", encode(&self.prefix)));
        }
        self.location.redacted("redis+rq", &query)
    }

    /// The list the jobs wait in (`Queue.key`).
    pub(crate) fn queue_key(&self) -> String {
        format!("{}:queue:{}", self.prefix, self.location.queue)
    }

    /// Where a single-queue worker moves a job between taking it and starting it
    /// (`IntermediateQueue.key`: the queue's key plus `:intermediate`).
    pub(crate) fn intermediate_key(&self) -> String {
        format!("{}:intermediate", self.queue_key())
    }

    /// The started-job registry (`StartedJobRegistry.key`): a sorted set of
    /// `<job id>:<execution id>` scored by expiry time.
    pub(crate) fn started_key(&self) -> String {
        format!("{}:wip:{}", self.prefix, self.location.queue)
    }

    /// The set naming the worker keys of the workers that listen on this queue.
    pub(crate) fn workers_key(&self) -> String {
        format!("{}:workers:{}", self.prefix, self.location.queue)
    }

    /// The set of a worker's running executions, from its hash key `<prefix>:worker:<name>`
    /// (`WORKER_EXECUTIONS_KEY_TEMPLATE`).
    pub(crate) fn executions_key(worker_key: &str) -> String {
        format!("{worker_key}:executions")
    }

    /// Whether `key` (a member of the workers set) is a worker hash key under this prefix:
    /// anything else in the set is not RQ's and is not read.
    pub(crate) fn is_worker_key(&self, key: &str) -> bool {
        key.strip_prefix(&self.prefix)
            .and_then(|rest| rest.strip_prefix(":worker:"))
            .is_some_and(|name| !name.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(input: &str) -> RqUri {
        let scheme = input.split("://").next().unwrap_or_default();
        parse(input, scheme).expect(input)
    }

    #[test]
    fn parses_and_prints_without_the_password() {
        let uri = parsed("redis+rq://user:secret@redis.example:6380/3/high%20prio");
        assert_eq!(
            (
                uri.location.host.as_str(),
                uri.location.port,
                uri.location.db,
                uri.location.queue.as_str(),
                uri.prefix.as_str()
            ),
            ("redis.example", 6380, 3, "high prio", "rq")
        );
        assert!(!uri.location.tls);
        assert_eq!(
            uri.redacted(),
            "redis+rq://user:***@redis.example:6380/3/high%20prio"
        );
        assert!(!format!("{uri:?}").contains("secret"));
    }

    #[test]
    fn tls_scheme_and_default_port() {
        let uri = parsed("rediss+rq://redis/0/default");
        assert!(uri.location.tls);
        assert_eq!(uri.location.port, 6379);
        assert_eq!(uri.redacted(), "rediss+rq://redis:6379/0/default");
    }

    #[test]
    fn keys_follow_rq() {
        let uri = parsed("redis+rq://h/0/default");
        assert_eq!(uri.queue_key(), "rq:queue:default");
        assert_eq!(uri.intermediate_key(), "rq:queue:default:intermediate");
        assert_eq!(uri.started_key(), "rq:wip:default");
        assert_eq!(uri.workers_key(), "rq:workers:default");
        assert_eq!(
            RqUri::executions_key("rq:worker:abc"),
            "rq:worker:abc:executions"
        );
        assert!(uri.is_worker_key("rq:worker:abc"));
        assert!(!uri.is_worker_key("rq:worker:"));
        assert!(!uri.is_worker_key("other:worker:abc"));
    }

    #[test]
    fn a_custom_prefix_names_every_key_and_is_printed() {
        let uri = parsed("redis+rq://h/0/q?prefix=app%3Arq");
        assert_eq!(uri.prefix, "app:rq");
        assert_eq!(uri.queue_key(), "app:rq:queue:q");
        assert_eq!(uri.started_key(), "app:rq:wip:q");
        assert!(uri.is_worker_key("app:rq:worker:w1"));
        assert!(!uri.is_worker_key("rq:worker:w1"));
        assert_eq!(uri.redacted(), "redis+rq://h:6379/0/q?prefix=app%3Arq");
        // The default is not printed, so both spellings are one queue.
        assert_eq!(
            parsed("redis+rq://h/0/q?prefix=rq").redacted(),
            "redis+rq://h:6379/0/q"
        );
    }

    #[test]
    fn refusals_say_what_is_wrong() {
        let refused = |input: &str| parse(input, "redis+rq").expect_err(input);
        assert!(refused("redis+rq://h/0/q?prefix=a%20b").contains("bad prefix"));
        assert!(refused("redis+rq://h/0/q?prefix=").contains("bad prefix"));
        assert!(refused("redis+rq://h/0/q?queue=x").contains("queue"));
        assert!(refused("redis+rq://h/x/q").contains("bad db"));
        assert!(refused("redis+rq://h/0/").contains("empty"));
        assert!(refused("redis+rq://h/0").contains("<db>/<queue>"));
    }
}
