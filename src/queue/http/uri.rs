//! The HTTP provider's `queueURI` grammar: `http+json://...` or `https+json://...`, the same
//! URL with `http`/`https` answering the queue's metrics as JSON. The query belongs to the
//! endpoint and is kept as it is.

use crate::queue::uri::parts::reject_fragment;
use crate::queue::uri::redact::redact_url;

/// `http+json://...` or `https+json://...`: the URL (with `http`/`https`) that returns
/// the queue's metrics as JSON.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct HttpUri {
    pub url: String,
}

impl std::fmt::Debug for HttpUri {
    // The URL may carry a token in its query or userinfo: show scheme, host and path only.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown = match url::Url::parse(&self.url) {
            Ok(u) => format!(
                "{}://{}{}",
                u.scheme(),
                u.host_str().unwrap_or(""),
                u.path()
            ),
            Err(_) => "<unparseable>".to_string(),
        };
        f.debug_struct("HttpUri").field("url", &shown).finish()
    }
}

pub(crate) fn parse(input: &str, scheme: &str) -> Result<HttpUri, String> {
    let target = if scheme == "https+json" {
        "https"
    } else {
        "http"
    };
    let rest = &input[scheme.len()..];
    let url =
        url::Url::parse(&format!("{target}{rest}")).map_err(|e| format!("not a valid URL: {e}"))?;
    if url.host_str().is_none_or(str::is_empty) {
        return Err("missing host".to_string());
    }
    // Never sent to the server; refusing it keeps a pasted `#token=...` out of printouts.
    reject_fragment(&url)?;
    Ok(HttpUri {
        url: url.to_string(),
    })
}

impl HttpUri {
    /// The URL with its password and secret query values as `***`, scheme `http(s)+json`.
    pub(crate) fn redacted(&self) -> String {
        let redacted = redact_url(&self.url);
        match redacted.split_once("://") {
            Some((scheme, rest)) => format!("{scheme}+json://{rest}"),
            None => redacted,
        }
    }
}
