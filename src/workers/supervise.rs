//! Keeps a listener connected: reconnects with exponential backoff and jitter (as the
//! registry's poll loops back off from an unreachable broker), and stops when told to or
//! when nobody receives the events any more.

use std::future::Future;

use backon::BackoffBuilder;
use tokio::sync::{mpsc, watch};

use super::settings::ListenSettings;
use super::{ListenError, WorkerBeat, amqp, redis};
use crate::queue::events::EventSource;

/// Follows the worker events of one [`EventSource`] and sends them to `beats`.
pub struct Listener {
    source: EventSource,
    beats: mpsc::Sender<WorkerBeat>,
    settings: ListenSettings,
    subscribed: watch::Sender<u64>,
    failed: watch::Sender<Option<ListenError>>,
}

impl Listener {
    pub fn new(
        source: EventSource,
        beats: mpsc::Sender<WorkerBeat>,
        settings: ListenSettings,
    ) -> Self {
        Self {
            source,
            beats,
            settings,
            subscribed: watch::Sender::new(0),
            failed: watch::Sender::new(None),
        }
    }

    pub fn source(&self) -> &EventSource {
        &self.source
    }

    /// How many times a subscription has been set up so far: it changes on every
    /// (re)connection, so a caller can wait until events can arrive.
    pub fn subscriptions(&self) -> watch::Receiver<u64> {
        self.subscribed.subscribe()
    }

    /// The last failure, updated on every failed connection or lost subscription, so a
    /// caller can tell "listening" from "retrying".
    pub fn failures(&self) -> watch::Receiver<Option<ListenError>> {
        self.failed.subscribe()
    }

    /// One connection: listens until it fails (`Err`, to be retried) or nobody receives
    /// the events any more (`Ok`).
    pub async fn listen_once(&self) -> Result<(), ListenError> {
        match &self.source {
            EventSource::Redis(source) => {
                redis::listen(source, &self.beats, &self.subscribed, &self.settings).await
            }
            EventSource::Rabbitmq(source) => {
                amqp::listen(source, &self.beats, &self.subscribed, &self.settings).await
            }
        }
    }

    /// Listens, reconnecting with backoff, until `stop` resolves or the receiver of the
    /// events is dropped.
    pub async fn run(self, stop: impl Future<Output = ()>) {
        let broker = self.source.redacted();
        let mut stop = std::pin::pin!(stop);
        let mut backoff: Option<backon::ExponentialBackoff> = None;
        // The error last logged at warn level: a broker that stays down is logged once.
        let mut logged: Option<ListenError> = None;
        let mut failing = false;
        loop {
            let before = *self.subscribed.borrow();
            let result = tokio::select! {
                () = &mut stop => return,
                result = self.listen_once() => result,
            };
            let error = match result {
                Ok(()) => {
                    tracing::debug!(broker = %broker, "nobody receives worker events; stopping");
                    return;
                }
                Err(error) => error,
            };
            if *self.subscribed.borrow() != before {
                // The connection worked for a while: reconnect at once-ish, and say so
                // if it had been failing before.
                if failing {
                    tracing::info!(broker = %broker, "worker events flowed again");
                }
                backoff = None;
                logged = None;
            }
            failing = true;
            self.failed.send_replace(Some(error.clone()));
            if logged.as_ref() == Some(&error) {
                tracing::debug!(broker = %broker, %error, "worker events: still failing");
            } else {
                tracing::warn!(broker = %broker, %error, "worker events interrupted; reconnecting");
                logged = Some(error);
            }
            let cap = self.settings.max_backoff;
            let delay = backoff
                .get_or_insert_with(|| {
                    backon::ExponentialBuilder::default()
                        .with_min_delay(self.settings.min_backoff.min(cap))
                        .with_max_delay(cap)
                        .with_factor(2.0)
                        .with_jitter()
                        .without_max_times()
                        .build()
                })
                .next()
                .unwrap_or(cap)
                .min(cap);
            tokio::select! {
                () = &mut stop => return,
                () = self.beats.closed() => return,
                () = tokio::time::sleep(delay) => {}
            }
        }
    }
}
