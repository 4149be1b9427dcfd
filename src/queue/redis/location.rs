//! What every provider on Redis shares: the `<scheme>://[user:pass@]host[:port]/<db>/<queue>`
//! part of its `queueURI`, and the pooled connection it polls on.
//!
//! The job frameworks on Redis (Sidekiq, RQ, BullMQ, Dramatiq) parse their URIs with
//! [`parse`] and add their own query parameters; they connect with [`RedisQueueRef::connect`]
//! and so share one connection per server, database and identity with every other queue on
//! it, Celery's included.

use std::collections::HashMap;
use std::sync::Arc;

use std::time::Duration;

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::{
    Client, ConnectionAddr, ErrorKind, IntoConnectionInfo, RedisConnectionInfo, RedisError,
};

use super::pool::{ConnectionKey, Slot};
use crate::queue::uri::parts::{
    encode, host_of, parse_url, port_of, query_params, quote, reject_fragment, render_host,
    render_userinfo, segments, userinfo,
};
use crate::queue::uri::redacted as shown;
use crate::queue::{Credentials, ProviderOptions, QueueError};

const DEFAULT_REDIS_PORT: u16 = 6379;

/// A queue on a Redis server: where the server is, which database, which queue, and the
/// query parameters the provider allowed (percent-decoded).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct RedisQueueRef {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    pub db: i64,
    pub queue: String,
    pub username: Option<String>,
    pub password: Option<String>,
}

impl std::fmt::Debug for RedisQueueRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisQueueRef")
            .field("tls", &self.tls)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("db", &self.db)
            .field("queue", &self.queue)
            .field("username", &self.username)
            .field("password", &shown(&self.password))
            .finish()
    }
}

/// Parses `<scheme>://[user:pass@]host[:port]/<db>/<queue>[?<params>]`, accepting only the
/// query parameters named in `params` (any other is refused with the list). Port 6379 by
/// default. Returns the location and the given parameters.
pub(crate) fn parse(
    input: &str,
    tls: bool,
    params: &[&str],
) -> Result<(RedisQueueRef, HashMap<String, String>), String> {
    let url = parse_url(input)?;
    reject_fragment(&url)?;
    let host = host_of(&url)?;
    let port = port_of(&url, DEFAULT_REDIS_PORT)?;
    let (username, password) = userinfo(&url)?;
    let query = query_params(&url, params)?;
    let [db, queue] = segments::<2>(&url, "/<db>/<queue>")?;
    let db = parse_db(&db)?;
    if queue.is_empty() {
        return Err("the queue segment is empty; expected /<db>/<queue>".to_string());
    }
    let location = RedisQueueRef {
        tls,
        host,
        port,
        db,
        queue,
        username,
        password,
    };
    Ok((location, query))
}

/// A database number: `0` to `i32::MAX`.
pub(crate) fn parse_db(db: &str) -> Result<i64, String> {
    db.parse::<u32>()
        .ok()
        .filter(|d| i64::from(*d) <= i64::from(i32::MAX))
        .map(i64::from)
        .ok_or_else(|| format!("bad db `{}`: expected a database number >= 0", quote(db)))
}

impl RedisQueueRef {
    /// `<scheme>://[user:***@]host:port/<db>/<queue>`, then `?` and `query` (already
    /// encoded `name=value` pairs) when there are any. `scheme` is the plain one, e.g.
    /// `redis+sidekiq`; TLS turns its `redis` into `rediss`.
    pub(crate) fn redacted(&self, scheme: &str, query: &[String]) -> String {
        let scheme = match (self.tls, scheme.strip_prefix("redis")) {
            (true, Some(rest)) if !rest.starts_with('s') => format!("rediss{rest}"),
            _ => scheme.to_string(),
        };
        let mut s = format!(
            "{scheme}://{}{}:{}/{}/{}",
            render_userinfo(&self.username, &self.password),
            render_host(&self.host),
            self.port,
            self.db,
            encode(&self.queue)
        );
        if !query.is_empty() {
            s.push('?');
            s.push_str(&query.join("&"));
        }
        s
    }

    /// The pooled connection's key: credentials from `creds` (the WPA's Secret) take
    /// precedence over the URI's userinfo, field by field.
    pub(crate) fn connection_key(&self, creds: &Credentials) -> ConnectionKey {
        ConnectionKey {
            tls: self.tls,
            host: self.host.clone(),
            port: self.port,
            db: self.db,
            username: creds.username.as_ref().or(self.username.as_ref()).cloned(),
            password: creds.password.as_ref().or(self.password.as_ref()).cloned(),
        }
    }

    /// The connection shared by every queue of this server, database and identity, opened
    /// if none is open. `label` names the queue in errors (redacted: no password). Hold
    /// the returned slot as long as the connection is used.
    pub(crate) async fn connect(
        &self,
        creds: &Credentials,
        opts: &ProviderOptions,
        label: &str,
    ) -> Result<(Arc<Slot>, ConnectionManager), QueueError> {
        shared_connection(self.connection_key(creds), label, opts).await
    }
}

/// The pooled connection for `key` (see [`RedisQueueRef::connect`]).
pub(crate) async fn shared_connection(
    key: ConnectionKey,
    label: &str,
    opts: &ProviderOptions,
) -> Result<(Arc<Slot>, ConnectionManager), QueueError> {
    let client = client(&key, label)?;
    let timeout = opts.request_timeout;
    let label = label.to_string();
    // Boxed: every queue waiting for the shared connection would otherwise hold room for
    // the connecting future, which only the first one runs.
    opts.redis_connections
        .get(key, || Box::pin(open_connection(client, timeout, label)))
        .await
}

