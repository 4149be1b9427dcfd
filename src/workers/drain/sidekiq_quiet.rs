//! Quieting Sidekiq processes, as Sidekiq's own `Sidekiq::Process#quiet!` does it.
//!
//! - Stop taking work: `LPUSH <identity>-signals TSTP` (with a 60 s expiry). The process
//!   pops one signal at each heartbeat (every 5 s in 6.x, 10 s in 7+) and sends it to
//!   itself: its fetchers stop, a job fetched after that is put back on its queue, the
//!   jobs it runs finish. There is no signal that undoes it: a quiet process stays quiet
//!   until it exits, so a drain of Sidekiq processes cannot be called off.
//! - What it holds: the process hash `<identity>` (`quiet`, `busy`, `beat`, `info`),
//!   written at each heartbeat. A heartbeat's `busy` is read after its `quiet` took
//!   effect, so `quiet == "true"` with `busy == 0` means nothing runs there and nothing
//!   will.
//!
//! Processes are found by their pod: `info.hostname` (Sidekiq's `Socket.gethostname`, the
//! pod name in Kubernetes), as the Sidekiq provider reports them. Every key carries the
//! `redis-namespace` prefix when the install uses one.

use std::fmt;
use std::time::Duration;

use redis::AsyncConnectionConfig;
use redis::aio::MultiplexedConnection;
use serde::Deserialize;

use super::{DrainError, NodeHolding};
use crate::queue::Credentials;
use crate::queue::redis::pool::ConnectionKey;
use crate::queue::sidekiq::SidekiqUri;

/// The signal Sidekiq reads as "quiet" (`TSTP`; `USR1` in Sidekiq 4 and older).
const QUIET_SIGNAL: &str = "TSTP";
/// How long an unread signal stays (Sidekiq's own `quiet!` uses 60 s).
const SIGNAL_TTL_SECONDS: i64 = 60;
/// A process hash whose last heartbeat is older than this is a dead process's leftover
/// (Sidekiq expires it after 60 s).
const LIVE_BEAT_SECONDS: f64 = 60.0;

/// The Sidekiq processes on one Redis database (and namespace).
#[derive(Clone, PartialEq, Eq)]
pub struct SidekiqQuiet {
    key: ConnectionKey,
    /// `<namespace>:` or nothing.
    prefix: String,
    /// The server, for messages (no password).
    label: String,
}

impl fmt::Debug for SidekiqQuiet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `key`'s own Debug hides the password; the label holds none.
        f.debug_struct("SidekiqQuiet")
            .field("key", &self.key)
            .field("prefix", &self.prefix)
            .finish()
    }
}

/// A live process as its hash says.
#[derive(Debug, Clone, PartialEq)]
struct Process {
    identity: String,
    hostname: String,
    queues: Vec<String>,
    quiet: bool,
    busy: u64,
}

#[derive(Deserialize)]
struct Info {
    hostname: String,
    #[serde(default)]
    queues: Vec<String>,
}

impl SidekiqQuiet {
    /// The processes of the server and database of `key`, under `prefix` (`<ns>:` or
    /// empty).
    pub fn new(key: ConnectionKey, prefix: String) -> Self {
        let scheme = if key.tls { "rediss" } else { "redis" };
        let host = if key.host.contains(':') {
            format!("[{}]", key.host)
        } else {
            key.host.clone()
        };
        let label = format!(
            "Sidekiq on {scheme}://{host}:{}/{}{}",
            key.port,
            key.db,
            if prefix.is_empty() {
                String::new()
            } else {
                format!(" (namespace {})", prefix.trim_end_matches(':'))
            }
        );
        Self { key, prefix, label }
    }

    /// The processes serving the queue `uri` names (their server, database and
    /// namespace), with the WPA's Secret credentials over the URI's.
    pub fn of(uri: &SidekiqUri, creds: &Credentials) -> Self {
        Self::new(uri.location.connection_key(creds), uri.key_prefix())
    }

    pub fn label(&self) -> &str {
        &self.label
    }

    fn error(&self, detail: impl fmt::Display) -> DrainError {
        DrainError::Broker {
            broker: self.label.clone(),
            detail: detail.to_string(),
        }
    }

    async fn connect(&self, timeout: Duration) -> Result<MultiplexedConnection, DrainError> {
        let client =
            crate::queue::redis::client(&self.key, &self.label).map_err(|e| self.error(e))?;
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout));
        client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(|e| self.error(e))
    }

    /// Every live process, from `processes` and the process hashes.
    async fn processes(
        &self,
        connection: &mut MultiplexedConnection,
    ) -> Result<Vec<Process>, DrainError> {
        let identities: Vec<String> = redis::cmd("SMEMBERS")
            .arg(format!("{}processes", self.prefix))
            .query_async(connection)
            .await
            .map_err(|e| self.error(e))?;
        if identities.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for identity in &identities {
            pipe.cmd("HMGET")
                .arg(format!("{}{identity}", self.prefix))
                .arg(&["info", "quiet", "busy", "beat"]);
        }
        let rows: Vec<[Option<String>; 4]> = pipe
            .query_async(connection)
            .await
            .map_err(|e| self.error(e))?;
        let now = jiff::Timestamp::now().as_millisecond() as f64 / 1000.0;
        Ok(identities
            .into_iter()
            .zip(rows)
            .filter_map(|(identity, row)| process_of(identity, row, now))
            .collect())
    }

    /// Tells every live process on `pods` to stop taking work.
    pub async fn quiet(&self, pods: &[String], timeout: Duration) -> Result<(), DrainError> {
        let mut connection = self.connect(timeout).await?;
        let processes = self.processes(&mut connection).await?;
        let mut pipe = redis::pipe();
        let mut any = false;
        for process in processes.iter().filter(|p| pods.contains(&p.hostname)) {
            let signals = format!("{}{}-signals", self.prefix, process.identity);
            pipe.cmd("LPUSH")
                .arg(&signals)
                .arg(QUIET_SIGNAL)
                .ignore()
                .cmd("EXPIRE")
                .arg(&signals)
                .arg(SIGNAL_TTL_SECONDS)
                .ignore();
            any = true;
        }
        if any {
            pipe.query_async::<()>(&mut connection)
                .await
                .map_err(|e| self.error(e))?;
        }
        Ok(())
    }

    /// What the processes of each of `pods` hold, one [`NodeHolding`] per pod named by
    /// the pod: the queues its processes still consume (none once all are quiet) and the
    /// jobs they run. A pod with no live process is left out (unknown, never drained).
    pub async fn holdings(
        &self,
        pods: &[String],
        timeout: Duration,
    ) -> Result<Vec<NodeHolding>, DrainError> {
        let mut connection = self.connect(timeout).await?;
        let processes = self.processes(&mut connection).await?;
        Ok(holdings_of(pods, &processes))
    }
}

