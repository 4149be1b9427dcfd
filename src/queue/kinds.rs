//! The provider table's machinery. The table itself is in `queue/mod.rs`: one row per
//! provider folder, `module::UriType as Kind`, where the folder's `UriType` implements
//! [`ProviderUri`](super::provider::ProviderUri). The macro here turns the rows into the
//! folders' `pub mod`, [`ProviderKind`], [`QueueUri`] and their dispatch; the functions below
//! derive what the rest of the crate needs from the rows' facts. Adding a broker or
//! framework is one folder and one row (docs/adding-a-provider.md).

use std::fmt;

use serde::{Serialize, Serializer};

use super::uri::{self, Refusal, UriError};
use super::{ProviderKind, QueueUri};

/// Generates, from `module::UriType as Kind` rows (invoked in `queue/mod.rs`, where the
/// rows are the table): the `pub mod` of each provider's folder, the [`ProviderKind`] enum,
/// the [`QueueUri`] enum (one variant per row, holding that row's type) and the methods
/// that dispatch to the row's [`ProviderUri`] implementation.
macro_rules! provider_table {
    ($($module:ident :: $uri:ident as $kind:ident),+ $(,)?) => {
        $(pub mod $module;)+
        /// The broker or framework of a queue; also the `provider` field of `inspect`
        /// output and the `provider` label of the poll metrics.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ProviderKind {
            $($kind),+
        }

        impl ProviderKind {
            /// Every provider, in table order.
            pub const ALL: &'static [ProviderKind] = &[$(ProviderKind::$kind),+];

            /// This provider's facts.
            pub fn spec(self) -> &'static $crate::queue::provider::ProviderSpec {
                match self {
                    $(ProviderKind::$kind => &<$module::uri::$uri as $crate::queue::provider::ProviderUri>::SPEC),+
                }
            }

            /// Parses a trimmed `queueURI` whose scheme is one of this provider's.
            pub(crate) fn parse_as(self, input: &str, scheme: &str) -> Result<QueueUri, String> {
                match self {
                    $(ProviderKind::$kind => {
                        <$module::uri::$uri as $crate::queue::provider::ProviderUri>::parse(input, scheme).map(QueueUri::$kind)
                    })+
                }
            }
        }

        /// A parsed `queueURI`: one provider's parsed form.
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        pub enum QueueUri {
            $($kind($module::uri::$uri)),+
        }

        impl QueueUri {
            /// The provider this URI selects.
            pub fn kind(&self) -> ProviderKind {
                match self {
                    $(QueueUri::$kind(_) => ProviderKind::$kind),+
                }
            }

            /// The URI in canonical form with every secret replaced by `***`: safe for
            /// logs, events, errors and metric labels.
            pub fn redacted(&self) -> String {
                match self {
                    $(QueueUri::$kind(u) => $crate::queue::provider::ProviderUri::redacted(u)),+
                }
            }

            /// What can be checked without contacting the broker (header values,
            /// providers built into this binary). A failure is a configuration error:
            /// retrying cannot help.
            pub fn validate(
                &self,
                creds: &$crate::queue::Credentials,
            ) -> Result<(), $crate::queue::QueueError> {
                match self {
                    $(QueueUri::$kind(u) => $crate::queue::provider::ProviderUri::validate(u, creds)),+
                }
            }

            /// Builds (and connects) the provider. Called by the registry inside each poll
            /// loop, so a broker that is down is retried there rather than failing a
            /// subscription.
            pub fn connect<'a>(
                &'a self,
                creds: &'a $crate::queue::Credentials,
                opts: &'a $crate::queue::ProviderOptions,
            ) -> $crate::queue::provider::ConnectFuture<'a> {
                match self {
                    $(QueueUri::$kind(u) => $crate::queue::provider::ProviderUri::connect(u, creds, opts)),+
                }
            }

            /// Where Celery's worker events for this queue are published, if its broker
            /// carries them. Credentials from `creds` (the WPA's Secret) win over the URI's
            /// userinfo, as for the providers.
            pub fn celery_events(
                &self,
                creds: &$crate::queue::Credentials,
            ) -> Option<$crate::queue::events::EventSource> {
                match self {
                    $(QueueUri::$kind(u) => $crate::queue::provider::ProviderUri::celery_events(u, creds)),+
                }
            }
        }

        $(
            impl From<$module::uri::$uri> for QueueUri {
                fn from(uri: $module::uri::$uri) -> Self {
                    QueueUri::$kind(uri)
                }
            }
        )+
    };
}

pub(crate) use provider_table;

impl ProviderKind {
    /// Every provider kind.
    pub fn all() -> impl Iterator<Item = ProviderKind> {
        ProviderKind::ALL.iter().copied()
    }

