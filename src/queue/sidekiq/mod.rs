//! Sidekiq provider: a Sidekiq queue on Redis, with Sidekiq's own process records as the
//! per-worker signal (docs/frameworks/sidekiq.md).
//!
//! **Measures**
//! - `visible`: `LLEN queue:<q>`, the jobs waiting and due (`Sidekiq::Queue#size`). Jobs in
//!   the `schedule` and `retry` sorted sets are not due yet and not counted; `delayed` stays
//!   unknown because those sets are shared by every queue.
//! - `in_flight`: the jobs of this queue that live processes run, as of each process's last
//!   heartbeat: its `busy` count when it serves this queue only, otherwise the entries of its
//!   work hash (`<identity>:workers` in 6.x, `<identity>:work` in 7+) whose `queue` is this
//!   one.
//! - `workers`: one report per live process whose `info.queues` holds this queue, `pod` =
//!   `info.hostname` (the Pod name, or `$DYNO`), busy when it may run a job (see
//!   [`process::Tracked::busy`]). Quiet processes are reported too: a quiet process still
//!   runs what it took, and says so. `consumers` counts the ones not quiet.
//! - `idle`: `Some(true)` when nothing is visible and no reported process is busy.
//! - `missing`: the queue is not in the `queues` set, holds nothing and no process serves it
//!   (a typo, or a queue nothing has used yet): read as empty, not an error.
//!
//! **Cost per poll**: two pipelined round trips. The first reads `LLEN`, `SMEMBERS
//! processes` and `SISMEMBER queues`; the second `HMGET` on the processes that serve this
//! queue (plus `info`, once, for identities not seen before) and, only for processes that
//! also serve other queues (or are new), the work hashes. Processes of other queues cost
//! nothing after their first poll.
//!
//! A process is live while its hash exists and its `beat` is less than 60 s old (Sidekiq's
//! expiry of that hash); identities left in `processes` by a killed process are skipped, and
//! never removed: the provider only reads.

use std::sync::Arc;
use std::time::Duration;

use ::redis::aio::ConnectionManager;
use ::redis::{Pipeline, Value};
use async_trait::async_trait;

mod process;
mod state;
pub mod uri;

use super::provider::{ConnectFuture, ProviderSpec, ProviderUri, boxed};
use super::redis::location::{has_code, map_error};
use super::redis::pool::Slot;
use super::{
    Credentials, ProviderOptions, QueueError, QueueMetrics, QueueProvider,
};
use state::{Answer, Ask, Processes};
pub use uri::SidekiqUri;

/// The work hash of each Sidekiq major version (6.x, 7+): both are read, one exists.
const WORK_SUFFIXES: [&str; 2] = [":workers", ":work"];

/// Polls one Sidekiq queue; see the module documentation.
pub struct SidekiqProvider {
    label: String,
    queue: String,
    /// `<namespace>:` or nothing.
    prefix: String,
    queue_key: String,
    processes_key: String,
    queues_key: String,
    /// Keeps the shared connection in the pool while this queue uses it.
    _connection: Arc<Slot>,
    conn: ConnectionManager,
    /// The processes as far as known from earlier polls.
    processes: Processes,
}

impl SidekiqProvider {
    /// Takes the shared connection to the URI's server and database (Secret credentials
    /// override the URI's userinfo, field by field).
    pub async fn connect(
        uri: &SidekiqUri,
        creds: &Credentials,
        opts: &ProviderOptions,
    ) -> Result<Self, QueueError> {
        let label = uri.redacted();
        let (connection, conn) = uri.location.connect(creds, opts, &label).await?;
        let prefix = uri.key_prefix();
        let queue = uri.location.queue.clone();
        Ok(SidekiqProvider {
            queue_key: format!("{prefix}queue:{queue}"),
            processes_key: format!("{prefix}processes"),
            queues_key: format!("{prefix}queues"),
            processes: Processes::new(&queue, &label),
            prefix,
            queue,
            label,
            _connection: connection,
            conn,
        })
    }

