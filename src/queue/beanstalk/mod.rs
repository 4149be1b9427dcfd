//! beanstalkd provider: one `stats-tube <tube>` command per poll over a small,
//! bounded protocol client (no maintained Rust client fits).
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
//! rate (`sent_per_minute` is `None`), and which watchers are worker pods. Our own
//! connection watches the `default` tube (beanstalkd makes every connection watch it), so
//! for that tube it is subtracted from `current-watching`.

use std::collections::HashMap;
use std::io;
use std::time::Duration;

use async_trait::async_trait;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

pub mod uri;

use super::kinds::{ConnectFuture, ProviderSpec, nothing_to_validate, wrong_kind};
use super::uri::{BeanstalkUri, QueueUri};
use super::{Credentials, ProviderKind, ProviderOptions, QueueError, QueueMetrics, QueueProvider};

/// Longest response line we accept (`OK <bytes>\r\n` or an error word).
const MAX_LINE: u64 = 256;
/// Largest `stats-tube` body we accept; real ones are under 1 KiB.
const MAX_BODY: usize = 64 * 1024;
/// Longest tube name beanstalkd allows.
const MAX_TUBE: usize = 200;

/// Polls one beanstalkd tube. Keeps one connection; a broken one is replaced on the next
/// poll (and once within a poll, so a restarted server is seen at once).
pub struct BeanstalkProvider {
    addr: String,
    tube: String,
    label: String,
    timeout: Duration,
    conn: Option<BufReader<TcpStream>>,
}

/// Why one exchange failed, before it is turned into a [`QueueError`].
enum Failure {
    /// Transport trouble: the connection is useless afterwards.
    Io(String),
    /// The server closed the connection before answering.
    Closed,
    /// The answer broke the protocol: the connection is useless afterwards.
    Protocol(String),
    /// `NOT_FOUND`: the tube does not exist (the connection stays usable).
    NotFound,
}

impl BeanstalkProvider {
    /// Validates the tube name and opens the connection, so an unreachable server shows
    /// up at once (`Unavailable`); later polls reconnect on their own.
    pub async fn connect(uri: &BeanstalkUri, opts: &ProviderOptions) -> Result<Self, QueueError> {
        validate_tube(&uri.tube)?;
        let host = if uri.host.contains(':') && !uri.host.starts_with('[') {
            format!("[{}]", uri.host)
        } else {
            uri.host.clone()
        };
        let mut provider = Self {
            addr: format!("{host}:{}", uri.port),
            tube: uri.tube.clone(),
            label: format!("beanstalk://{host}:{}/{}", uri.port, uri.tube),
            timeout: opts.request_timeout,
            conn: None,
        };
        provider.ensure_connected().await?;
        Ok(provider)
    }

    async fn ensure_connected(&mut self) -> Result<&mut BufReader<TcpStream>, QueueError> {
        if self.conn.is_none() {
            let stream = tokio::time::timeout(self.timeout, TcpStream::connect(&self.addr))
                .await
                .map_err(|_| self.unavailable("timed out connecting"))?
                .map_err(|e| self.unavailable(&format!("connect: {e}")))?;
            // Small request/response exchanges: do not wait for Nagle.
            stream
                .set_nodelay(true)
                .map_err(|e| self.unavailable(&format!("set_nodelay: {e}")))?;
            self.conn = Some(BufReader::new(stream));
        }
        // Just filled above when it was empty.
        self.conn.as_mut().ok_or_else(|| QueueError::Unavailable {
            queue: self.label.clone(),
            detail: "no connection".into(),
        })
    }

    fn unavailable(&self, detail: &str) -> QueueError {
        QueueError::Unavailable {
            queue: self.label.clone(),
            detail: detail.to_string(),
        }
    }

