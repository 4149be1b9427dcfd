//! Celery worker events: which workers are alive and how many tasks each one is running.
//!
//! The queue providers see messages, not workers: with Celery's default early ack a task
//! that is running is in no list and no `unacked` hash. Every Celery worker announces
//! itself instead: `worker-online` at start, `worker-heartbeat` every `freq` seconds (2 s)
//! with `active` (tasks executing now) and `processed`, and `worker-offline` on warm
//! shutdown. This module listens to those events on the broker a queue lives on and turns
//! each into a [`WorkerBeat`].
//!
//! - [`EventSource`] (in `queue::events`): which broker's events to listen to, derived
//!   from a queue URI by its provider.
//! - [`parse`]: the wire formats (pure, never panics).
//! - [`redis`] and [`amqp`]: one connection's listener each.
//! - [`supervise`]: the reconnecting loop around them ([`Listener`]).
//!
//! Wire formats, checked against Celery 5.7.0 / kombu 5.7.0 workers (fixtures in
//! `tests/celery/events/`):
//! - Redis: `PUBLISH <global_keyprefix>/<db>.celeryev/worker.<event>` with kombu's JSON
//!   envelope (`body` base64 of the event JSON, `content-type: application/json`,
//!   `content-encoding: utf-8`, `properties.body_encoding: base64`,
//!   `properties.delivery_info: {exchange: celeryev, routing_key: worker.<event>}`,
//!   `headers.hostname`). Redis channels are global, not per database: the `/<db>.` in the
//!   name is what keeps databases apart.
//! - AMQP: topic exchange `celeryev` (durable, not auto-delete, no arguments), routing key
//!   `worker.<event>`, body the event JSON itself, `content_type: application/json`,
//!   `content_encoding: utf-8`, `delivery_mode: 1`, header `hostname`.

pub mod amqp;
pub mod drain;
mod forward;
pub mod parse;
pub mod redis;
pub mod settings;
pub mod signals;
pub mod supervise;
pub mod table;

pub use crate::queue::events::{AmqpEvents, EventSource, RedisEvents};
pub use parse::ParseError;
pub use settings::ListenSettings;
pub use signals::{LinkState, Listen, SignalView, WorkerSignals};
pub use supervise::Listener;
pub use table::{WorkerSeen, WorkerTable};

/// The listener [`WorkerSignals`] runs for each broker: a [`Listener`] that reconnects by
/// itself, its subscriptions and failures reported as [`LinkState`]s.
pub fn listen_fn(settings: ListenSettings) -> Listen {
    std::sync::Arc::new(move |source, beats, report, stop| {
        let listener = Listener::new(source, beats, settings.clone());
        let mut subscriptions = listener.subscriptions();
        let mut failures = listener.failures();
        Box::pin(async move {
            let follow = async move {
                loop {
                    tokio::select! {
                        changed = subscriptions.changed() => {
                            if changed.is_err() {
                                return;
                            }
                            report(LinkState::Listening(jiff::Timestamp::now()));
                        }
                        changed = failures.changed() => {
                            if changed.is_err() {
                                return;
                            }
                            let error = failures
                                .borrow_and_update()
                                .as_ref()
                                .map(ToString::to_string)
                                .unwrap_or_default();
                            report(LinkState::Failed(error));
                        }
                    }
                }
            };
            tokio::select! {
                () = listener.run(stop.cancelled_owned()) => {}
                () = follow => {}
            }
        })
    })
}

/// What a worker event says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BeatKind {
    /// `worker-heartbeat`: sent every `freq` seconds while the worker runs.
    Heartbeat,
    /// `worker-online`: the worker started consuming.
    Online,
    /// `worker-offline`: the worker is shutting down (warm shutdown; a killed worker sends
    /// nothing and is only noticed by its missing heartbeats).
    Offline,
}

/// One worker event, reduced to what scaling needs.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerBeat {
    /// The worker's node name (`celery@host`, or what `--hostname` says).
    pub hostname: String,
    pub kind: BeatKind,
    /// Tasks executing now (not prefetched ones).
    pub active: u32,
    /// Tasks the worker has received since it started.
    pub processed: u64,
    /// Heartbeat interval in seconds (2.0 when the event does not say).
    pub freq: f64,
    /// When the worker sent the event, in seconds since the epoch by the worker's clock.
    pub sent_at: Option<f64>,
}

/// Why a listener stopped. Errors name the broker without its password, so they can be
/// logged as they are. Every one of them is worth retrying later: the supervisor does so
/// with backoff.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ListenError {
    /// Could not connect or subscribe (refused, timed out, DNS, TLS, server error).
    #[error("cannot subscribe to worker events on {broker}: {detail}")]
    Subscribe { broker: String, detail: String },
    /// The broker refused the credentials or the permissions.
    #[error("access to worker events on {broker} was denied: {detail}")]
    Denied { broker: String, detail: String },
    /// The connection was subscribed and then dropped or stopped answering.
    #[error("the worker-event connection to {broker} was lost: {detail}")]
    Lost { broker: String, detail: String },
    /// The source cannot be used as configured (a retry only helps after a fix).
    #[error("invalid worker-event source {broker}: {detail}")]
    Config { broker: String, detail: String },
}

impl ListenError {
    /// Maps a provider error met while connecting to the source.
    fn connecting(error: crate::queue::QueueError, broker: &str) -> Self {
        use crate::queue::QueueError;
        let broker = broker.to_string();
        match error {
            QueueError::Denied { detail, .. } => ListenError::Denied { broker, detail },
            QueueError::Config(detail) => ListenError::Config { broker, detail },
            QueueError::Uri(e) => ListenError::Config {
                broker,
                detail: e.to_string(),
            },
            QueueError::NotFound { queue } => ListenError::Subscribe {
                broker,
                detail: format!("{queue} does not exist"),
            },
            QueueError::Unavailable { detail, .. } | QueueError::BadResponse { detail, .. } => {
                ListenError::Subscribe { broker, detail }
            }
        }
    }
}