    /// Runs a pipeline; a WRONGTYPE answer is explained by naming the key (of `expected`,
    /// key and type pairs) that holds something else.
    async fn query(
        &mut self,
        pipe: &Pipeline,
        expected: impl FnOnce() -> Vec<(String, &'static str)>,
    ) -> Result<Vec<Value>, QueueError> {
        match pipe.query_async::<Vec<Value>>(&mut self.conn).await {
            Ok(values) => Ok(values),
            Err(e) if has_code(&e, &["WRONGTYPE"]) => Err(self.explain_wrong_type(expected()).await),
            Err(e) => Err(map_error(&self.label, &e)),
        }
    }

    async fn explain_wrong_type(&mut self, expected: Vec<(String, &'static str)>) -> QueueError {
        let mut pipe = ::redis::pipe();
        for (key, _) in &expected {
            pipe.cmd("TYPE").arg(key);
        }
        let detail = match pipe.query_async::<Vec<String>>(&mut self.conn).await {
            Ok(types) => {
                let wrong: Vec<String> = expected
                    .iter()
                    .zip(types)
                    .filter(|((_, want), got)| got != "none" && got != want)
                    .map(|((key, want), got)| {
                        format!("key {key:?} is a {got}, not the {want} Sidekiq keeps there")
                    })
                    .collect();
                if wrong.is_empty() {
                    "a key changed type during the poll".to_string()
                } else {
                    wrong.join("; ")
                }
            }
            Err(e) => format!("a Sidekiq key holds the wrong type ({e})"),
        };
        QueueError::BadResponse {
            queue: self.label.clone(),
            detail,
        }
    }

    fn bad(&self, detail: String) -> QueueError {
        QueueError::BadResponse {
            queue: self.label.clone(),
            detail,
        }
    }

    fn convert<T: ::redis::FromRedisValue>(&self, value: Value, what: &str) -> Result<T, QueueError> {
        ::redis::from_redis_value(value).map_err(|e| self.bad(format!("{what} answered {e}")))
    }

    /// The second round trip: heartbeat fields (and what else `asks` needs) per process.
    async fn ask(&mut self, asks: &[Ask]) -> Result<Vec<Answer>, QueueError> {
        if asks.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = ::redis::pipe();
        for ask in asks {
            let key = format!("{}{}", self.prefix, ask.identity);
            let cmd = pipe.cmd("HMGET").arg(&key);
            if ask.info {
                cmd.arg("info");
            }
            cmd.arg("busy").arg("beat").arg("quiet");
            if ask.work {
                for suffix in WORK_SUFFIXES {
                    pipe.cmd("HVALS").arg(format!("{key}{suffix}"));
                }
            }
        }
        let prefix = self.prefix.clone();
        let mut replies = self
            .query(&pipe, || {
                let mut keys = Vec::new();
                for ask in asks {
                    let key = format!("{prefix}{}", ask.identity);
                    for suffix in WORK_SUFFIXES {
                        keys.push((format!("{key}{suffix}"), "hash"));
                    }
                    keys.push((key, "hash"));
                }
                keys
            })
            .await?
            .into_iter();
        let mut answers = Vec::with_capacity(asks.len());
        for ask in asks {
            let reply = replies
                .next()
                .ok_or_else(|| self.bad("a short pipeline reply".to_string()))?;
            let mut fields: Vec<Option<Vec<u8>>> = self.convert(reply, "HMGET")?;
            let expected = if ask.info { 4 } else { 3 };
            if fields.len() != expected {
                return Err(self.bad(format!("HMGET answered {} fields", fields.len())));
            }
            let quiet = fields.pop().flatten();
            let beat = fields.pop().flatten();
            let busy = fields.pop().flatten();
            let info = ask.info.then(|| fields.pop().flatten());
            let work = if ask.work {
                let mut values = Vec::new();
                for _ in WORK_SUFFIXES {
                    let reply = replies
                        .next()
                        .ok_or_else(|| self.bad("a short pipeline reply".to_string()))?;
                    values.extend(self.convert::<Vec<Vec<u8>>>(reply, "HVALS")?);
                }
                Some(values)
            } else {
                None
            };
            answers.push(Answer {
                identity: ask.identity.clone(),
                info,
                busy,
                beat,
                quiet,
                work,
            });
        }
        Ok(answers)
    }

}

#[async_trait]
impl QueueProvider for SidekiqProvider {
    async fn poll(&mut self) -> Result<QueueMetrics, QueueError> {
        let sampled_at = jiff::Timestamp::now();
        let now = sampled_at.as_millisecond() as f64 / 1000.0;
        let mut pipe = ::redis::pipe();
        pipe.llen(&self.queue_key)
            .smembers(&self.processes_key)
            .sismember(&self.queues_key, &self.queue);
        let expected = [
            (self.queue_key.clone(), "list"),
            (self.processes_key.clone(), "set"),
            (self.queues_key.clone(), "set"),
        ];
        let replies = self.query(&pipe, || expected.to_vec()).await?;
        let [len, members, declared]: [Value; 3] = replies
            .try_into()
            .map_err(|r: Vec<Value>| self.bad(format!("{} replies to 3 commands", r.len())))?;
        let visible: u64 = self.convert(len, "LLEN")?;
        let identities: Vec<String> = self.convert(members, "SMEMBERS")?;
        let declared: bool = self.convert(declared, "SISMEMBER")?;

        let asks = self.processes.plan(visible, &identities, now);
        let answers = self.ask(&asks).await?;
        let tally = self.processes.tally(answers, now);
        let busy = tally.workers.iter().any(|w| w.busy);
        let missing = if !declared && visible == 0 && tally.workers.is_empty() {
            vec![self.label.clone()]
        } else {
            Vec::new()
        };
        Ok(QueueMetrics {
            visible,
            in_flight: Some(tally.in_flight),
            delayed: None,
            sent_per_minute: None,
            consumers: Some(tally.consumers),
            idle: Some(visible == 0 && !busy),
            partial: (!tally.unreadable.is_empty()).then(|| tally.unreadable.join("; ")),
            sampled_at,
            workers: Some(tally.workers),
            missing,
        })
    }
}

impl ProviderUri for SidekiqUri {
    const SPEC: ProviderSpec = ProviderSpec {
        name: "sidekiq",
        aliases: &[],
        schemes: &["redis+sidekiq", "rediss+sidekiq"],
        example: "redis+sidekiq://redis:6379/0/default",
        default_interval: Duration::from_secs(1),
        interval_flag: "--sidekiq-poll-interval",
    };

    fn parse(input: &str, scheme: &str) -> Result<Self, String> {
        uri::parse(input, scheme)
    }

    fn redacted(&self) -> String {
        SidekiqUri::redacted(self)
    }

    fn connect<'a>(
        &'a self,
        creds: &'a Credentials,
        opts: &'a ProviderOptions,
    ) -> ConnectFuture<'a> {
        boxed(SidekiqProvider::connect(self, creds, opts))
    }
}

