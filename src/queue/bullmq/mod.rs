//! BullMQ provider: a BullMQ queue's jobs and workers, read from its keys in Redis
//! (checked against bullmq 6.7.6; docs/frameworks/bullmq.md says what is counted and why).
//!
//! **Measures** (keys `<prefix>:<queue>:<type>`, prefix `bull` by default)
//! - `visible`: jobs a worker would take now: `LLEN wait` + `ZCARD prioritized` + the
//!   `delayed` jobs already due. BullMQ moves due delayed jobs to `wait` lazily, when a
//!   worker fetches its next job (`promoteDelayedJobs` in `moveToActive`), so with no worker
//!   running they stay in `delayed` however late they are: they are backlog. A score is
//!   `due_ms * 0x1000 + n`; "due" is `score <= (now_ms + 1) * 0x1000 - 1`, BullMQ's bound.
//!   A legacy (v4) marker at the tail of `wait` (`0:<ts>`) is not a job and is not counted,
//!   as `getCounts` does.
//! - `delayed`: delayed jobs not yet due; plus, while the queue is paused (`paused` field of
//!   the `meta` hash, BullMQ >= 5), every job that would be visible: workers do not take
//!   jobs from a paused queue, so they are not deliverable. Jobs in the legacy `paused`
//!   list (written by BullMQ < 5; moved back to `wait` only by `resume()`) count here too.
//! - `in_flight`: `LLEN active`, the jobs workers are running now (a job enters and leaves
//!   `active` inside BullMQ's Lua scripts, so one sample is exact).
//! - `idle`: `Some(true)` exactly when nothing is visible and nothing is active.
//! - `workers` and `consumers`: the connections `CLIENT LIST` shows with the name BullMQ
//!   gives a Worker's blocking connection, `<prefix>:<base64(queue)>` or, for a Worker
//!   with a `name`, `<prefix>:<base64(queue)>:w:<name>`. Each is one report with `ip` = the
//!   connection's peer address (the pod IP) and, for named Workers, `pod` = the name (the
//!   documented convention is `name: process.env.POD_NAME`). A named Worker is busy when an
//!   active job's hash says `pb` (processed by) = its name. An unnamed Worker cannot be told
//!   apart from another, so it is reported busy whenever any job is active: a worker that
//!   cannot be shown idle is never reported idle. When `CLIENT LIST` is refused (ACL) the
//!   poll is `partial` and has no workers: scale-in then rests on the queue figures only.
//!
//! **Cannot see**: `waiting-children` (parents of flows wait for their children, which are
//! counted in their own queue), rate limits and the global concurrency cap (the backlog is
//! counted even when the queue cannot run more at once), and workers whose connections go
//! through a proxy that hides their address or name.
//!
//! **Cost per poll**: one pipelined round trip (`LLEN`, `LINDEX`, `ZCARD`, `ZCOUNT`,
//! `LRANGE active`, `HEXISTS`, `CLIENT LIST`), and a second one (`HGET <job> pb` per active
//! job, at most [`ACTIVE_READ`]) only while named workers are connected and jobs are
//! active. `CLIENT LIST` returns every connection of the server (~300 bytes each).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use ::redis::Value;
use ::redis::aio::ConnectionManager;
use async_trait::async_trait;

pub mod clients;
pub mod uri;

use self::clients::{WorkerConnection, worker_connections};
use super::provider::{ConnectFuture, ProviderSpec, ProviderUri, boxed};
use super::redis::location::{has_code, map_error};
use super::redis::pool::Slot;
use super::{
    ConsumerReport, Credentials, ProviderOptions, QueueError, QueueMetrics, QueueProvider,
};
use uri::BullmqUri;

/// Most active job ids read per poll to tell busy workers: active jobs are bounded by the
/// workers' concurrency. Beyond it, every worker is reported busy.
pub const ACTIVE_READ: usize = 2000;

/// The low bits of a delayed job's score that order jobs within one millisecond
/// (`getDelayedScore`: `timestamp * 0x1000 + counter`).
const DELAY_SCORE_SCALE: i64 = 0x1000;

/// Polls one BullMQ queue; see the module documentation.
pub struct BullmqProvider {
    label: String,
    uri: BullmqUri,
    /// Keeps the shared connection in the pool while this queue uses it.
    _connection: Arc<Slot>,
    conn: ConnectionManager,
    keys: Keys,
    /// `<prefix>:<base64(queue)>`: the name of this queue's workers' connections.
    connection_name: String,
}

/// The keys one poll reads, named once.
struct Keys {
    wait: String,
    prioritized: String,
    delayed: String,
    active: String,
    meta: String,
    legacy_paused: String,
}

