//! Dramatiq provider: a queue of Dramatiq's Redis broker (`dramatiq.brokers.redis`),
//! read the way its dispatch script (`brokers/redis/dispatch.lua`, Dramatiq 2.2) keeps it.
//!
//! **Measures** (keys behind the broker's `namespace`, `dramatiq` by default)
//! - `visible`: `LLEN <ns>:<q>` (ids of messages ready to be fetched), plus what dead
//!   workers fetched and never acked: Dramatiq's maintenance pushes those back onto
//!   `<ns>:<q>`, so they are work waiting for a worker (and only a running worker's
//!   maintenance brings them back: at zero replicas they would wait forever otherwise).
//! - `in_flight`: the sum of `SCARD <ns>:__acks__.<worker>.<q>` over the live workers:
//!   messages fetched and not acked, whether running or prefetched (a worker fetches up to
//!   twice its threads). A worker is live while its last heartbeat (the score in
//!   `<ns>:__heartbeats__`, written by every dispatch call) is newer than the broker's
//!   `heartbeat_timeout`, the rule Dramatiq's maintenance uses to declare workers dead.
//! - `delayed`: `LLEN <ns>:<q>.DQ` plus the live workers' `<q>.DQ` ack sets: delayed
//!   messages (and retries waiting for their backoff). Workers fetch them early and hold
//!   them in memory until their eta, then enqueue them on `<q>`; they are not deliverable
//!   before, so they do not count as backlog.
//! - `idle`: `true` when nothing is visible or in flight, else `false`: the ack sets hold
//!   every message a worker has, so an empty queue with empty ack sets is idle for sure.
//! - `workers` (with `client_names=true`): per live worker, busy when it holds messages of
//!   the queue, mapped to its pod through the name of its Redis connections (`clients`).
//!
//! **Cost per poll**: one `EVALSHA` of a read-only script (`poll.lua`) that reads the
//! lists, the heartbeats and two ack sets per worker id in the heartbeats (`O(workers)`,
//! no `KEYS`/`SCAN`); atomic, so a message moving between keys is counted once. With
//! `client_names=true`, `CLIENT LIST` when a live worker is not placed yet (at most every
//! 5 s). Dramatiq itself runs Lua on every call, so scripting is there.
//!
//! **Cannot see**: messages a worker already took from Redis and lost track of without
//! acking (none in Dramatiq's design), consumers as such (Redis has no consumer list), and
//! without `client_names` which pod holds the work.

use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use ::redis::Script;
use ::redis::aio::ConnectionManager;
use async_trait::async_trait;

pub mod clients;
pub mod uri;

use self::clients::Places;
use super::provider::{ConnectFuture, ProviderSpec, ProviderUri, boxed};
use super::redis::location::map_error;
use super::redis::pool::Slot;
use super::{
    ConsumerReport, Credentials, ProviderOptions, QueueError, QueueMetrics, QueueProvider,
};
pub use uri::DramatiqUri;

static POLL_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("poll.lua")));

/// What one run of the poll script read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counts {
    pub visible: u64,
    pub delayed: u64,
    /// Fetched by dead workers and not acked.
    pub orphaned: u64,
    pub orphaned_delayed: u64,
    /// Live workers: (id, held messages of the queue, held delayed messages).
    pub live: Vec<(String, u64, u64)>,
}

type ScriptReply = (u64, u64, u64, u64, Vec<Vec<u8>>, Vec<u64>, Vec<u64>);

impl Counts {
    fn from_reply(reply: ScriptReply) -> Result<Self, String> {
        let (visible, delayed, orphaned, orphaned_delayed, ids, held, held_delayed) = reply;
        if ids.len() != held.len() || ids.len() != held_delayed.len() {
            return Err(format!(
                "the poll script returned {} worker ids for {} and {} counts",
                ids.len(),
                held.len(),
                held_delayed.len()
            ));
        }
        let live = ids
            .into_iter()
            .zip(held)
            .zip(held_delayed)
            .map(|((id, n), d)| (String::from_utf8_lossy(&id).into_owned(), n, d))
            .collect();
        Ok(Counts {
            visible,
            delayed,
            orphaned,
            orphaned_delayed,
            live,
        })
    }

