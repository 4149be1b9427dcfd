//! RQ provider: Python's Redis Queue (checked against RQ 3.0's source).
//!
//! **Measures** (keys under RQ's prefix `rq`, or the URI's `prefix`):
//! - `visible`: `LLEN <prefix>:queue:<q>`, exactly `Queue.count`: the jobs waiting and due.
//!   Scheduled and deferred jobs live in other registries and are not due, so not counted.
//! - `in_flight`: the live entries of the started-job registry `<prefix>:wip:<q>`, a sorted
//!   set scored by expiry time: `ZCARD` minus the entries whose score is in `[0, now]`,
//!   which is what `StartedJobRegistry.count` returns after its cleanup (it removes those).
//! - `workers`: one report per live worker of the set `<prefix>:workers:<q>`: `pod` is the
//!   worker's `hostname` (a pod's hostname is its name), busy when its `state` is `busy` or
//!   its execution set `<prefix>:worker:<name>:executions` is not empty. A member whose
//!   hash is gone (RQ expires it when heartbeats stop) or carries `death` is not a worker.
//!   A worker seen busy stays busy for one more poll: between two jobs RQ writes `idle`
//!   before it takes the next job and `busy` only after (see [`BUSY_HOLD`]).
//! - `consumers`: the live workers of the queue.
//! - `idle`: `Some(true)` when nothing waits, nothing runs and no worker is busy;
//!   `Some(false)` when something does; unknown (the registry's idle window decides) while
//!   the queue's intermediate list `<prefix>:queue:<q>:intermediate` holds a job, that is a
//!   single-queue worker took it and has not started it yet (or died in between).
//! - `missing`: the queue is not in `<prefix>:queues` (nobody ever enqueued to it, or it
//!   was emptied with `Queue.delete`) and no worker listens on it.
//!
//! **Cannot see**: jobs a worker has taken and not started yet (milliseconds, on the
//! intermediate list, not counted: an entry left there by a worker that died stays until
//! RQ's maintenance fails it, up to ten minutes later), workers that listen on the queue
//! under another prefix, and pods whose workers set a hostname other than the pod name.
//!
//! **Cost per poll**: one atomic pipelined round trip (`LLEN`, `ZCARD`, `ZCOUNT`, `LLEN`,
//! `SISMEMBER`, `SMEMBERS`), and, when workers listen, a second one with `HMGET` of three
//! fields and `SCARD` per worker.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use ::redis::aio::ConnectionManager;
use ::redis::{Pipeline, Value};
use async_trait::async_trait;

pub mod uri;

use super::provider::{ConnectFuture, ProviderSpec, ProviderUri, boxed};
use super::redis::location::{has_code, map_error};
use super::redis::pool::Slot;
use super::{
    ConsumerReport, Credentials, ProviderOptions, QueueError, QueueMetrics, QueueProvider,
};
pub use uri::RqUri;

/// Polls after a worker was last seen busy during which it is still reported busy. RQ sets
/// `state` to `idle` when a job ends and before it blocks for the next one, and to `busy`
/// only once it has taken and prepared that job: a poll in between would see a worker that
/// holds a job as idle, and its pod could be chosen for removal.
const BUSY_HOLD: u32 = 1;

/// What one worker hash says, as far as scaling needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct WorkerState {
    hostname: Option<String>,
    busy: bool,
}

/// Reads one worker from `HMGET <key> state hostname death` and the size of its execution
/// set. `None` when the worker is gone: its hash expired (no field at all) or it
/// registered its death (RQ keeps the hash 60 s more with `death` set).
fn interpret_worker(
    state: Option<&str>,
    hostname: Option<&str>,
    death: Option<&str>,
    executions: u64,
) -> Option<WorkerState> {
    if death.is_some() || (state.is_none() && hostname.is_none()) {
        return None;
    }
    Some(WorkerState {
        hostname: hostname.filter(|h| !h.is_empty()).map(str::to_string),
        // `busy` is written together with the execution (one MULTI); the execution set also
        // covers a worker whose `state` a `rq suspend` overwrote mid-job.
        busy: state == Some("busy") || executions > 0,
    })
}

