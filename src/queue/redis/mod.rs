//! Redis provider: plain Redis lists and Celery/kombu queues on the Redis transport.
//!
//! **Measures**
//! - `visible`: the sum of `LLEN` over the queue's priority keys, named exactly as kombu
//!   names them: step 0 is the bare queue name, step `s` is `<queue><sep><s>`, all behind
//!   the `global_keyprefix` (`prefix`). A plain list has no priority keys; an absent key
//!   counts 0, so a queue that does not exist (yet) reads as empty, never as an error:
//!   in Redis an empty list and a missing one are the same thing.
//! - `in_flight`: the entries of kombu's `unacked` hash (one per DB, shared by all
//!   queues; `<prefix>unacked`) that belong to this queue. Each value is the JSON
//!   `[message, exchange, routing_key]`; exchange `""` routes to the queue named by the
//!   routing key, any other exchange is resolved through its binding set
//!   `<prefix>_kombu.binding.<exchange>`, whose members are
//!   `<routing_key><sep><pattern><sep><queue>` (a non-empty pattern marks a topic binding,
//!   matched the way kombu does: `*` one word, `#` anything), together with newer
//!   kombu's `<prefix>_kombu.binding_permanent.<exchange>` (same members, for queues
//!   without expiry). No `unacked` hash means 0.
//!
//! **Cannot see**: consumers (Redis does not know them), tasks a Celery worker is running
//! with the default early ack (they left Redis when the worker took them; set
//! `task_acks_late=True` to keep them in `unacked`), and idleness (left to the registry's
//! window). Messages of a fanout exchange are attributed only when their routing key
//! matches the binding; a message routed to several queues through one topic exchange
//! counts for each of them (kombu's `unacked` format cannot tell the copies apart).
//!
//! **Cost per poll**: one pipelined round trip of `LLEN` per priority key plus
//! `HKEYS <prefix>unacked`. `HKEYS` returns only the delivery tags (~40 bytes each, for
//! every queue of the DB; bounded by workers x prefetch), never the payloads. The
//! tag -> queue attribution is cached, so only tags not seen before cost a second round
//! trip (`HMGET` in chunks), and a binding set is re-read at most every 30 s per
//! exchange. `HGETALL` would move every payload every second, which is what this avoids.
//!
//! `rediss://` verifies the server against the system's root certificates
//! (`SSL_CERT_FILE` / `SSL_CERT_DIR` point elsewhere).
//!
//! Queues on the same server, database and identity share one multiplexed connection
//! (`pool`), so a controller with thousands of Redis WPAs holds a handful of sockets.
//! Reconnection after a Redis restart is the `ConnectionManager`'s job: a failed request
//! makes it reconnect in the background and the next poll of every queue on it uses the
//! new connection.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ::redis::Value;
use ::redis::aio::ConnectionManager;
use async_trait::async_trait;

pub mod location;
pub mod pool;
pub mod uri;

pub(crate) use self::location::{client, map_error};
use self::location::{has_code, shared_connection};
use self::pool::Slot;
use super::events::{EventSource, RedisEvents};
use super::provider::{ConnectFuture, ProviderSpec, ProviderUri, boxed};
use super::{Credentials, ProviderOptions, QueueError, QueueMetrics, QueueProvider};
use uri::RedisUri;

const UNACKED_KEY: &str = "unacked";
const BINDING_KEY_PREFIX: &str = "_kombu.binding.";
const PERMANENT_KEY_PREFIX: &str = "_kombu.binding_permanent.";
/// Bindings change when workers declare queues, which is rare: re-read them this often.
const BINDING_REFRESH: Duration = Duration::from_secs(30);
/// Delivery tags per `HMGET`, to keep each reply bounded.
const HMGET_CHUNK: usize = 500;

/// Polls one Redis list (or kombu queue); see the module documentation.
pub struct RedisProvider {
    label: String,
    queue: String,
    separator: String,
    /// Keeps the shared connection in the pool while this queue uses it.
    _connection: Arc<Slot>,
    /// A handle on the connection shared by every queue of this server, DB and identity.
    conn: ConnectionManager,
    list_keys: Vec<String>,
    unacked_key: String,
    binding_key_prefix: String,
    permanent_key_prefix: String,
    /// Delivery tag -> whether the `unacked` entry belongs to this queue.
    attribution: HashMap<Vec<u8>, bool>,
    /// Exchange -> (when read, its bindings).
    bindings: HashMap<String, (Instant, Vec<Binding>)>,
}