/// A live process from its hash fields (`info`, `quiet`, `busy`, `beat`); `None` for a
/// process gone (no hash, or a beat older than Sidekiq's expiry) or unreadable.
fn process_of(identity: String, row: [Option<String>; 4], now: f64) -> Option<Process> {
    let [info, quiet, busy, beat] = row;
    let beat: f64 = beat?.parse().ok()?;
    if now - beat > LIVE_BEAT_SECONDS {
        return None;
    }
    let info: Info = serde_json::from_str(&info?).ok()?;
    Some(Process {
        identity,
        hostname: info.hostname,
        queues: info.queues,
        quiet: quiet.as_deref() == Some("true"),
        // An unreadable count is read as busy: never drained on a guess.
        busy: busy.map_or(Some(1), |b| b.parse().ok()).unwrap_or(1),
    })
}

fn holdings_of(pods: &[String], processes: &[Process]) -> Vec<NodeHolding> {
    pods.iter()
        .filter_map(|pod| {
            let here: Vec<&Process> = processes.iter().filter(|p| &p.hostname == pod).collect();
            if here.is_empty() {
                return None;
            }
            let mut consuming: Vec<String> = here
                .iter()
                .filter(|p| !p.quiet)
                .flat_map(|p| p.queues.iter().cloned())
                .collect();
            consuming.sort();
            consuming.dedup();
            let active = here.iter().map(|p| p.busy).sum::<u64>();
            Some(NodeHolding {
                node: pod.clone(),
                consuming,
                active: usize::try_from(active).unwrap_or(usize::MAX),
                reserved: 0,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(info: &str, quiet: &str, busy: &str, beat: f64) -> [Option<String>; 4] {
        [
            Some(info.into()),
            Some(quiet.into()),
            Some(busy.into()),
            Some(beat.to_string()),
        ]
    }

    const INFO_A: &str =
        r#"{"hostname":"pod-a","pid":7,"queues":["q","other"],"identity":"pod-a:7:n"}"#;

    #[test]
    fn sidekiq_process_fields_are_read_and_dead_ones_skipped() {
        let now = 1_000.0;
        let p = process_of("pod-a:7:n".into(), row(INFO_A, "true", "0", 995.0), now).expect("live");
        assert_eq!(p.hostname, "pod-a");
        assert_eq!(p.queues, vec!["q".to_string(), "other".to_string()]);
        assert!(p.quiet);
        assert_eq!(p.busy, 0);
        assert_eq!(
            process_of("x".into(), row(INFO_A, "false", "0", 900.0), now),
            None,
            "a beat older than 60 s: a dead process's leftover"
        );
        assert_eq!(process_of("x".into(), [None, None, None, None], now), None);
        assert_eq!(
            process_of("x".into(), row("not json", "false", "0", 999.0), now),
            None
        );
        let garbled =
            process_of("x".into(), row(INFO_A, "true", "many", 999.0), now).expect("live");
        assert_eq!(garbled.busy, 1, "an unreadable busy count is busy");
    }

    #[test]
    fn sidekiq_pod_is_drained_only_when_every_process_is_quiet_and_idle() {
        let now = 1_000.0;
        let info_b = |pid: u32| format!(r#"{{"hostname":"pod-b","pid":{pid},"queues":["q"]}}"#);
        let processes = vec![
            process_of("a".into(), row(INFO_A, "true", "0", now), now).expect("a"),
            process_of("b1".into(), row(&info_b(1), "true", "0", now), now).expect("b1"),
            process_of("b2".into(), row(&info_b(2), "false", "2", now), now).expect("b2"),
        ];
        let pods = vec![
            "pod-a".to_string(),
            "pod-b".to_string(),
            "pod-c".to_string(),
        ];
        let holdings = holdings_of(&pods, &processes);
        let queues = vec!["q".to_string()];
        assert_eq!(holdings.len(), 2, "pod-c has no live process: unknown");
        assert!(holdings[0].drained(&queues), "{holdings:?}");
        assert_eq!(holdings[1].active, 2);
        assert_eq!(holdings[1].consuming, vec!["q".to_string()]);
        assert!(
            !holdings[1].drained(&queues),
            "one of its processes still consumes"
        );
    }
}