impl BullmqProvider {
    /// Takes (or opens) the pooled connection to the queue's Redis. Credentials from
    /// `creds` (the WPA's Secret) take precedence over the URI's userinfo.
    pub async fn connect(
        uri: &BullmqUri,
        creds: &Credentials,
        opts: &ProviderOptions,
    ) -> Result<Self, QueueError> {
        let label = uri.redacted();
        let (connection, conn) = uri.location.connect(creds, opts, &label).await?;
        Ok(Self {
            keys: Keys {
                wait: uri.key("wait"),
                prioritized: uri.key("prioritized"),
                delayed: uri.key("delayed"),
                active: uri.key("active"),
                meta: uri.key("meta"),
                legacy_paused: uri.key("paused"),
            },
            connection_name: uri.worker_connection_name(),
            uri: uri.clone(),
            _connection: connection,
            conn,
            label,
        })
    }

    fn bad(&self, detail: String) -> QueueError {
        QueueError::BadResponse {
            queue: self.label.clone(),
            detail,
        }
    }

    /// Reads one reply of the first pipeline; a server error there fails the poll.
    fn value<T: ::redis::FromRedisValue>(&self, reply: Value, what: &str) -> Result<T, QueueError> {
        if let Value::ServerError(e) = reply {
            return Err(map_error(&self.label, &e.into()));
        }
        ::redis::from_redis_value(reply).map_err(|e| self.bad(format!("{what} answered {e}")))
    }

    /// Names the key that holds the wrong type (only run after a WRONGTYPE error).
    async fn explain_wrong_type(&mut self) -> QueueError {
        let expected = [
            (&self.keys.wait, "list"),
            (&self.keys.prioritized, "zset"),
            (&self.keys.delayed, "zset"),
            (&self.keys.active, "list"),
            (&self.keys.meta, "hash"),
            (&self.keys.legacy_paused, "list"),
        ];
        let mut pipe = ::redis::pipe();
        for (key, _) in &expected {
            pipe.cmd("TYPE").arg(key.as_str());
        }
        let detail = match pipe.query_async::<Vec<String>>(&mut self.conn).await {
            Ok(types) => {
                let wrong: Vec<String> = expected
                    .iter()
                    .zip(types)
                    .filter(|((_, want), got)| got != "none" && got != want)
                    .map(|((key, want), got)| {
                        format!("key {key:?} is a {got}, not a {want}: not a BullMQ queue")
                    })
                    .collect();
                if wrong.is_empty() {
                    "a key changed type during the poll".to_string()
                } else {
                    wrong.join("; ")
                }
            }
            Err(e) => format!("a key of this queue has the wrong type ({e})"),
        };
        self.bad(detail)
    }

    /// The job ids in `active` whose hash names a worker (`pb`), as names.
    async fn processed_by(&mut self, active_ids: &[String]) -> Result<HashSet<String>, QueueError> {
        let mut pipe = ::redis::pipe();
        for id in active_ids {
            pipe.hget(self.uri.job_key(id), "pb");
        }
        let names: Vec<Option<String>> = match pipe.query_async(&mut self.conn).await {
            Ok(names) => names,
            Err(e) if has_code(&e, &["WRONGTYPE"]) => {
                return Err(self.bad(format!("a job hash of an active job is not a hash ({e})")));
            }
            Err(e) => return Err(map_error(&self.label, &e)),
        };
        Ok(names.into_iter().flatten().collect())
    }
}

/// What the first pipeline read.
struct Counts {
    wait: u64,
    prioritized: u64,
    due: u64,
    delayed_total: u64,
    active: u64,
    active_ids: Vec<String>,
    paused: bool,
    legacy_paused: u64,
    /// `CLIENT LIST`'s text, or why it was refused.
    clients: Result<String, String>,
}

#[async_trait]
impl QueueProvider for BullmqProvider {
    async fn poll(&mut self) -> Result<QueueMetrics, QueueError> {
        let sampled_at = jiff::Timestamp::now();
        let due_bound = sampled_at
            .as_millisecond()
            .saturating_add(1)
            .saturating_mul(DELAY_SCORE_SCALE)
            .saturating_sub(1);
        let k = &self.keys;
        let mut pipe = ::redis::pipe();
        // Errors come back per command, so that a refused CLIENT LIST does not cost the
        // queue figures.
        pipe.ignore_errors()
            .llen(&k.wait)
            .lindex(&k.wait, -1)
            .zcard(&k.prioritized)
            .zcount(&k.delayed, "-inf", due_bound)
            .zcard(&k.delayed)
            .llen(&k.active)
            .lrange(&k.active, 0, (ACTIVE_READ - 1) as isize)
            .hexists(&k.meta, "paused")
            .llen(&k.legacy_paused)
            .cmd("CLIENT")
            .arg("LIST");
        let replies: Vec<Value> = match pipe.query_async(&mut self.conn).await {
            Ok(replies) => replies,
            Err(e) => return Err(map_error(&self.label, &e)),
        };
        // The last reply is CLIENT LIST's; any other command's WRONGTYPE means a key of
        // this queue is not what BullMQ writes: say which.
        let wrong_type = replies
            .iter()
            .rev()
            .skip(1)
            .any(|r| matches!(r, Value::ServerError(e) if e.code() == "WRONGTYPE"));
        if wrong_type {
            return Err(self.explain_wrong_type().await);
        }
        let counts = self.read_counts(replies)?;
        let visible_if_running = counts
            .wait
            .saturating_add(counts.prioritized)
            .saturating_add(counts.due);
        let not_due = counts.delayed_total.saturating_sub(counts.due);
        let (visible, delayed) = if counts.paused {
            (0, not_due.saturating_add(visible_if_running))
        } else {
            (visible_if_running, not_due)
        };
        let delayed = delayed.saturating_add(counts.legacy_paused);
        let (workers, consumers, partial) = match &counts.clients {
            Ok(text) => {
                let found = worker_connections(text, &self.connection_name);
                let reports = self.reports(&found, &counts).await?;
                (Some(reports), Some(found.len() as u64), None)
            }
            Err(why) => (
                None,
                None,
                Some(format!(
                    "CLIENT LIST was refused ({why}): workers are not reported per pod, \
                     scale-in uses the queue figures only"
                )),
            ),
        };
        Ok(QueueMetrics {
            missing: Vec::new(),
            visible,
            in_flight: Some(counts.active),
            delayed: Some(delayed),
            sent_per_minute: None,
            consumers,
            idle: Some(visible == 0 && counts.active == 0),
            partial,
            sampled_at,
            workers,
        })
    }
}

