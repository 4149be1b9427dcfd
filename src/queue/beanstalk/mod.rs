//! beanstalkd provider: one `stats-tube <tube>` command per poll over a small,
//! bounded protocol client (no maintained Rust client fits). Every tube of a server is
//! polled over one shared, pipelined connection ([`pool`]).
//!
//! Measures, for one tube: `current-jobs-ready` (visible), `current-jobs-reserved`
//! (in flight), `current-jobs-delayed` (delayed), `current-watching` (consumers: the
//! connections watching the tube) and `current-waiting` (connections blocked in
//! `reserve` on it), which gives broker-side evidence of idle workers:
//! `idle = Some(true)` when nothing is ready or reserved and every watching connection
//! is waiting. practo compared `current-waiting` to the replica count instead; comparing
//! to `current-watching` needs no Kubernetes input, but counts every connection that
//! watches the tube as a worker.
//! `idle = Some(false)` when jobs are ready or reserved or a watcher is not waiting (busy
//! with a job from another tube, or between two commands); `Some(true)` when nothing is
//! ready or reserved and nothing watches the tube.
//!
//! A tube exists only while it holds jobs or a connection uses or watches it, so at zero
//! workers and no backlog `stats-tube` answers `NOT_FOUND`. That is an empty tube (as in
//! practo), not an error: visible 0, in flight 0, no consumers, idle.
//!
//! Cannot see: buried jobs (not deliverable until kicked, so not counted), a publish
//! rate (`sent_per_minute` is `None`), and which watchers are worker pods. beanstalkd
//! makes every connection watch the `default` tube, ours included; since all our tubes on
//! a server share one connection, exactly one of the watchers of `default` is ours, and
//! it is subtracted from `current-watching` for that tube. (Another process polling the
//! server, or the same server written as two different hosts, adds connections that
//! count as watchers; so does the old connection for the moment a broken one is being
//! replaced.)

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

mod connection;
pub mod pool;
pub mod uri;

use self::connection::{Failure, Reply, shorten};
use self::pool::Server;
use super::provider::{ConnectFuture, ProviderSpec, ProviderUri, boxed};
use super::{Credentials, ProviderOptions, QueueError, QueueMetrics, QueueProvider};
use uri::BeanstalkUri;

/// Longest tube name beanstalkd allows.
const MAX_TUBE: usize = 200;

/// Polls one beanstalkd tube over its server's shared connection ([`pool`]). A broken
/// connection is replaced on the next poll (and once within a poll, so a restarted server
/// is seen at once).
pub struct BeanstalkProvider {
    /// Keeps the server's connection in the pool while this provider lives.
    server: Arc<Server>,
    tube: Arc<str>,
    label: String,
    timeout: Duration,
}

impl BeanstalkProvider {
    /// Validates the tube name and makes sure the server's shared connection is open, so
    /// an unreachable server shows up at once (`Unavailable`); later polls reconnect on
    /// their own.
    pub async fn connect(uri: &BeanstalkUri, opts: &ProviderOptions) -> Result<Self, QueueError> {
        validate_tube(&uri.tube)?;
        let host = if uri.host.contains(':') && !uri.host.starts_with('[') {
            format!("[{}]", uri.host)
        } else {
            uri.host.clone()
        };
        let addr = format!("{host}:{}", uri.port);
        let provider = Self {
            server: opts.beanstalk_connections.server(&addr),
            tube: Arc::from(uri.tube.as_str()),
            label: format!("beanstalk://{addr}/{}", uri.tube),
            timeout: opts.request_timeout,
        };
        provider
            .server
            .connection(provider.timeout)
            .await
            .map_err(|failure| provider.error(failure))?;
        Ok(provider)
    }

    fn error(&self, failure: Failure) -> QueueError {
        match failure {
            Failure::Protocol(detail) => QueueError::BadResponse {
                queue: self.label.clone(),
                detail,
            },
            other => QueueError::Unavailable {
                queue: self.label.clone(),
                detail: other.to_string(),
            },
        }
    }

    /// One `stats-tube` on the shared connection. A failure says whether the connection
    /// was opened for this request (`true`) or was already open.
    async fn stats_once(&self) -> Result<Reply, (Failure, bool)> {
        let (conn, fresh) = self
            .server
            .connection(self.timeout)
            .await
            .map_err(|failure| (failure, true))?;
        conn.stats_tube(&self.tube, self.timeout)
            .await
            .map_err(|failure| (failure, fresh))
    }
}