    fn in_flight(&self) -> u64 {
        self.live.iter().map(|(_, n, _)| n).sum()
    }

    /// The sample these counts make (reports added by the caller).
    pub fn metrics(&self, sampled_at: jiff::Timestamp) -> QueueMetrics {
        let visible = self.visible.saturating_add(self.orphaned);
        let in_flight = self.in_flight();
        let delayed = self
            .live
            .iter()
            .map(|(_, _, d)| d)
            .sum::<u64>()
            .saturating_add(self.delayed)
            .saturating_add(self.orphaned_delayed);
        QueueMetrics {
            visible,
            in_flight: Some(in_flight),
            delayed: Some(delayed),
            sent_per_minute: None,
            consumers: None,
            idle: Some(visible == 0 && in_flight == 0),
            partial: None,
            sampled_at,
            workers: None,
            missing: Vec::new(),
        }
    }
}

/// Polls one Dramatiq queue; see the module documentation.
pub struct DramatiqProvider {
    label: String,
    namespace: String,
    queue: String,
    heartbeat_timeout: Duration,
    /// Keeps the shared connection in the pool while this queue uses it.
    _connection: Arc<Slot>,
    conn: ConnectionManager,
    /// `Some` with `client_names=true`: where the live workers run.
    places: Option<Places>,
}

impl DramatiqProvider {
    pub async fn connect(
        uri: &DramatiqUri,
        creds: &Credentials,
        opts: &ProviderOptions,
    ) -> Result<Self, QueueError> {
        let label = uri.redacted();
        let (connection, conn) = uri.location.connect(creds, opts, &label).await?;
        Ok(Self {
            label,
            namespace: uri.namespace.clone(),
            queue: uri.location.queue.clone(),
            heartbeat_timeout: uri.heartbeat_timeout(),
            _connection: connection,
            conn,
            places: uri.client_names.then(Places::default),
        })
    }

    async fn counts(&mut self) -> Result<Counts, QueueError> {
        // Heartbeats carry the workers' clocks; the controller's is compared with them as
        // Dramatiq's maintenance compares the calling worker's.
        let now_ms = jiff::Timestamp::now().as_millisecond();
        let timeout_ms = i64::try_from(self.heartbeat_timeout.as_millis()).unwrap_or(i64::MAX);
        let cutoff = now_ms.saturating_sub(timeout_ms);
        let reply: ScriptReply = POLL_SCRIPT
            .arg(&self.namespace)
            .arg(&self.queue)
            .arg(cutoff)
            .invoke_async(&mut self.conn)
            .await
            .map_err(|e| map_error(&self.label, &e))?;
        Counts::from_reply(reply).map_err(|detail| QueueError::BadResponse {
            queue: self.label.clone(),
            detail,
        })
    }

    /// Per-worker reports for the live workers whose pod is known; `Err` says why there
    /// are none this time (for `partial`).
    async fn reports(&mut self, live: &[(String, u64, u64)]) -> Result<Vec<ConsumerReport>, String> {
        let Some(places) = self.places.as_mut() else {
            return Ok(Vec::new());
        };
        let ids: Vec<String> = live.iter().map(|(id, _, _)| id.clone()).collect();
        let now = Instant::now();
        let mut lookup_error = None;
        if places.wants_lookup(&ids, now) {
            let reply: Result<String, _> = ::redis::cmd("CLIENT")
                .arg("LIST")
                .query_async(&mut self.conn)
                .await;
            match reply {
                Ok(list) => places.learn(&list, &ids, now),
                Err(e) => {
                    places.failed(now);
                    lookup_error = Some(format!(
                        "CLIENT LIST failed ({e}): no per-worker report"
                    ));
                }
            }
        }
        let reports: Vec<ConsumerReport> = live
            .iter()
            .filter_map(|(id, held, _)| {
                let place = places.get(id)?;
                Some(ConsumerReport {
                    pod: place.pod.clone(),
                    ip: place.ip.clone(),
                    busy: *held > 0,
                    // One worker process is one holder of messages, whatever the
                    // number of its connections.
                    channel: Some(id.clone()),
                })
            })
            .collect();
        match lookup_error {
            Some(e) if reports.is_empty() => Err(e),
            _ => Ok(reports),
        }
    }
}

