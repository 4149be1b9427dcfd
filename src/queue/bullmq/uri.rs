//! The BullMQ `queueURI` grammar:
//! `redis[s]+bullmq://[user:pass@]host[:port]/<db>/<queue>[?prefix=<prefix>]`; port 6379 and
//! prefix `bull` (BullMQ's default `prefix` option) by default.

use crate::queue::redis::location::{self, RedisQueueRef};
use crate::queue::uri::parts::encode;

/// BullMQ's default key prefix (`QueueOptions.prefix`).
pub const DEFAULT_PREFIX: &str = "bull";

/// A BullMQ queue: where its Redis is, and the prefix its keys live under.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct BullmqUri {
    /// Server, database, queue name and userinfo (its `Debug` hides the password).
    pub location: RedisQueueRef,
    /// The `prefix` option the app gives its `Queue` and `Worker`s; keys are
    /// `<prefix>:<queue>:<type>`.
    pub prefix: String,
}

/// Parses a `redis+bullmq://` or `rediss+bullmq://` queue URI (`scheme` in lower case).
pub(crate) fn parse(input: &str, scheme: &str) -> Result<BullmqUri, String> {
    let tls = scheme.starts_with("rediss");
    let (location, query) = location::parse(input, tls, &["prefix"])?;
    // BullMQ refuses such names itself (`Queue name cannot contain :`): a URI naming one
    // can only be a mistake, and its keys would be ambiguous.
    if location.queue.contains(':') {
        return Err(format!(
            "BullMQ queue names cannot contain `:` (got {:?})",
            location.queue
        ));
    }
    let prefix = match query.get("prefix") {
        Some(p) if p.is_empty() => {
            return Err("`prefix` must not be empty (BullMQ's default is `bull`)".to_string());
        }
        Some(p) => p.clone(),
        None => DEFAULT_PREFIX.to_string(),
    };
    Ok(BullmqUri { location, prefix })
}

impl BullmqUri {
    /// Canonical form with the password as `***`; the prefix only when not the default.
    pub fn redacted(&self) -> String {
        let query = if self.prefix == DEFAULT_PREFIX {
            Vec::new()
        } else {
            vec![format!("prefix={}", encode(&self.prefix))]
        };
        self.location.redacted("redis+bullmq", &query)
    }

    /// `<prefix>:<queue>:<kind>`, as BullMQ's `QueueKeys.toKey`.
    pub fn key(&self, kind: &str) -> String {
        format!("{}:{}:{kind}", self.prefix, self.location.queue)
    }

    /// The hash of job `id`: `<prefix>:<queue>:<id>`.
    pub fn job_key(&self, id: &str) -> String {
        self.key(id)
    }

    /// The `CLIENT SETNAME` of this queue's workers' blocking connections:
    /// `<prefix>:<base64(queue)>`, then `:w:<name>` when the Worker has a `name`
    /// (BullMQ's `createBlockingConnection`; `Buffer.toString('base64')` is standard
    /// base64 with padding).
    pub fn worker_connection_name(&self) -> String {
        use base64::Engine as _;
        let encoded = base64::engine::general_purpose::STANDARD.encode(&self.location.queue);
        format!("{}:{encoded}", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(input: &str) -> BullmqUri {
        let scheme = input.split("://").next().unwrap_or_default();
        parse(input, scheme).unwrap_or_else(|e| panic!("{input}: {e}"))
    }

    #[test]
    fn defaults_and_round_trip() {
        let uri = parsed("redis+bullmq://redis:6379/0/emails");
        assert_eq!(uri.prefix, "bull");
        assert_eq!(uri.location.db, 0);
        assert_eq!(uri.location.queue, "emails");
        assert!(!uri.location.tls);
        assert_eq!(uri.redacted(), "redis+bullmq://redis:6379/0/emails");
        assert_eq!(uri.key("wait"), "bull:emails:wait");
        assert_eq!(uri.job_key("42"), "bull:emails:42");
        assert_eq!(parsed(&uri.redacted()), uri);
    }

    #[test]
    fn prefix_tls_and_credentials() {
        let uri = parsed("rediss+bullmq://app:s3cret@redis.example/3/video%20jobs?prefix=my%3Aapp");
        assert!(uri.location.tls);
        assert_eq!(uri.location.port, 6379);
        assert_eq!(uri.prefix, "my:app");
        assert_eq!(uri.key("active"), "my:app:video jobs:active");
        let shown = uri.redacted();
        assert_eq!(
            shown,
            "rediss+bullmq://app:***@redis.example:6379/3/video%20jobs?prefix=my%3Aapp"
        );
        assert!(!shown.contains("s3cret"));
        assert!(!format!("{uri:?}").contains("s3cret"));
        // An explicit default prefix is the same queue, printed without it.
        assert_eq!(
            parsed("redis+bullmq://h/0/q?prefix=bull"),
            parsed("redis+bullmq://h/0/q")
        );
    }

    #[test]
    fn refusals_say_why() {
        let refused = |input: &str| parse(input, "redis+bullmq").expect_err(input);
        assert!(refused("redis+bullmq://h/0/q?queue=x").contains("queue"));
        assert!(refused("redis+bullmq://h/0/q?prefix=").contains("prefix"));
        assert!(refused("redis+bullmq://h/0/a%3Ab").contains("cannot contain"));
        assert!(refused("redis+bullmq://h/x/q").contains("bad db"));
        assert!(refused("redis+bullmq://h/0/").contains("empty"));
        assert!(refused("redis+bullmq://h/0").contains("<db>/<queue>"));
    }

    #[test]
    fn worker_connection_names_are_base64_of_the_queue() {
        // Buffer.from('emails').toString('base64') === 'ZW1haWxz'
        assert_eq!(
            parsed("redis+bullmq://h/0/emails").worker_connection_name(),
            "bull:ZW1haWxz"
        );
        // Padding is kept, and UTF-8 bytes are encoded as Node encodes them:
        // Buffer.from('é').toString('base64') === 'w6k='
        assert_eq!(
            parsed("redis+bullmq://h/0/%C3%A9?prefix=p").worker_connection_name(),
            "p:w6k="
        );
    }
}