/// `(exchange, routing_key)` of an `unacked` entry; `None` when unreadable.
type Route = Option<(String, String)>;

#[derive(Debug, Clone, PartialEq)]
struct Binding {
    routing_key: String,
    pattern: String,
    queue: String,
}

impl RedisProvider {
    /// Connects to the Redis server of `uri`. Credentials from `creds` (the WPA's Secret)
    /// take precedence over the URI's userinfo, field by field.
    pub async fn connect(
        uri: &RedisUri,
        creds: &Credentials,
        opts: &ProviderOptions,
    ) -> Result<Self, QueueError> {
        let label = uri.redacted();
        let key = uri.location().connection_key(creds);
        let (connection, conn) = shared_connection(key, &label, opts).await?;
        let list_keys = uri
            .priority_steps
            .iter()
            .map(|&step| priority_key(&uri.prefix, &uri.queue, &uri.separator, step))
            .collect();
        Ok(Self {
            _connection: connection,
            queue: uri.queue.clone(),
            separator: uri.separator.clone(),
            conn,
            list_keys,
            unacked_key: format!("{}{UNACKED_KEY}", uri.prefix),
            binding_key_prefix: format!("{}{BINDING_KEY_PREFIX}", uri.prefix),
            permanent_key_prefix: format!("{}{PERMANENT_KEY_PREFIX}", uri.prefix),
            attribution: HashMap::new(),
            bindings: HashMap::new(),
            label,
        })
    }

    /// The Redis keys whose lengths make up the backlog, in priority-step order.
    pub fn list_keys(&self) -> &[String] {
        &self.list_keys
    }

    async fn query<T: ::redis::FromRedisValue>(
        &mut self,
        pipe: &::redis::Pipeline,
    ) -> Result<T, QueueError> {
        match pipe.query_async::<T>(&mut self.conn).await {
            Ok(v) => Ok(v),
            Err(e) if has_code(&e, &["WRONGTYPE"]) => Err(self.explain_wrong_type().await),
            Err(e) => Err(map_error(&self.label, &e)),
        }
    }

    /// Names the key that holds the wrong type (only run after a WRONGTYPE error).
    async fn explain_wrong_type(&mut self) -> QueueError {
        let mut pipe = ::redis::pipe();
        for key in &self.list_keys {
            pipe.cmd("TYPE").arg(key);
        }
        pipe.cmd("TYPE").arg(&self.unacked_key);
        let detail = match pipe.query_async::<Vec<String>>(&mut self.conn).await {
            Ok(types) => {
                let expected = self
                    .list_keys
                    .iter()
                    .map(|k| (k, "list"))
                    .chain(std::iter::once((&self.unacked_key, "hash")));
                let wrong: Vec<String> = expected
                    .zip(types)
                    .filter(|((_, want), got)| got != "none" && got != want)
                    .map(|((key, want), got)| format!("key {key:?} is a {got}, not a {want}"))
                    .collect();
                if wrong.is_empty() {
                    "a key changed type during the poll".to_string()
                } else {
                    wrong.join("; ")
                }
            }
            Err(e) => format!("a key of this queue has the wrong type ({e})"),
        };
        QueueError::BadResponse {
            queue: self.label.clone(),
            detail,
        }
    }

    /// Counts this queue's entries among the current `unacked` tags, reading only the
    /// entries not attributed before.
    async fn count_in_flight(&mut self, tags: Vec<Vec<u8>>) -> Result<u64, QueueError> {
        let current: HashSet<&[u8]> = tags.iter().map(Vec::as_slice).collect();
        self.attribution
            .retain(|tag, _| current.contains(tag.as_slice()));
        let new: Vec<&Vec<u8>> = tags
            .iter()
            .filter(|t| !self.attribution.contains_key(t.as_slice()))
            .collect();
        if !new.is_empty() {
            let routes = self.read_routes(&new).await?;
            self.refresh_bindings(&routes).await?;
            for (tag, route) in routes {
                let ours = match route {
                    Some((exchange, routing_key)) => self.belongs(&exchange, &routing_key),
                    None => false,
                };
                self.attribution.insert(tag, ours);
            }
        }
        Ok(self.attribution.values().filter(|ours| **ours).count() as u64)
    }