#[async_trait]
impl QueueProvider for BeanstalkProvider {
    /// A poll connects within the request timeout and its `stats-tube` is timed by the
    /// connection's watchdog; with the one retry, it ends within four request timeouts.
    fn polls_end_in_time(&self) -> bool {
        true
    }

    async fn poll(&mut self) -> Result<QueueMetrics, QueueError> {
        let reply = match self.stats_once().await {
            Ok(reply) => reply,
            // A kept connection may have died with a restarted server: retry once on a
            // fresh one before reporting the server unavailable. Not after a timeout: a
            // server that hangs would only hang again, and the poll must end in time.
            Err((Failure::Broken(detail), false)) => {
                tracing::debug!(queue = %self.label, %detail, "beanstalkd connection broken, reconnecting");
                self.stats_once()
                    .await
                    .map_err(|(failure, _)| self.error(failure))?
            }
            Err((failure, _)) => return Err(self.error(failure)),
        };
        let body = match reply {
            Reply::Body(body) => body,
            // A tube exists only while it holds jobs or a client uses or watches it: at
            // zero workers and no backlog it is gone. That is an empty queue, not an error
            // (practo reads it the same way).
            Reply::NotFound => return Ok(missing_tube_metrics()),
        };
        let bad = |detail| QueueError::BadResponse {
            queue: self.label.clone(),
            detail,
        };
        let stats = parse_stats(&body).map_err(bad)?;
        metrics_from_stats(&stats, &*self.tube == "default").map_err(bad)
    }
}

/// Tube names: 1..=200 bytes of letters, digits and `-+/;.$_()`, not starting with `-`.
fn validate_tube(tube: &str) -> Result<(), QueueError> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || "-+/;.$_()".contains(c);
    if tube.is_empty()
        || tube.len() > MAX_TUBE
        || tube.starts_with('-')
        || !tube.chars().all(allowed)
    {
        return Err(QueueError::Config(format!(
            "invalid beanstalkd tube name {tube:?}: 1-{MAX_TUBE} characters of letters, digits and -+/;.$_() not starting with '-'"
        )));
    }
    Ok(())
}

/// The `stats-tube` fields a poll reads, borrowed from the reply's body.
#[derive(Debug, Default)]
struct TubeStats<'a> {
    ready: Option<&'a str>,
    reserved: Option<&'a str>,
    delayed: Option<&'a str>,
    watching: Option<&'a str>,
    waiting: Option<&'a str>,
}

impl<'a> TubeStats<'a> {
    fn slot(&mut self, key: &str) -> Option<&mut Option<&'a str>> {
        match key {
            "current-jobs-ready" => Some(&mut self.ready),
            "current-jobs-reserved" => Some(&mut self.reserved),
            "current-jobs-delayed" => Some(&mut self.delayed),
            "current-watching" => Some(&mut self.watching),
            "current-waiting" => Some(&mut self.waiting),
            _ => None,
        }
    }
}

/// Parses the flat YAML mapping beanstalkd sends (`---` then `key: value` lines), keeping
/// the fields a poll reads. Every tube is parsed every second: nothing is copied or
/// allocated, but every line must still be `key: value`.
fn parse_stats(body: &str) -> Result<TubeStats<'_>, String> {
    let mut lines = body.lines();
    if lines.next().map(str::trim_end) != Some("---") {
        return Err("stats body does not start with a YAML document marker".into());
    }
    let mut stats = TubeStats::default();
    for line in lines {
        if line.trim().is_empty() {
            continue;
        }
        let (key, value) = line
            .split_once(':')
            .ok_or_else(|| format!("stats line without ':': {:?}", shorten(line)))?;
        if let Some(slot) = stats.slot(key.trim()) {
            *slot = Some(value.trim().trim_matches('"'));
        }
    }
    Ok(stats)
}

fn count(value: Option<&str>, key: &str) -> Result<u64, String> {
    let value = value.ok_or_else(|| format!("stats-tube lacks {key}"))?;
    value
        .parse()
        .map_err(|_| format!("{key} is not a count: {:?}", shorten(value)))
}

/// What a tube that does not exist holds: nothing, and nobody watches it.
fn missing_tube_metrics() -> QueueMetrics {
    QueueMetrics {
        delayed: Some(0),
        ..QueueMetrics::empty()
    }
}