    /// The kind named `name` (or one of its aliases) in `--queue-services`.
    pub fn from_name(name: &str) -> Option<ProviderKind> {
        ProviderKind::all().find(|kind| {
            let spec = kind.spec();
            spec.name == name || spec.aliases.contains(&name)
        })
    }
}

impl fmt::Display for ProviderKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.spec().name)
    }
}

impl Serialize for ProviderKind {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.spec().name)
    }
}

/// What `workerpodautoscaler providers` prints for one provider: its row and what is
/// derived from it.
#[derive(Debug, Serialize)]
pub struct ProviderDescription {
    pub name: &'static str,
    pub aliases: &'static [&'static str],
    pub schemes: &'static [&'static str],
    pub example: &'static str,
    pub default_poll_interval_seconds: u64,
    pub interval_flag: &'static str,
    pub interval_env: String,
}

/// Every provider's description, in table order.
pub fn describe() -> Vec<ProviderDescription> {
    ProviderKind::all()
        .map(|kind| {
            let spec = kind.spec();
            ProviderDescription {
                name: spec.name,
                aliases: spec.aliases,
                schemes: spec.schemes,
                example: spec.example,
                default_poll_interval_seconds: spec.default_interval.as_secs(),
                interval_flag: spec.interval_flag,
                interval_env: spec.interval_env(),
            }
        })
        .collect()
}

/// The provider whose schemes include `scheme` (lower case).
pub fn by_scheme(scheme: &str) -> Option<ProviderKind> {
    ProviderKind::all().find(|kind| kind.spec().schemes.contains(&scheme))
}

/// The names `--queue-services` knows, for error messages.
pub fn service_names() -> String {
    names().collect::<Vec<_>>().join(", ")
}

/// `--queue-services`' default: every provider, in table order.
pub fn default_services() -> String {
    names().collect::<Vec<_>>().join(",")
}

fn names() -> impl Iterator<Item = &'static str> {
    ProviderKind::all().map(|kind| kind.spec().name)
}

/// Every scheme with its provider, for error messages.
pub fn supported_schemes() -> String {
    ProviderKind::all()
        .map(|kind| {
            let spec = kind.spec();
            format!("{} ({})", spec.schemes.join(", "), spec.name)
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Every scheme, in table order.
pub fn all_schemes() -> Vec<&'static str> {
    ProviderKind::all()
        .flat_map(|kind| kind.spec().schemes.iter().copied())
        .collect()
}

/// The CEL rule that `variable` (a string) starts with a known scheme, for the CRD:
/// `variable.matches('^(https|http|...)://')`, with `+` escaped for RE2 (and the backslash
/// for the CEL string literal).
pub fn uri_scheme_rule(variable: &str) -> String {
    let alternatives: Vec<String> = all_schemes()
        .iter()
        .map(|scheme| scheme.replace('+', "\\\\+"))
        .collect();
    format!("{variable}.matches('^({})://')", alternatives.join("|"))
}

/// The message of [`uri_scheme_rule`]'s failure: `<subject> must start with https://, ...`.
pub fn uri_scheme_message(subject: &str) -> String {
    let schemes: Vec<String> = all_schemes().iter().map(|s| format!("{s}://")).collect();
    let (last, rest) = schemes
        .split_last()
        .map_or(("", &[][..]), |(l, r)| (l.as_str(), r));
    if rest.is_empty() {
        format!("{subject} must start with {last}")
    } else {
        format!("{subject} must start with {} or {last}", rest.join(", "))
    }
}

impl QueueUri {
    /// Parses a `queueURI`: the checks every URI gets ([`uri::split_scheme`]), then the
    /// grammar of the provider its scheme names.
    pub fn parse(input: &str) -> Result<QueueUri, UriError> {
        let fail = |problem: String| uri::invalid(input, problem);
        let (trimmed, scheme) = uri::split_scheme(input).map_err(|refusal| match refusal {
            Refusal::Problem(problem) => fail(problem),
            Refusal::NoScheme => fail(format!(
                "no scheme (`scheme://`); supported schemes: {}",
                supported_schemes()
            )),
        })?;
        match by_scheme(&scheme) {
            Some(kind) => kind.parse_as(trimmed, &scheme).map_err(fail),
            None => Err(fail(format!(
                "unknown scheme `{}`; supported schemes: {}",
                uri::quoted(&scheme),
                supported_schemes()
            ))),
        }
    }
}

impl fmt::Display for QueueUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl std::str::FromStr for QueueUri {
    type Err = UriError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        QueueUri::parse(s)
    }
}

#[cfg(test)]
#[path = "kinds_tests.rs"]
mod tests;
