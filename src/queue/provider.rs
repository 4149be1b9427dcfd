//! The seam between the crate and a broker or job framework: what a provider's folder
//! gives (a row of facts, [`ProviderSpec`], and its parsed `queueURI` type implementing
//! [`ProviderUri`]), and nothing else. A folder imports this file and the shared helpers
//! (`uri::parts`, the error and metric types), never the provider table (`kinds.rs`), which
//! is the one file that names every provider.

use std::fmt;
use std::future::Future;
use std::hash::Hash;
use std::pin::Pin;
use std::time::Duration;

use super::events::EventSource;
use super::{Credentials, ProviderOptions, QueueError, QueueProvider};

/// A provider's facts. Everything else the crate says about a provider is derived from
/// these: `--queue-services` names, the CRD's scheme rule and its message, the poll
/// interval flag with its environment variable and default, the metric label, `inspect`'s
/// `provider`, error messages listing the schemes, the Helm chart's schema.
#[derive(Debug)]
pub struct ProviderSpec {
    /// In `--queue-services`, metrics labels and `inspect` output.
    pub name: &'static str,
    /// Other names `--queue-services` accepts.
    pub aliases: &'static [&'static str],
    /// Lower-case `queueURI` schemes this provider parses.
    pub schemes: &'static [&'static str],
    /// A `queueURI` this provider parses: the docs and the drift tests use it.
    pub example: &'static str,
    /// Poll interval when neither the WPA nor the controller flag sets one.
    pub default_interval: Duration,
    /// The controller flag that sets this provider's poll interval (its environment
    /// variable is `WPA_` and the flag in upper snake case).
    pub interval_flag: &'static str,
}

impl ProviderSpec {
    /// The environment variable of [`Self::interval_flag`]:
    /// `--redis-poll-interval` -> `WPA_REDIS_POLL_INTERVAL`.
    pub fn interval_env(&self) -> String {
        format!(
            "WPA_{}",
            self.interval_flag
                .trim_start_matches("--")
                .replace('-', "_")
                .to_ascii_uppercase()
        )
    }
}

/// A provider's connect future, boxed: inline, the registry's poll-loop future would be as
/// large as the largest provider's (SQS, ~11 KiB) for every queue.
pub type ConnectFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Box<dyn QueueProvider>, QueueError>> + Send + 'a>>;

/// A parsed `queueURI` of one provider: how it is read, printed, checked and polled.
pub trait ProviderUri:
    Sized + Clone + PartialEq + Eq + Hash + fmt::Debug + Send + Sync + 'static
{
    /// The provider's facts.
    const SPEC: ProviderSpec;

    /// Parses a trimmed `queueURI` whose scheme (lower case) is one of `SPEC.schemes`.
    fn parse(input: &str, scheme: &str) -> Result<Self, String>;

    /// The URI in canonical form with every secret replaced by `***`.
    fn redacted(&self) -> String;

    /// What can be checked without contacting the broker; a failure cannot be retried
    /// away.
    fn validate(&self, _creds: &Credentials) -> Result<(), QueueError> {
        Ok(())
    }

    /// Builds (and, where the provider does so, connects) the poller.
    fn connect<'a>(
        &'a self,
        creds: &'a Credentials,
        opts: &'a ProviderOptions,
    ) -> ConnectFuture<'a>;

    /// Where Celery's worker events for this queue are published, for brokers that carry
    /// them (Redis, RabbitMQ).
    fn celery_events(&self, _creds: &Credentials) -> Option<EventSource> {
        None
    }
}

/// Boxes a provider's constructor into a [`ConnectFuture`].
pub fn boxed<'a, P: QueueProvider>(
    connecting: impl Future<Output = Result<P, QueueError>> + Send + 'a,
) -> ConnectFuture<'a> {
    Box::pin(async move { Ok(Box::new(connecting.await?) as Box<dyn QueueProvider>) })
}