    /// Fetches `[_, exchange, routing_key]` of the given `unacked` entries. Entries acked
    /// meanwhile are left out; unreadable ones map to `None` (counted for no queue).
    async fn read_routes(
        &mut self,
        tags: &[&Vec<u8>],
    ) -> Result<Vec<(Vec<u8>, Route)>, QueueError> {
        let mut pipe = ::redis::pipe();
        for chunk in tags.chunks(HMGET_CHUNK) {
            let cmd = pipe.cmd("HMGET").arg(&self.unacked_key);
            for tag in chunk {
                cmd.arg(tag.as_slice());
            }
        }
        let replies: Vec<Vec<Option<Vec<u8>>>> = self.query(&pipe).await?;
        let mut routes = Vec::with_capacity(tags.len());
        let mut unreadable = 0usize;
        for (tag, value) in tags.iter().zip(replies.into_iter().flatten()) {
            let Some(value) = value else { continue };
            let route = parse_unacked(&value);
            if route.is_none() {
                unreadable += 1;
            }
            routes.push(((*tag).clone(), route));
        }
        if unreadable > 0 {
            tracing::warn!(
                queue = %self.label,
                entries = unreadable,
                "unacked entries are not kombu's [message, exchange, routing_key]; not counted"
            );
        }
        Ok(routes)
    }

    /// Reads the binding sets of the exchanges in `routes` not read recently.
    async fn refresh_bindings(&mut self, routes: &[(Vec<u8>, Route)]) -> Result<(), QueueError> {
        let now = Instant::now();
        let stale: Vec<String> = routes
            .iter()
            .filter_map(|(_, r)| r.as_ref().map(|(exchange, _)| exchange))
            .filter(|exchange| !exchange.is_empty())
            .filter(|exchange| {
                self.bindings
                    .get(exchange.as_str())
                    .is_none_or(|(read, _)| now.duration_since(*read) >= BINDING_REFRESH)
            })
            .cloned()
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        if stale.is_empty() {
            return Ok(());
        }
        let mut pipe = ::redis::pipe();
        for exchange in &stale {
            // kombu >= 5.6 also keeps `_kombu.binding_permanent.<exchange>` (bindings of
            // queues without expiry); the union still resolves if the table was swept.
            pipe.sunion(&[
                format!("{}{exchange}", self.binding_key_prefix),
                format!("{}{exchange}", self.permanent_key_prefix),
            ]);
        }
        let sets: Vec<Vec<Vec<u8>>> = self.query(&pipe).await?;
        for (exchange, members) in stale.into_iter().zip(sets) {
            let table = members
                .iter()
                .filter_map(|m| parse_binding(&String::from_utf8_lossy(m), &self.separator))
                .collect();
            self.bindings.insert(exchange, (now, table));
        }
        Ok(())
    }

    /// Whether a message published to `exchange` with `routing_key` went to this queue.
    fn belongs(&self, exchange: &str, routing_key: &str) -> bool {
        if exchange.is_empty() {
            return routing_key == self.queue;
        }
        self.bindings.get(exchange).is_some_and(|(_, table)| {
            table.iter().any(|b| {
                b.queue == self.queue
                    && if b.pattern.is_empty() {
                        b.routing_key == routing_key
                    } else {
                        topic_matches(&b.routing_key, routing_key)
                    }
            })
        })
    }
}

#[async_trait]
impl QueueProvider for RedisProvider {
    async fn poll(&mut self) -> Result<QueueMetrics, QueueError> {
        let sampled_at = jiff::Timestamp::now();
        let mut pipe = ::redis::pipe();
        for key in &self.list_keys {
            pipe.llen(key);
        }
        pipe.hkeys(&self.unacked_key);
        let mut replies: Vec<Value> = self.query(&pipe).await?;
        let tags_reply = replies
            .pop()
            .ok_or_else(|| self.bad("empty pipeline reply"))?;
        let mut visible: u64 = 0;
        for reply in replies {
            let len: u64 = ::redis::from_redis_value(reply)
                .map_err(|e| self.bad(&format!("LLEN answered {e}")))?;
            visible = visible.saturating_add(len);
        }
        let tags: Vec<Vec<u8>> = ::redis::from_redis_value(tags_reply)
            .map_err(|e| self.bad(&format!("HKEYS answered {e}")))?;
        let in_flight = self.count_in_flight(tags).await?;
        Ok(QueueMetrics {
            missing: Vec::new(),
            visible,
            in_flight: Some(in_flight),
            delayed: None,
            sent_per_minute: None,
            consumers: None,
            idle: None,
            partial: None,
            sampled_at,
            workers: None,
        })
    }
}