/// A client for the server, database and identity of `key` (TLS verified against the
/// system's roots). `label` names the server in errors; it must not hold the password.
pub(crate) fn client(key: &ConnectionKey, label: &str) -> Result<Client, QueueError> {
    let addr = if key.tls {
        // redis-rs builds its rustls config from the process-wide crypto provider;
        // make sure there is one (main installs the same provider at startup).
        if rustls::crypto::CryptoProvider::get_default().is_none() {
            let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        }
        let host = if key.host.contains(':') {
            format!("[{}]", key.host)
        } else {
            key.host.clone()
        };
        format!("rediss://{host}:{}", key.port).into_connection_info()
    } else {
        ConnectionAddr::Tcp(key.host.clone(), key.port).into_connection_info()
    }
    .map_err(|e| map_error(label, &e))?;
    let mut settings = RedisConnectionInfo::default().set_db(key.db);
    if let Some(user) = &key.username {
        settings = settings.set_username(user);
    }
    if let Some(password) = &key.password {
        settings = settings.set_password(password);
    }
    Client::open(addr.set_redis_settings(settings)).map_err(|e| map_error(label, &e))
}

/// Opens a connection manager, bounded in time.
async fn open_connection(
    client: Client,
    timeout: Duration,
    label: String,
) -> Result<ConnectionManager, QueueError> {
    // Few, quick reconnect attempts: the registry owns the backoff between polls.
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(timeout))
        .set_number_of_retries(1)
        .set_min_delay(Duration::from_millis(50))
        .set_max_delay(Duration::from_secs(1));
    tokio::time::timeout(
        timeout.saturating_mul(2),
        ConnectionManager::new_with_config(client, config),
    )
    .await
    .map_err(|_| QueueError::Unavailable {
        queue: label.clone(),
        detail: format!("no connection within {:?}", timeout * 2),
    })?
    .map_err(|e| map_error(&label, &e))
}

/// Whether the server answered one of `codes`, directly or for any command of a
/// pipeline (a pipeline error carries one server error per failed command).
pub(crate) fn has_code(e: &RedisError, codes: &[&str]) -> bool {
    if e.code().is_some_and(|c| codes.contains(&c)) {
        return true;
    }
    e.clone()
        .into_server_errors()
        .is_some_and(|items| items.iter().any(|(_, err)| codes.contains(&err.code())))
}

/// Maps a Redis error to the provider contract's error kinds.
pub(crate) fn map_error(label: &str, e: &RedisError) -> QueueError {
    let queue = label.to_string();
    let detail = e.to_string();
    if e.kind() == ErrorKind::AuthenticationFailed
        || has_code(e, &["NOAUTH", "WRONGPASS", "NOPERM"])
    {
        return QueueError::Denied { queue, detail };
    }
    if has_code(e, &["WRONGTYPE"]) {
        return QueueError::BadResponse { queue, detail };
    }
    if e.kind() == ErrorKind::InvalidClientConfig {
        return QueueError::Config(format!("{label}: {detail}"));
    }
    if matches!(e.kind(), ErrorKind::Parse | ErrorKind::UnexpectedReturnType) {
        return QueueError::BadResponse { queue, detail };
    }
    // I/O, refused, timeouts, dropped connections, LOADING, MASTERDOWN...: transient.
    QueueError::Unavailable { queue, detail }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_location_parses_and_prints_without_its_password() {
        let (at, query) = parse(
            "redis+rq://user:secret@redis.example:6380/3/high%20prio?x=1",
            false,
            &["x"],
        )
        .expect("parses");
        assert_eq!(
            (at.host.as_str(), at.port, at.db, at.queue.as_str()),
            ("redis.example", 6380, 3, "high prio")
        );
        assert_eq!(query.get("x").map(String::as_str), Some("1"));
        assert_eq!(
            at.redacted("redis+rq", &["x=1".to_string()]),
            "redis+rq://user:***@redis.example:6380/3/high%20prio?x=1"
        );
        let tls = RedisQueueRef { tls: true, ..at };
        assert_eq!(
            tls.redacted("redis+rq", &[]),
            "rediss+rq://user:***@redis.example:6380/3/high%20prio"
        );
        assert!(!format!("{tls:?}").contains("secret"));
    }

    #[test]
    fn bad_locations_say_what_is_wrong() {
        let refused = |input: &str| parse(input, false, &[]).expect_err(input);
        assert!(refused("redis+rq://h/x/q").contains("bad db"));
        assert!(refused("redis+rq://h/0/").contains("empty"));
        assert!(refused("redis+rq://h/0/q?nope=1").contains("nope"));
        assert_eq!(
            parse("redis+rq://h/0/q", false, &[]).expect("parses").0.port,
            6379
        );
    }

    #[test]
    fn secrets_override_the_userinfo_field_by_field() {
        let (at, _) = parse("redis+rq://u:p@h/0/q", false, &[]).expect("parses");
        let key = at.connection_key(&Credentials {
            password: Some("from-secret".into()),
            ..Credentials::default()
        });
        assert_eq!(key.username.as_deref(), Some("u"));
        assert_eq!(key.password.as_deref(), Some("from-secret"));
    }
}
