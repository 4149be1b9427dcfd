//! The provider table: one row per broker, holding everything the rest of the crate needs to
//! know about it (name, `queueURI` schemes and their parser, default poll interval and the
//! controller flag that changes it, configuration check and constructor).
//!
//! Each row is a `SPEC` constant in its provider's module; [`PROVIDERS`] lists them. Adding a
//! broker means one module (provider and grammar), one row here, one [`ProviderKind`] variant
//! and one [`super::QueueUri`] variant; the controller's per-provider interval flag is
//! checked against the row by a test in `controller::config`.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use serde::Serialize;

use super::uri::QueueUri;
use super::{Credentials, ProviderOptions, QueueError, QueueProvider};

/// The broker family of a queue; also the `provider` field of `inspect` output and the
/// `provider` label of the poll metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    Sqs,
    Rabbitmq,
    Redis,
    Beanstalkd,
    Http,
}

/// A provider's connect future, boxed: inline, the registry's poll-loop future would be as
/// large as the largest provider's (SQS, ~11 KiB) for every queue.
pub type ConnectFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Box<dyn QueueProvider>, QueueError>> + Send + 'a>>;

/// One broker's row.
pub struct ProviderSpec {
    pub kind: ProviderKind,
    /// In `--queue-services`, metrics labels and `inspect` output.
    pub name: &'static str,
    /// Other names `--queue-services` accepts.
    pub aliases: &'static [&'static str],
    /// Lower-case `queueURI` schemes this provider parses.
    pub schemes: &'static [&'static str],
    /// Poll interval when neither the WPA nor the controller flag sets one.
    pub default_interval: Duration,
    /// The controller flag that sets this provider's poll interval.
    pub interval_flag: &'static str,
    /// Parses a trimmed `queueURI` whose scheme (lower case) is one of `schemes`.
    pub parse: fn(&str, &str) -> Result<QueueUri, String>,
    /// What can be checked without contacting the broker; a failure cannot be retried away.
    pub validate: fn(&QueueUri, &Credentials) -> Result<(), QueueError>,
    /// Builds (and, where the provider does so, connects) the poller.
    pub connect:
        for<'a> fn(&'a QueueUri, &'a Credentials, &'a ProviderOptions) -> ConnectFuture<'a>,
}

/// Every provider built into this binary, in [`ProviderKind`] order.
pub static PROVIDERS: [&ProviderSpec; 5] = [
    &super::sqs::SPEC,
    &super::rabbitmq::SPEC,
    &super::redis::SPEC,
    &super::beanstalk::SPEC,
    &super::http::SPEC,
];

impl ProviderKind {
    /// This provider's row (a test keeps [`PROVIDERS`] in enum order).
    pub fn spec(self) -> &'static ProviderSpec {
        PROVIDERS[self as usize]
    }

    /// Every provider kind.
    pub fn all() -> impl Iterator<Item = ProviderKind> {
        PROVIDERS.iter().map(|spec| spec.kind)
    }

    /// The kind named `name` (or one of its aliases) in `--queue-services`.
    pub fn from_name(name: &str) -> Option<ProviderKind> {
        PROVIDERS
            .iter()
            .find(|spec| spec.name == name || spec.aliases.contains(&name))
            .map(|spec| spec.kind)
    }
}

impl fmt::Display for ProviderKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.spec().name)
    }
}

/// The row whose schemes include `scheme` (lower case).
pub fn by_scheme(scheme: &str) -> Option<&'static ProviderSpec> {
    PROVIDERS
        .iter()
        .copied()
        .find(|spec| spec.schemes.contains(&scheme))
}

/// The names `--queue-services` knows, for error messages.
pub fn service_names() -> String {
    PROVIDERS
        .iter()
        .map(|spec| spec.name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Every scheme with its provider, for error messages.
pub fn supported_schemes() -> String {
    PROVIDERS
        .iter()
        .map(|spec| format!("{} ({})", spec.schemes.join(", "), spec.name))
        .collect::<Vec<_>>()
        .join("; ")
}

/// A `validate` for providers with nothing to check offline.
pub(crate) fn nothing_to_validate(_: &QueueUri, _: &Credentials) -> Result<(), QueueError> {
    Ok(())
}

/// The error for a table row handed another provider's URI (a bug, not user input).
pub(crate) fn wrong_kind(uri: &QueueUri, expected: ProviderKind) -> QueueError {
    QueueError::Config(format!(
        "internal error: the {expected} provider was given {}",
        uri.redacted()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_in_enum_order_with_unique_names_and_schemes() {
        let mut names = Vec::new();
        let mut schemes = Vec::new();
        for (index, spec) in PROVIDERS.iter().enumerate() {
            assert_eq!(spec.kind as usize, index, "{} is out of order", spec.name);
            assert_eq!(spec.kind.spec().name, spec.name);
            assert_eq!(
                serde_json::to_value(spec.kind).unwrap(),
                serde_json::json!(spec.name),
                "inspect output and metrics use the same name"
            );
            names.push(spec.name);
            names.extend(spec.aliases);
            schemes.extend(spec.schemes);
            assert!(spec.interval_flag.starts_with("--"));
            assert!(!spec.default_interval.is_zero());
        }
        let unique = |v: &Vec<&str>| v.iter().collect::<std::collections::HashSet<_>>().len();
        assert_eq!(unique(&names), names.len(), "{names:?}");
        assert_eq!(unique(&schemes), schemes.len(), "{schemes:?}");
    }

    #[test]
    fn names_and_schemes_find_their_row() {
        assert_eq!(
            ProviderKind::from_name("beanstalk"),
            Some(ProviderKind::Beanstalkd)
        );
        assert_eq!(ProviderKind::from_name("redis"), Some(ProviderKind::Redis));
        assert_eq!(ProviderKind::from_name("kafka"), None);
        assert_eq!(
            by_scheme("rediss").map(|s| s.kind),
            Some(ProviderKind::Redis)
        );
        assert_eq!(
            by_scheme("https+json").map(|s| s.kind),
            Some(ProviderKind::Http)
        );
        assert_eq!(by_scheme("https").map(|s| s.kind), Some(ProviderKind::Sqs));
        assert!(by_scheme("nope").is_none());
        assert_eq!(ProviderKind::all().count(), PROVIDERS.len());
    }

    #[test]
    fn every_parsed_uri_names_the_row_that_parsed_it() {
        for (input, kind) in [
            ("https://sqs.eu-west-1.amazonaws.com/1/q", ProviderKind::Sqs),
            ("amqp://h/%2F/q", ProviderKind::Rabbitmq),
            ("redis://h/0/q", ProviderKind::Redis),
            ("beanstalk://h/t", ProviderKind::Beanstalkd),
            ("http+json://h/metrics", ProviderKind::Http),
        ] {
            assert_eq!(QueueUri::parse(input).unwrap().kind(), kind, "{input}");
        }
    }
}