/// Polls one RQ queue; see the module documentation.
pub struct RqProvider {
    label: String,
    queue_key: String,
    intermediate_key: String,
    started_key: String,
    workers_key: String,
    queues_key: String,
    uri: RqUri,
    /// Keeps the shared connection in the pool while this queue uses it.
    _connection: Arc<Slot>,
    conn: ConnectionManager,
    busy_memory: BusyMemory,
}

impl RqProvider {
    /// Connects to the Redis server of `uri` (pooled per server, database and identity).
    pub async fn connect(
        uri: &RqUri,
        creds: &Credentials,
        opts: &ProviderOptions,
    ) -> Result<Self, QueueError> {
        let label = uri.redacted();
        let (connection, conn) = uri.location.connect(creds, opts, &label).await?;
        Ok(Self {
            queue_key: uri.queue_key(),
            intermediate_key: uri.intermediate_key(),
            started_key: uri.started_key(),
            workers_key: uri.workers_key(),
            queues_key: format!("{}:queues", uri.prefix),
            uri: uri.clone(),
            _connection: connection,
            conn,
            busy_memory: BusyMemory::default(),
            label,
        })
    }

    fn bad(&self, detail: String) -> QueueError {
        QueueError::BadResponse {
            queue: self.label.clone(),
            detail,
        }
    }

    async fn query(&mut self, pipe: &Pipeline) -> Result<Vec<Value>, QueueError> {
        match pipe.query_async::<Vec<Value>>(&mut self.conn).await {
            Ok(v) => Ok(v),
            Err(e) if has_code(&e, &["WRONGTYPE"]) => Err(self.explain_wrong_type().await),
            Err(e) => Err(map_error(&self.label, &e)),
        }
    }

    /// Names the keys that hold the wrong type (only run after a WRONGTYPE error).
    async fn explain_wrong_type(&mut self) -> QueueError {
        let expected = [
            (self.queue_key.clone(), "list"),
            (self.intermediate_key.clone(), "list"),
            (self.started_key.clone(), "zset"),
            (self.workers_key.clone(), "set"),
            (self.queues_key.clone(), "set"),
        ];
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
                        format!("key {key:?} is a {got}, not RQ's {want}")
                    })
                    .collect();
                if wrong.is_empty() {
                    "a key of this queue (or a worker's) has the wrong type; is this an RQ \
                     queue under this prefix?"
                        .to_string()
                } else {
                    format!(
                        "{}; is this an RQ queue under prefix {:?}?",
                        wrong.join("; "),
                        self.uri.prefix
                    )
                }
            }
            Err(e) => format!("a key of this queue has the wrong type ({e})"),
        };
        self.bad(detail)
    }

    /// The live workers of the queue among `keys`, with what their hashes say.
    async fn read_workers(&mut self, keys: &[String]) -> Result<Vec<(String, WorkerState)>, QueueError> {
        let keys: Vec<&String> = keys.iter().filter(|k| self.uri.is_worker_key(k)).collect();
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = ::redis::pipe();
        for key in &keys {
            pipe.cmd("HMGET")
                .arg(key.as_str())
                .arg("state")
                .arg("hostname")
                .arg("death");
            pipe.scard(RqUri::executions_key(key));
        }
        let replies = self.query(&pipe).await?;
        if replies.len() != keys.len() * 2 {
            return Err(self.bad(format!(
                "{} replies to {} worker reads",
                replies.len(),
                keys.len() * 2
            )));
        }
        let mut workers = Vec::with_capacity(keys.len());
        for (key, pair) in keys.into_iter().zip(replies.chunks(2)) {
            let [fields, executions] = pair else {
                continue;
            };
            let fields: Vec<Option<String>> = ::redis::from_redis_value(fields.clone())
                .map_err(|e| self.bad(format!("HMGET {key} answered {e}")))?;
            let executions: u64 = ::redis::from_redis_value(executions.clone())
                .map_err(|e| self.bad(format!("SCARD of {key}'s executions answered {e}")))?;
            let field = |i: usize| fields.get(i).and_then(Option::as_deref);
            if let Some(state) = interpret_worker(field(0), field(1), field(2), executions) {
                workers.push((key.clone(), state));
            }
        }
        Ok(workers)
    }
}

