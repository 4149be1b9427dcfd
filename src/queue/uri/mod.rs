//! The `queueURI` grammar: one scheme per provider, parsed with the `url` crate.
//!
//! Every parsed form keeps credentials found in userinfo apart from the address, so that
//! [`QueueUri::redacted`] can print the queue without them. Unknown query parameters are
//! rejected (a typo must not silently fall back to a default), except for HTTP URIs whose
//! query belongs to the endpoint.
//!
//! # Grammar
//!
//! Each provider's grammar lives next to the provider (`sqs/uri.rs`, `rabbitmq/uri.rs`,
//! `redis/uri.rs`, `beanstalk/uri.rs`, `http/uri.rs`); the scheme picks the provider through
//! the provider table ([`super::kinds`]). The README's table lists every form.
//!
//! Path segments (queue, vhost, tube) and query values are percent-decoded; write
//! `%2F` for a `/` inside a name and `%2B` for a `+` in a query value. Credentials may be
//! given in the userinfo (`user:pass@`), but a Secret referenced by the WPA takes
//! precedence. SQS and beanstalkd URIs take no credentials.

pub(crate) mod parts;
pub(crate) mod redact;
#[cfg(test)]
mod tests;

pub use super::beanstalk::uri::BeanstalkUri;
pub use super::http::uri::HttpUri;
pub use super::rabbitmq::uri::AmqpUri;
pub use super::redis::uri::{DEFAULT_PRIORITY_STEPS, DEFAULT_SEPARATOR, RedisUri};
pub use super::sqs::uri::SqsUri;
pub use redact::redact_input;

use super::kinds::{self, ProviderKind};
use parts::quote;

/// A parsed `queueURI`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum QueueUri {
    Sqs(SqsUri),
    Rabbitmq(AmqpUri),
    Redis(RedisUri),
    Beanstalk(BeanstalkUri),
    Http(HttpUri),
}

/// A `queueURI` that cannot be used; the message names the problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid queueURI {uri}: {problem}")]
pub struct UriError {
    /// The URI with credentials redacted.
    pub uri: String,
    pub problem: String,
}

/// Shows whether a secret is set without showing it.
pub(crate) fn redacted(secret: &Option<String>) -> &'static str {
    if secret.is_some() {
        "<redacted>"
    } else {
        "<none>"
    }
}

/// Longer inputs are refused before parsing; no real queue URI comes close.
const MAX_URI_LEN: usize = 4096;

impl QueueUri {
    /// Parses a `queueURI` (see the module documentation for the grammar).
    pub fn parse(input: &str) -> Result<QueueUri, UriError> {
        let fail = |problem: String| UriError {
            uri: quote(&redact_input(input)),
            problem,
        };
        let trimmed = input.trim();
        if trimmed.is_empty() {
            return Err(fail("the URI is empty".to_string()));
        }
        if trimmed.len() > MAX_URI_LEN {
            return Err(fail(format!(
                "the URI is {} bytes long; at most {MAX_URI_LEN} are accepted",
                trimmed.len()
            )));
        }
        // The URL parser silently drops tabs and newlines; a URI containing them was
        // mangled somewhere (YAML folding, a pasted secret) and must not be guessed at.
        if trimmed.chars().any(char::is_control) {
            return Err(fail(
                "the URI contains control characters (tab, newline...)".to_string(),
            ));
        }
        let Some((scheme, _)) = trimmed.split_once("://") else {
            return Err(fail(format!(
                "no scheme (`scheme://`); supported schemes: {}",
                kinds::supported_schemes()
            )));
        };
        let scheme = scheme.to_ascii_lowercase();
        let parsed = match kinds::by_scheme(&scheme) {
            Some(spec) => (spec.parse)(trimmed, &scheme),
            None => Err(format!(
                "unknown scheme `{}`; supported schemes: {}",
                quote(&scheme),
                kinds::supported_schemes()
            )),
        };
        parsed.map_err(fail)
    }

    /// The provider family this URI selects.
    pub fn kind(&self) -> ProviderKind {
        match self {
            QueueUri::Sqs(_) => ProviderKind::Sqs,
            QueueUri::Rabbitmq(_) => ProviderKind::Rabbitmq,
            QueueUri::Redis(_) => ProviderKind::Redis,
            QueueUri::Beanstalk(_) => ProviderKind::Beanstalkd,
            QueueUri::Http(_) => ProviderKind::Http,
        }
    }

    /// The URI in canonical form with every secret replaced by `***`: safe for logs,
    /// events, errors and metric labels.
    pub fn redacted(&self) -> String {
        match self {
            QueueUri::Sqs(u) => u.redacted(),
            QueueUri::Rabbitmq(u) => u.redacted(),
            QueueUri::Redis(u) => u.redacted(),
            QueueUri::Beanstalk(u) => u.redacted(),
            QueueUri::Http(u) => u.redacted(),
        }
    }
}

impl std::fmt::Display for QueueUri {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl std::str::FromStr for QueueUri {
    type Err = UriError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        QueueUri::parse(s)
    }
}