#[async_trait]
impl QueueProvider for DramatiqProvider {
    async fn poll(&mut self) -> Result<QueueMetrics, QueueError> {
        let sampled_at = jiff::Timestamp::now();
        let counts = self.counts().await?;
        let mut metrics = counts.metrics(sampled_at);
        if self.places.is_some() {
            match self.reports(&counts.live).await {
                Ok(reports) => metrics.workers = Some(reports),
                Err(why) => metrics.partial = Some(why),
            }
        }
        Ok(metrics)
    }
}

impl ProviderUri for DramatiqUri {
    const SPEC: ProviderSpec = ProviderSpec {
        name: "dramatiq",
        aliases: &[],
        schemes: &["redis+dramatiq", "rediss+dramatiq"],
        example: "redis+dramatiq://redis:6379/0/default",
        default_interval: Duration::from_secs(1),
        interval_flag: "--dramatiq-poll-interval",
    };

    fn parse(input: &str, scheme: &str) -> Result<Self, String> {
        uri::parse(input, scheme)
    }

    fn redacted(&self) -> String {
        DramatiqUri::redacted(self)
    }

    fn connect<'a>(
        &'a self,
        creds: &'a Credentials,
        opts: &'a ProviderOptions,
    ) -> ConnectFuture<'a> {
        boxed(DramatiqProvider::connect(self, creds, opts))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(live: &[(&str, u64, u64)]) -> ScriptReply {
        (
            3,
            1,
            2,
            4,
            live.iter().map(|(id, _, _)| id.as_bytes().to_vec()).collect(),
            live.iter().map(|(_, n, _)| *n).collect(),
            live.iter().map(|(_, _, d)| *d).collect(),
        )
    }

    #[test]
    fn live_workers_hold_the_in_flight_and_dead_ones_wait_as_visible() {
        let counts =
            Counts::from_reply(reply(&[("w1", 2, 5), ("w2", 0, 0)])).expect("well formed");
        let m = counts.metrics(jiff::Timestamp::UNIX_EPOCH);
        // 3 waiting + 2 orphaned by dead workers.
        assert_eq!(m.visible, 5);
        assert_eq!(m.in_flight, Some(2));
        // 1 in the delay queue, 5 held by w1, 4 orphaned.
        assert_eq!(m.delayed, Some(10));
        assert_eq!(m.idle, Some(false));
        assert_eq!(m.workers, None);
    }

    #[test]
    fn idle_only_with_nothing_visible_and_nothing_held() {
        let quiet = |in_flight: u64| Counts {
            visible: 0,
            delayed: 7,
            orphaned: 0,
            orphaned_delayed: 0,
            live: vec![("w".into(), in_flight, 3)],
        };
        let at = jiff::Timestamp::UNIX_EPOCH;
        assert_eq!(quiet(0).metrics(at).idle, Some(true));
        assert_eq!(quiet(1).metrics(at).idle, Some(false));
        let empty = Counts::from_reply((0, 0, 0, 0, vec![], vec![], vec![])).expect("empty");
        assert_eq!(empty.metrics(at).idle, Some(true));
        assert_eq!(empty.metrics(at).in_flight, Some(0));
    }

    #[test]
    fn a_malformed_reply_is_refused() {
        let bad = (0, 0, 0, 0, vec![b"w".to_vec()], vec![], vec![0]);
        assert!(Counts::from_reply(bad).is_err());
    }
}