    /// One `stats-tube` exchange on the current (possibly new) connection; `None` when the
    /// tube does not exist.
    async fn stats_once(&mut self) -> Result<Option<HashMap<String, String>>, QueueError> {
        let timeout = self.timeout;
        let command = format!("stats-tube {}\r\n", self.tube);
        let conn = self.ensure_connected().await?;
        let result = match tokio::time::timeout(timeout, exchange(conn, &command)).await {
            Ok(r) => r,
            Err(_) => Err(Failure::Io(format!("no answer within {timeout:?}"))),
        };
        match result {
            Ok(body) => parse_stats(&body)
                .map(Some)
                .map_err(|detail| QueueError::BadResponse {
                    queue: self.label.clone(),
                    detail,
                }),
            // A tube exists only while it holds jobs or a client uses or watches it: at
            // zero workers and no backlog it is gone. That is an empty queue, not an error
            // (practo reads it the same way); the connection stays usable.
            Err(Failure::NotFound) => Ok(None),
            Err(failure) => {
                // The stream may hold half a frame: never reuse it.
                self.conn = None;
                Err(match failure {
                    Failure::Io(detail) => self.unavailable(&detail),
                    Failure::Closed => self.unavailable("connection closed by the server"),
                    Failure::Protocol(detail) => QueueError::BadResponse {
                        queue: self.label.clone(),
                        detail,
                    },
                    Failure::NotFound => self.unavailable("unexpected NOT_FOUND"),
                })
            }
        }
    }
}

#[async_trait]
impl QueueProvider for BeanstalkProvider {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Beanstalkd
    }

    async fn poll(&mut self) -> Result<QueueMetrics, QueueError> {
        let reused = self.conn.is_some();
        let stats = match self.stats_once().await {
            // A kept connection may have died with a restarted server: retry once on a
            // fresh one before reporting the server unavailable.
            Err(QueueError::Unavailable { .. }) if reused => {
                tracing::debug!(queue = %self.label, "beanstalkd connection broken, reconnecting");
                self.stats_once().await?
            }
            other => other?,
        };
        let Some(stats) = stats else {
            return Ok(missing_tube_metrics());
        };
        metrics_from_stats(&stats, self.tube == "default").map_err(|detail| {
            QueueError::BadResponse {
                queue: self.label.clone(),
                detail,
            }
        })
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

fn io_failure(e: io::Error) -> Failure {
    Failure::Io(e.to_string())
}

/// Sends `command` and reads one `OK <bytes>` frame (or an error line), bounded.
async fn exchange(conn: &mut BufReader<TcpStream>, command: &str) -> Result<String, Failure> {
    conn.get_mut()
        .write_all(command.as_bytes())
        .await
        .map_err(io_failure)?;
    let mut line = Vec::new();
    (&mut *conn)
        .take(MAX_LINE)
        .read_until(b'\n', &mut line)
        .await
        .map_err(io_failure)?;
    if line.is_empty() {
        return Err(Failure::Closed);
    }
    let Some(line) = line.strip_suffix(b"\r\n") else {
        return Err(Failure::Protocol(if line.len() as u64 >= MAX_LINE {
            format!("response line longer than {MAX_LINE} bytes")
        } else {
            "truncated response line".to_string()
        }));
    };
    let line = std::str::from_utf8(line)
        .map_err(|_| Failure::Protocol("response line is not UTF-8".into()))?;
    let size = match line.split_once(' ') {
        Some(("OK", size)) => size
            .parse::<usize>()
            .map_err(|_| Failure::Protocol(format!("bad body size in {:?}", shorten(line))))?,
        None if line == "NOT_FOUND" => return Err(Failure::NotFound),
        _ => {
            return Err(Failure::Protocol(format!(
                "unexpected response {:?}",
                shorten(line)
            )));
        }
    };
    if size > MAX_BODY {
        return Err(Failure::Protocol(format!(
            "body of {size} bytes exceeds the {MAX_BODY}-byte limit"
        )));
    }
    let mut body = vec![0u8; size + 2];
    conn.read_exact(&mut body).await.map_err(|e| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            Failure::Protocol(format!("truncated body: expected {size} bytes"))
        } else {
            io_failure(e)
        }
    })?;
    if !body.ends_with(b"\r\n") {
        return Err(Failure::Protocol("body does not end with CRLF".into()));
    }
    body.truncate(size);
    String::from_utf8(body).map_err(|_| Failure::Protocol("body is not UTF-8".into()))
}