impl RedisProvider {
    fn bad(&self, detail: &str) -> QueueError {
        QueueError::BadResponse {
            queue: self.label.clone(),
            detail: detail.to_string(),
        }
    }
}

/// kombu's key for one priority step: step 0 is the bare queue name.
pub fn priority_key(prefix: &str, queue: &str, separator: &str, step: u32) -> String {
    if step == 0 {
        format!("{prefix}{queue}")
    } else {
        format!("{prefix}{queue}{separator}{step}")
    }
}

/// `[message, exchange, routing_key]` -> `(exchange, routing_key)`.
fn parse_unacked(value: &[u8]) -> Option<(String, String)> {
    let (_, exchange, routing_key): (serde::de::IgnoredAny, Option<String>, Option<String>) =
        serde_json::from_slice(value).ok()?;
    Some((
        exchange.unwrap_or_default(),
        routing_key.unwrap_or_default(),
    ))
}

/// `<routing_key><sep><pattern><sep><queue>`, as kombu's `_queue_bind` writes it.
fn parse_binding(member: &str, separator: &str) -> Option<Binding> {
    let mut parts = member.split(separator);
    let binding = Binding {
        routing_key: parts.next()?.to_string(),
        pattern: parts.next()?.to_string(),
        queue: parts.next()?.to_string(),
    };
    if parts.next().is_some() {
        return None;
    }
    Some(binding)
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Token<'a> {
    Literal(&'a str),
    /// `*`: one or more characters other than `.`.
    Word,
    /// `#`: any characters, dots included, possibly none.
    Any,
}

/// kombu's topic matching: the binding key's words joined by literal dots, `*` = one
/// word, `#` = anything (kombu compiles them to `[^.]+` and `.*?`).
fn topic_matches(binding_key: &str, routing_key: &str) -> bool {
    let mut tokens = Vec::new();
    for (i, word) in binding_key.split('.').enumerate() {
        if i > 0 {
            tokens.push(Token::Literal("."));
        }
        tokens.push(match word {
            "*" => Token::Word,
            "#" => Token::Any,
            w => Token::Literal(w),
        });
    }
    // Memo of failed (token, position) pairs keeps `#` chains polynomial.
    let mut failed = HashSet::new();
    match_from(&tokens, 0, routing_key, 0, &mut failed)
}

fn match_from(
    tokens: &[Token<'_>],
    t: usize,
    s: &str,
    pos: usize,
    failed: &mut HashSet<(usize, usize)>,
) -> bool {
    if failed.contains(&(t, pos)) {
        return false;
    }
    let rest = &s[pos..];
    let matched = match tokens.get(t) {
        None => rest.is_empty(),
        Some(Token::Literal(l)) => {
            rest.starts_with(l) && match_from(tokens, t + 1, s, pos + l.len(), failed)
        }
        Some(Token::Word) => {
            let word_end = rest.find('.').unwrap_or(rest.len());
            (1..=word_end)
                .filter(|&i| rest.is_char_boundary(i))
                .any(|i| match_from(tokens, t + 1, s, pos + i, failed))
        }
        Some(Token::Any) => (0..=rest.len())
            .filter(|&i| rest.is_char_boundary(i))
            .any(|i| match_from(tokens, t + 1, s, pos + i, failed)),
    };
    if !matched {
        failed.insert((t, pos));
    }
    matched
}

impl ProviderUri for RedisUri {
    const SPEC: ProviderSpec = ProviderSpec {
        name: "redis",
        aliases: &["celery"],
        schemes: &["redis", "rediss"],
        default_interval: Duration::from_secs(1),
        interval_flag: "--redis-poll-interval",
        example: "redis://redis:6379/0/celery",
    };

    fn parse(input: &str, scheme: &str) -> Result<Self, String> {
        uri::parse(input, scheme)
    }

    fn redacted(&self) -> String {
        RedisUri::redacted(self)
    }

    /// Every Redis queue: a `redis://` URI cannot tell a Celery queue from a plain list (for
    /// a plain list the listener simply never hears anything).
    fn celery_events(&self, creds: &Credentials) -> Option<EventSource> {
        // The same server and identity the queue is polled with.
        let key = self.location().connection_key(creds);
        Some(EventSource::Redis(RedisEvents {
            tls: key.tls,
            host: key.host,
            port: key.port,
            db: key.db,
            prefix: self.prefix.clone(),
            username: key.username,
            password: key.password,
        }))
    }

    fn connect<'a>(
        &'a self,
        creds: &'a Credentials,
        opts: &'a ProviderOptions,
    ) -> ConnectFuture<'a> {
        boxed(RedisProvider::connect(self, creds, opts))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ::redis::{ErrorKind, RedisError};

    #[test]
    fn priority_keys_follow_kombu() {
        assert_eq!(priority_key("", "celery", "\x06\x16", 0), "celery");
        assert_eq!(priority_key("", "celery", "\x06\x16", 3), "celery\x06\x163");
        assert_eq!(priority_key("app:", "q", ":", 9), "app:q:9");
        assert_eq!(priority_key("app:", "q", ":", 0), "app:q");
    }

    #[test]
    fn unacked_values() {
        assert_eq!(
            parse_unacked(br#"[{"body": "x", "properties": {}}, "celery", "celery"]"#),
            Some(("celery".to_string(), "celery".to_string()))
        );
        assert_eq!(
            parse_unacked(br#"[{}, "", "q"]"#),
            Some((String::new(), "q".to_string()))
        );
        assert_eq!(
            parse_unacked(br#"[{}, null, "q"]"#),
            Some((String::new(), "q".to_string()))
        );
        assert_eq!(parse_unacked(b"not json"), None);
        assert_eq!(parse_unacked(br#"[{}, "e"]"#), None);
        assert_eq!(parse_unacked(br#"[{}, "e", "q", 4]"#), None);
        assert_eq!(parse_unacked(br#"{"a": 1}"#), None);
        assert_eq!(parse_unacked(br#"[{}, 5, "q"]"#), None);
    }

    #[test]
    fn binding_members() {
        assert_eq!(
            parse_binding("celery\x06\x16\x06\x16celery", "\x06\x16"),
            Some(Binding {
                routing_key: "celery".into(),
                pattern: String::new(),
                queue: "celery".into()
            })
        );
        assert_eq!(
            parse_binding("a.*\x06\x16^a\\.[^\\.]+$\x06\x16q", "\x06\x16").map(|b| b.queue),
            Some("q".to_string())
        );
        assert_eq!(parse_binding("only-two\x06\x16parts", "\x06\x16"), None);
        assert_eq!(parse_binding("a:b:c:d", ":"), None);
    }

    #[test]
    fn topic_matching_like_kombu() {
        assert!(topic_matches("a.b", "a.b"));
        assert!(!topic_matches("a.b", "a.c"));
        assert!(topic_matches("a.*", "a.b"));
        assert!(!topic_matches("a.*", "a.b.c"));
        assert!(!topic_matches("a.*", "a."));
        assert!(topic_matches("a.#", "a.b.c"));
        assert!(topic_matches("a.#", "a."));
        assert!(!topic_matches("a.#", "a"));
        assert!(topic_matches("#", ""));
        assert!(topic_matches("#.z", "x.y.z"));
        assert!(topic_matches("*.é.#", "ü.é.x"));
        let many = vec!["#"; 40].join(".");
        assert!(!topic_matches(&many, "abc"));
    }

    #[test]
    fn error_mapping() {
        let refused = RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert!(matches!(
            map_error("q", &refused),
            QueueError::Unavailable { .. }
        ));
        let auth = RedisError::from((ErrorKind::AuthenticationFailed, "bad"));
        assert!(matches!(map_error("q", &auth), QueueError::Denied { .. }));
        let config = RedisError::from((ErrorKind::InvalidClientConfig, "tls"));
        assert!(matches!(map_error("q", &config), QueueError::Config(_)));
    }
}