fn metrics_from_stats(stats: &TubeStats<'_>, default_tube: bool) -> Result<QueueMetrics, String> {
    let ready = count(stats.ready, "current-jobs-ready")?;
    let reserved = count(stats.reserved, "current-jobs-reserved")?;
    let delayed = count(stats.delayed, "current-jobs-delayed")?;
    let mut watching = count(stats.watching, "current-watching")?;
    let waiting = count(stats.waiting, "current-waiting")?;
    if default_tube {
        // Our one connection to this server watches "default" without ever reserving.
        watching = watching.saturating_sub(1);
    }
    // Nothing ready or reserved and no watcher: no worker has anything to do.
    let idle = if ready > 0 || reserved > 0 {
        Some(false)
    } else {
        Some(waiting >= watching)
    };
    Ok(QueueMetrics {
        missing: Vec::new(),
        visible: ready,
        in_flight: Some(reserved),
        delayed: Some(delayed),
        sent_per_minute: None,
        consumers: Some(watching),
        idle,
        partial: None,
        sampled_at: jiff::Timestamp::now(),
        workers: None,
    })
}

impl ProviderUri for BeanstalkUri {
    const SPEC: ProviderSpec = ProviderSpec {
        name: "beanstalkd",
        aliases: &["beanstalk"],
        schemes: &["beanstalk"],
        default_interval: Duration::from_secs(1),
        interval_flag: "--beanstalk-short-poll-interval",
        example: "beanstalk://beanstalkd:11300/emails",
    };

    fn parse(input: &str, scheme: &str) -> Result<Self, String> {
        uri::parse(input, scheme)
    }

    fn redacted(&self) -> String {
        BeanstalkUri::redacted(self)
    }

    fn connect<'a>(
        &'a self,
        _creds: &'a Credentials,
        opts: &'a ProviderOptions,
    ) -> ConnectFuture<'a> {
        boxed(BeanstalkProvider::connect(self, opts))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "---\nname: jobs\ncurrent-jobs-urgent: 0\ncurrent-jobs-ready: 3\n\
        current-jobs-reserved: 2\ncurrent-jobs-delayed: 1\ncurrent-jobs-buried: 4\n\
        total-jobs: 10\ncurrent-using: 1\ncurrent-waiting: 0\ncurrent-watching: 2\n\
        pause: 0\ncmd-delete: 0\ncmd-pause-tube: 0\npause-time-left: 0\n";

    #[test]
    fn parses_stats_tube_body() {
        let stats = parse_stats(SAMPLE).unwrap();
        let m = metrics_from_stats(&stats, false).unwrap();
        assert_eq!(
            (m.visible, m.in_flight, m.delayed, m.consumers),
            (3, Some(2), Some(1), Some(2))
        );
        assert_eq!(m.idle, Some(false));
    }

    #[test]
    fn idle_when_every_watcher_waits() {
        let body = SAMPLE
            .replace("current-jobs-ready: 3", "current-jobs-ready: 0")
            .replace("current-jobs-reserved: 2", "current-jobs-reserved: 0")
            .replace("current-waiting: 0", "current-waiting: 2");
        let m = metrics_from_stats(&parse_stats(&body).unwrap(), false).unwrap();
        assert_eq!(m.idle, Some(true));
        // On "default" our own connection is one of the watchers.
        let m = metrics_from_stats(&parse_stats(&body).unwrap(), true).unwrap();
        assert_eq!((m.consumers, m.idle), (Some(1), Some(true)));
    }

    #[test]
    fn rejects_bad_bodies() {
        assert!(parse_stats("name: x\n").is_err());
        assert!(parse_stats("---\nno colon here\n").is_err());
        let stats = parse_stats("---\ncurrent-jobs-ready: many\n").unwrap();
        assert!(metrics_from_stats(&stats, false).is_err());
        let stats = parse_stats("---\ncurrent-jobs-ready: 1\n").unwrap();
        let err = metrics_from_stats(&stats, false).unwrap_err();
        assert_eq!(err, "stats-tube lacks current-jobs-reserved");
    }

    #[test]
    fn quoted_values_and_repeated_keys() {
        let body = SAMPLE.replace("current-jobs-ready: 3", "current-jobs-ready: \"4\"");
        let body = format!("{body}current-watching: 5\n");
        let m = metrics_from_stats(&parse_stats(&body).unwrap(), false).unwrap();
        // The last of a repeated key counts, as in a YAML mapping read in order.
        assert_eq!((m.visible, m.consumers), (4, Some(5)));
    }

    #[test]
    fn validates_tube_names() {
        assert!(validate_tube("jobs-1.high(x)").is_ok());
        assert!(validate_tube("").is_err());
        assert!(validate_tube("-x").is_err());
        assert!(validate_tube("a b").is_err());
        assert!(validate_tube("a\r\nquit").is_err());
        assert!(validate_tube(&"a".repeat(201)).is_err());
    }
}