/// Which workers were seen busy lately: the memory behind [`BUSY_HOLD`].
#[derive(Debug, Default)]
struct BusyMemory {
    /// Worker key -> polls left during which it is reported busy although it reads idle.
    held: HashMap<String, u32>,
}

impl BusyMemory {
    /// The reports for this poll's `workers`, holding busy a worker seen busy within
    /// [`BUSY_HOLD`] polls. Forgets workers that are gone.
    fn reports(&mut self, workers: &[(String, WorkerState)]) -> Vec<ConsumerReport> {
        let mut held = HashMap::with_capacity(workers.len());
        let mut reports = Vec::with_capacity(workers.len());
        for (key, state) in workers {
            let busy = if state.busy {
                held.insert(key.clone(), BUSY_HOLD);
                true
            } else {
                match self.held.get(key) {
                    Some(&left) if left > 0 => {
                        held.insert(key.clone(), left - 1);
                        true
                    }
                    _ => false,
                }
            };
            reports.push(ConsumerReport {
                pod: state.hostname.clone(),
                ip: None,
                busy,
                channel: None,
            });
        }
        self.held = held;
        reports
    }
}

/// Decodes one reply of the first round trip.
fn decode<T: ::redis::FromRedisValue>(
    provider: &RqProvider,
    what: &str,
    value: Value,
) -> Result<T, QueueError> {
    ::redis::from_redis_value(value).map_err(|e| provider.bad(format!("{what} answered {e}")))
}

#[async_trait]
impl QueueProvider for RqProvider {
    async fn poll(&mut self) -> Result<QueueMetrics, QueueError> {
        let sampled_at = jiff::Timestamp::now();
        // RQ scores started entries with their expiry, in whole Unix seconds, and its count
        // drops those with a score in [0, now] (`StartedJobRegistry.cleanup`).
        let now = sampled_at.as_second();
        let mut pipe = ::redis::pipe();
        // One MULTI: a job moving from the queue to the started registry is counted once.
        pipe.atomic()
            .llen(&self.queue_key)
            .zcard(&self.started_key)
            .zcount(&self.started_key, 0, now)
            .llen(&self.intermediate_key)
            .sismember(&self.queues_key, &self.queue_key)
            .smembers(&self.workers_key);
        let replies = self.query(&pipe).await?;
        let Ok::<[Value; 6], _>([visible, started, expired, taken, known, worker_keys]) =
            replies.try_into()
        else {
            return Err(self.bad("the pipeline did not answer 6 replies".to_string()));
        };
        let visible: u64 = decode(self, "LLEN", visible)?;
        let started: u64 = decode(self, "ZCARD", started)?;
        let expired: u64 = decode(self, "ZCOUNT", expired)?;
        let taken: u64 = decode(self, "LLEN of the intermediate list", taken)?;
        let known: bool = decode(self, "SISMEMBER", known)?;
        let worker_keys: Vec<String> = decode(self, "SMEMBERS", worker_keys)?;
        let in_flight = started.saturating_sub(expired);

        let workers = self.read_workers(&worker_keys).await?;
        let reports = self.busy_memory.reports(&workers);
        let busy = visible > 0 || in_flight > 0 || reports.iter().any(|r| r.busy);
        let idle = match (busy, taken) {
            (true, _) => Some(false),
            (false, 0) => Some(true),
            (false, _) => None,
        };
        let missing = if !known && worker_keys.is_empty() && !busy && taken == 0 {
            vec![self.label.clone()]
        } else {
            Vec::new()
        };
        Ok(QueueMetrics {
            visible,
            in_flight: Some(in_flight),
            delayed: None,
            sent_per_minute: None,
            consumers: Some(workers.len() as u64),
            idle,
            partial: None,
            sampled_at,
            workers: Some(reports),
            missing,
        })
    }