/// Keeps error messages short when a server sends a long line of garbage.
fn shorten(s: &str) -> String {
    s.chars().take(64).collect()
}

/// Parses the flat YAML mapping beanstalkd sends (`---` then `key: value` lines).
fn parse_stats(body: &str) -> Result<HashMap<String, String>, String> {
    let mut lines = body.lines();
    if lines.next().map(str::trim_end) != Some("---") {
        return Err("stats body does not start with a YAML document marker".into());
    }
    let mut map = HashMap::new();
    for line in lines {
        if line.trim().is_empty() {
            continue;
        }
        let (key, value) = line
            .split_once(':')
            .ok_or_else(|| format!("stats line without ':': {:?}", shorten(line)))?;
        let value = value.trim().trim_matches('"');
        map.insert(key.trim().to_string(), value.to_string());
    }
    Ok(map)
}

fn count(stats: &HashMap<String, String>, key: &str) -> Result<u64, String> {
    let value = stats
        .get(key)
        .ok_or_else(|| format!("stats-tube lacks {key}"))?;
    value
        .parse()
        .map_err(|_| format!("{key} is not a count: {:?}", shorten(value)))
}

/// What a tube that does not exist holds: nothing, and nobody watches it.
fn missing_tube_metrics() -> QueueMetrics {
    QueueMetrics {
        visible: 0,
        in_flight: Some(0),
        delayed: Some(0),
        sent_per_minute: None,
        consumers: Some(0),
        idle: Some(true),
        partial: None,
        sampled_at: jiff::Timestamp::now(),
    }
}

fn metrics_from_stats(
    stats: &HashMap<String, String>,
    default_tube: bool,
) -> Result<QueueMetrics, String> {
    let ready = count(stats, "current-jobs-ready")?;
    let reserved = count(stats, "current-jobs-reserved")?;
    let delayed = count(stats, "current-jobs-delayed")?;
    let mut watching = count(stats, "current-watching")?;
    let waiting = count(stats, "current-waiting")?;
    if default_tube {
        // Our own connection watches "default" without ever reserving.
        watching = watching.saturating_sub(1);
    }
    // Nothing ready or reserved and no watcher: no worker has anything to do.
    let idle = if ready > 0 || reserved > 0 {
        Some(false)
    } else {
        Some(waiting >= watching)
    };
    Ok(QueueMetrics {
        visible: ready,
        in_flight: Some(reserved),
        delayed: Some(delayed),
        sent_per_minute: None,
        consumers: Some(watching),
        idle,
        partial: None,
        sampled_at: jiff::Timestamp::now(),
    })
}

/// This provider's row in the provider table.
pub(crate) const SPEC: ProviderSpec = ProviderSpec {
    kind: ProviderKind::Beanstalkd,
    name: "beanstalkd",
    aliases: &["beanstalk"],
    schemes: &["beanstalk"],
    default_interval: Duration::from_secs(1),
    interval_flag: "--beanstalk-short-poll-interval",
    parse: uri::parse,
    validate: nothing_to_validate,
    connect: connect_boxed,
};

fn connect_boxed<'a>(
    uri: &'a QueueUri,
    _creds: &'a Credentials,
    opts: &'a ProviderOptions,
) -> ConnectFuture<'a> {
    Box::pin(async move {
        let QueueUri::Beanstalk(u) = uri else {
            return Err(wrong_kind(uri, ProviderKind::Beanstalkd));
        };
        Ok(Box::new(BeanstalkProvider::connect(u, opts).await?) as Box<dyn QueueProvider>)
    })
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
        assert!(metrics_from_stats(&stats, false).is_err());
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
