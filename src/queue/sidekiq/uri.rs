//! The Sidekiq `queueURI` grammar:
//! `redis+sidekiq://[user:pass@]host[:port]/<db>/<queue>[?namespace=<ns>]` (TLS:
//! `rediss+sidekiq://`). Port 6379 by default. `namespace` is the prefix of the
//! `redis-namespace` gem that Sidekiq up to 6.x accepts (`config.redis = {namespace: ..}`):
//! every key, `queue:<q>` and `processes` included, is then `<ns>:<key>`.

use super::super::redis::location::{self, RedisQueueRef};
use crate::queue::uri::parts::{encode, quote};

/// The query parameters a Sidekiq URI accepts; any other is refused.
const PARAMS: [&str; 1] = ["namespace"];

/// A Sidekiq queue: where Redis is, and the `redis-namespace` prefix if the install uses one.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct SidekiqUri {
    /// Server, database, queue name and credentials (its `Debug` hides the password).
    pub location: RedisQueueRef,
    /// `redis-namespace`'s prefix, without the `:` it adds.
    pub namespace: Option<String>,
}

/// Parses a `redis+sidekiq://` or `rediss+sidekiq://` URI (`scheme` in lower case).
pub(crate) fn parse(input: &str, scheme: &str) -> Result<SidekiqUri, String> {
    let (location, query) = location::parse(input, scheme.starts_with("rediss"), &PARAMS)?;
    let namespace = match query.get("namespace").map(String::as_str) {
        None => None,
        Some("") => {
            return Err(
                "`namespace` must not be empty; leave it out when Sidekiq uses no namespace"
                    .to_string(),
            );
        }
        // redis-namespace joins with `:` itself: `ns:` would look for `ns::queue:<q>`,
        // which no Sidekiq writes. Say so rather than find nothing.
        Some(ns) if ns.ends_with(':') => {
            return Err(format!(
                "`namespace` `{}` ends with `:`; give the namespace as configured in Sidekiq \
                 (redis-namespace adds the `:` itself)",
                quote(ns)
            ));
        }
        Some(ns) => Some(ns.to_string()),
    };
    Ok(SidekiqUri {
        location,
        namespace,
    })
}

impl SidekiqUri {
    /// Canonical form, password as `***`, the namespace kept.
    pub(crate) fn redacted(&self) -> String {
        let query: Vec<String> = self
            .namespace
            .iter()
            .map(|ns| format!("namespace={}", encode(ns)))
            .collect();
        self.location.redacted("redis+sidekiq", &query)
    }

    /// What every Sidekiq key of this install starts with: `<ns>:`, or nothing.
    pub(crate) fn key_prefix(&self) -> String {
        self.namespace
            .as_ref()
            .map(|ns| format!("{ns}:"))
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(input: &str) -> SidekiqUri {
        let scheme = input.split("://").next().unwrap_or_default();
        parse(input, scheme).expect(input)
    }

    fn refused(input: &str) -> String {
        let scheme = input.split("://").next().unwrap_or_default();
        parse(input, scheme).expect_err(input)
    }

    #[test]
    fn a_plain_uri_parses_with_its_defaults() {
        let uri = parsed("redis+sidekiq://redis/0/default");
        let at = &uri.location;
        assert_eq!(
            (at.tls, at.host.as_str(), at.port, at.db, at.queue.as_str()),
            (false, "redis", 6379, 0, "default")
        );
        assert_eq!(uri.namespace, None);
        assert_eq!(uri.key_prefix(), "");
        assert_eq!(uri.redacted(), "redis+sidekiq://redis:6379/0/default");
    }

    #[test]
    fn tls_credentials_and_namespace_round_trip_without_the_password() {
        let uri = parsed("rediss+sidekiq://app:s3cret@redis.internal:6380/4/mail%20ers?namespace=my%20app");
        assert!(uri.location.tls);
        assert_eq!(uri.location.queue, "mail ers");
        assert_eq!(uri.location.password.as_deref(), Some("s3cret"));
        assert_eq!(uri.namespace.as_deref(), Some("my app"));
        assert_eq!(uri.key_prefix(), "my app:");
        let shown = uri.redacted();
        assert_eq!(
            shown,
            "rediss+sidekiq://app:***@redis.internal:6380/4/mail%20ers?namespace=my%20app"
        );
        assert!(!format!("{uri:?}").contains("s3cret"));
        // The redacted form parses back to the same queue (without the secret).
        let again = parsed(&shown.replace("***", "s3cret"));
        assert_eq!(again, uri);
    }

    #[test]
    fn refusals_say_what_is_wrong() {
        assert!(refused("redis+sidekiq://h/0/q?prefix=x").contains("prefix"));
        assert!(refused("redis+sidekiq://h/0/q?namespace=").contains("must not be empty"));
        assert!(refused("redis+sidekiq://h/0/q?namespace=app%3A").contains("adds the `:`"));
        assert!(refused("redis+sidekiq://h/zero/q").contains("bad db"));
        assert!(refused("redis+sidekiq://h/0/").contains("empty"));
        assert!(refused("redis+sidekiq://h/0").contains("/<db>/<queue>"));
        assert!(refused("redis+sidekiq://h/0/q#x").contains("fragment"));
    }
}