impl BullmqProvider {
    fn read_counts(&self, replies: Vec<Value>) -> Result<Counts, QueueError> {
        let Ok(
            [
                wait,
                tail,
                prioritized,
                due,
                delayed,
                active,
                active_ids,
                paused,
                legacy,
                clients,
            ],
        ) = <[Value; 10]>::try_from(replies)
        else {
            return Err(self.bad("the pipeline did not answer 10 replies".to_string()));
        };
        let wait: u64 = self.value(wait, "LLEN wait")?;
        let tail: Option<String> = self.value(tail, "LINDEX wait")?;
        // BullMQ < 5 kept a marker job id `0:<ts>` at the tail of `wait`.
        let marker = u64::from(tail.is_some_and(|t| t.starts_with("0:")));
        let clients = match clients {
            // The server's own words, e.g. "NOPERM this user has no permissions to run
            // the 'client|list' command" (no secret in them).
            Value::ServerError(e) => Err(format!("{} {}", e.code(), e.details().unwrap_or(""))
                .trim_end()
                .to_string()),
            other => ::redis::from_redis_value::<String>(other)
                .map_err(|e| format!("unreadable answer: {e}")),
        };
        Ok(Counts {
            wait: wait.saturating_sub(marker),
            prioritized: self.value(prioritized, "ZCARD prioritized")?,
            due: self.value(due, "ZCOUNT delayed")?,
            delayed_total: self.value(delayed, "ZCARD delayed")?,
            active: self.value(active, "LLEN active")?,
            active_ids: self.value(active_ids, "LRANGE active")?,
            paused: self.value(paused, "HEXISTS meta paused")?,
            legacy_paused: self.value(legacy, "LLEN paused")?,
            clients,
        })
    }

    /// One report per worker connection: named ones busy when an active job says they
    /// process it, unnamed ones busy whenever anything is active.
    async fn reports(
        &mut self,
        found: &[WorkerConnection],
        counts: &Counts,
    ) -> Result<Vec<ConsumerReport>, QueueError> {
        let any_named = found.iter().any(|w| w.name.is_some());
        // Beyond ACTIVE_READ the ids are not all known: nobody can be shown idle.
        let all_known = counts.active_ids.len() as u64 >= counts.active;
        let busy_names = if any_named && counts.active > 0 && all_known {
            self.processed_by(&counts.active_ids).await?
        } else {
            HashSet::new()
        };
        Ok(found
            .iter()
            .map(|w| {
                let busy = match &w.name {
                    _ if counts.active == 0 => false,
                    _ if !all_known => true,
                    Some(name) => busy_names.contains(name),
                    None => true,
                };
                ConsumerReport {
                    pod: w.name.clone(),
                    ip: w.ip.clone(),
                    busy,
                    channel: None,
                }
            })
            .collect())
    }
}

impl ProviderUri for BullmqUri {
    const SPEC: ProviderSpec = ProviderSpec {
        name: "bullmq",
        aliases: &[],
        schemes: &["redis+bullmq", "rediss+bullmq"],
        example: "redis+bullmq://redis:6379/0/emails",
        default_interval: Duration::from_secs(1),
        interval_flag: "--bullmq-poll-interval",
    };

    fn parse(input: &str, scheme: &str) -> Result<Self, String> {
        uri::parse(input, scheme)
    }

    fn redacted(&self) -> String {
        BullmqUri::redacted(self)
    }

    fn connect<'a>(
        &'a self,
        creds: &'a Credentials,
        opts: &'a ProviderOptions,
    ) -> ConnectFuture<'a> {
        boxed(BullmqProvider::connect(self, creds, opts))
    }
}
