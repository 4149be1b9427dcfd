//! The `queueURI` grammar: one scheme per provider, parsed with the `url` crate.
//!
//! Every parsed form keeps credentials found in userinfo apart from the address, so that
//! `QueueUri::redacted` can print the queue without them. Unknown query parameters are
//! rejected (a typo must not silently fall back to a default), except for HTTP URIs whose
//! query belongs to the endpoint.
//!
//! # Grammar
//!
//! Each provider's grammar lives in the provider's folder (`<provider>/uri.rs`); the scheme
//! picks the provider through the provider table (`kinds.rs`, which also holds
//! `QueueUri::parse`). This module has what every grammar shares: the checks before a
//! grammar runs, the error type, the URL helpers (`parts`) and redaction (`redact`). The
//! README's table lists every form.
//!
//! Path segments (queue, vhost, tube) and query values are percent-decoded; write
//! `%2F` for a `/` inside a name and `%2B` for a `+` in a query value. Credentials may be
//! given in the userinfo (`user:pass@`), but a Secret referenced by the WPA takes
//! precedence. SQS and beanstalkd URIs take no credentials.

pub(crate) mod parts;
pub(crate) mod redact;
#[cfg(test)]
mod tests;

pub use redact::redact_input;

use parts::quote;

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

/// Why [`split_scheme`] refused an input.
pub(crate) enum Refusal {
    Problem(String),
    /// No `scheme://`: the caller lists the schemes it knows.
    NoScheme,
}

/// The error for `input` (credentials redacted, control characters quoted).
pub(crate) fn invalid(input: &str, problem: String) -> UriError {
    UriError {
        uri: quote(&redact_input(input)),
        problem,
    }
}

/// A value from an input, safe to show in an error message.
pub(crate) fn quoted(value: &str) -> String {
    quote(value)
}

/// The checks every `queueURI` gets before its provider's grammar: not empty, not absurdly
/// long, no control characters, a `scheme://`. Returns the trimmed input and its scheme in
/// lower case.
pub(crate) fn split_scheme(input: &str) -> Result<(&str, String), Refusal> {
    let problem = |text: &str| Refusal::Problem(text.to_string());
    let trimmed = input.trim();
    if trimmed.is_empty() {
        return Err(problem("the URI is empty"));
    }
    if trimmed.len() > MAX_URI_LEN {
        return Err(Refusal::Problem(format!(
            "the URI is {} bytes long; at most {MAX_URI_LEN} are accepted",
            trimmed.len()
        )));
    }
    // The URL parser silently drops tabs and newlines; a URI containing them was
    // mangled somewhere (YAML folding, a pasted secret) and must not be guessed at.
    if trimmed.chars().any(char::is_control) {
        return Err(problem(
            "the URI contains control characters (tab, newline...)",
        ));
    }
    let Some((scheme, _)) = trimmed.split_once("://") else {
        return Err(Refusal::NoScheme);
    };
    Ok((trimmed, scheme.to_ascii_lowercase()))
}