    /// Two pipelined round trips, each bounded by the request timeout.
    fn polls_end_in_time(&self) -> bool {
        true
    }
}

impl ProviderUri for RqUri {
    const SPEC: ProviderSpec = ProviderSpec {
        name: "rq",
        aliases: &[],
        schemes: &["redis+rq", "rediss+rq"],
        example: "redis+rq://redis:6379/0/default",
        default_interval: Duration::from_secs(1),
        interval_flag: "--rq-poll-interval",
    };

    fn parse(input: &str, scheme: &str) -> Result<Self, String> {
        uri::parse(input, scheme)
    }

    fn redacted(&self) -> String {
        RqUri::redacted(self)
    }

    fn connect<'a>(
        &'a self,
        creds: &'a Credentials,
        opts: &'a ProviderOptions,
    ) -> ConnectFuture<'a> {
        boxed(RqProvider::connect(self, creds, opts))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(hostname: &str, busy: bool) -> WorkerState {
        WorkerState {
            hostname: Some(hostname.to_string()),
            busy,
        }
    }

    #[test]
    fn worker_hashes() {
        assert_eq!(
            interpret_worker(Some("busy"), Some("pod-a"), None, 1),
            Some(state("pod-a", true))
        );
        assert_eq!(
            interpret_worker(Some("idle"), Some("pod-a"), None, 0),
            Some(state("pod-a", false))
        );
        // Not working yet, or suspended between jobs: idle.
        for s in ["started", "suspended"] {
            assert_eq!(
                interpret_worker(Some(s), Some("pod-a"), None, 0),
                Some(state("pod-a", false))
            );
        }
        // A running execution makes it busy whatever `state` says.
        assert_eq!(
            interpret_worker(Some("suspended"), Some("pod-a"), None, 1),
            Some(state("pod-a", true))
        );
        // Expired hash: every field nil. Registered death: gone.
        assert_eq!(interpret_worker(None, None, None, 0), None);
        assert_eq!(
            interpret_worker(Some("busy"), Some("pod-a"), Some("2026-01-01T00:00:00Z"), 1),
            None
        );
        // No hostname: a worker, but no pod to name.
        assert_eq!(
            interpret_worker(Some("busy"), Some(""), None, 0),
            Some(WorkerState {
                hostname: None,
                busy: true
            })
        );
        // A hash that only got `state` (written after the hash expired) still is a worker.
        assert_eq!(
            interpret_worker(Some("idle"), None, None, 0),
            Some(WorkerState {
                hostname: None,
                busy: false
            })
        );
    }

    #[test]
    fn a_worker_seen_busy_stays_busy_for_one_more_poll() {
        let mut memory = BusyMemory::default();
        let poll = |memory: &mut BusyMemory, busy: &[(&str, bool)]| -> Vec<bool> {
            let workers: Vec<(String, WorkerState)> = busy
                .iter()
                .map(|(key, b)| (key.to_string(), state(&format!("pod-{key}"), *b)))
                .collect();
            memory.reports(&workers).iter().map(|r| r.busy).collect()
        };
        assert_eq!(poll(&mut memory, &[("a", true), ("b", false)]), [true, false]);
        // `a` read idle right after a job: maybe about to start the next one.
        assert_eq!(poll(&mut memory, &[("a", false), ("b", false)]), [true, false]);
        assert_eq!(poll(&mut memory, &[("a", false), ("b", false)]), [false, false]);
        // Busy again, then gone: forgotten, so a worker of that name later starts afresh.
        assert_eq!(poll(&mut memory, &[("a", true)]), [true]);
        assert_eq!(poll(&mut memory, &[]), Vec::<bool>::new());
        assert_eq!(poll(&mut memory, &[("a", false)]), [false]);
        let reports = memory.reports(&[("b".to_string(), state("pod-b", false))]);
        assert_eq!(reports[0].pod.as_deref(), Some("pod-b"));
        assert_eq!((reports[0].ip.as_deref(), reports[0].channel.as_deref()), (None, None));
    }
}
