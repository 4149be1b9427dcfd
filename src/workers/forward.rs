//! Hands parsed events to the listener's owner, and logs the ones that cannot be read
//! without flooding the log: every worker repeats its event every 2 s, so an unreadable
//! format (a pickle `event_serializer`, say) is logged at warn level once, then at debug.

use tokio::sync::mpsc;

use super::WorkerBeat;
use super::parse::ParseError;

pub(super) struct Forwarder<'a> {
    beats: &'a mpsc::Sender<WorkerBeat>,
    broker: &'a str,
    logged: Option<ParseError>,
}

/// Nobody receives the beats any more: the listener should stop.
pub(super) struct Closed;

impl<'a> Forwarder<'a> {
    pub(super) fn new(beats: &'a mpsc::Sender<WorkerBeat>, broker: &'a str) -> Self {
        Self {
            beats,
            broker,
            logged: None,
        }
    }

    /// Sends a beat, or logs why the message `origin` (channel, routing key) was skipped.
    /// Waits while the receiver is full: events are small and few, and dropping an
    /// `Offline` would leave a worker looking alive until its heartbeats time out.
    pub(super) async fn forward(
        &mut self,
        parsed: Result<WorkerBeat, ParseError>,
        origin: &str,
    ) -> Result<(), Closed> {
        match parsed {
            Ok(beat) => {
                tracing::trace!(broker = %self.broker, origin, ?beat, "worker event");
                self.beats.send(beat).await.map_err(|_| Closed)
            }
            Err(error) => {
                if self.logged.as_ref() == Some(&error) {
                    tracing::debug!(broker = %self.broker, origin, %error, "worker event skipped");
                } else {
                    tracing::warn!(broker = %self.broker, origin, %error, "cannot read a worker event; skipping it");
                    self.logged = Some(error);
                }
                Ok(())
            }
        }
    }
}
