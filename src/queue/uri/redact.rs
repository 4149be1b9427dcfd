//! Redaction of queue URIs given as text: for error messages about input that did not parse,
//! and for URLs nested in a parsed URI (RabbitMQ's `management`, the HTTP provider's URL).

use super::parts::{decode, encode};

/// Query keys whose values are secrets.
fn is_secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    key.contains("password")
        || key.contains("token")
        || key.contains("secret")
        || matches!(
            key.as_str(),
            "key" | "apikey" | "api_key" | "pass" | "passwd" | "sig" | "signature" | "auth"
        )
}

/// `input` with the userinfo password and secret query values replaced by `***`.
/// Works on strings that are not valid URLs too, so errors can quote them.
pub fn redact_input(input: &str) -> String {
    let (head, query) = match input.split_once('?') {
        Some((h, q)) => (h, Some(q)),
        None => (input, None),
    };
    let mut out = String::with_capacity(input.len());
    match head.split_once("://") {
        Some((scheme, rest)) => {
            out.push_str(scheme);
            out.push_str("://");
            // Split at the last `@` rather than at the first `/`: an unencoded `/` in a
            // password must not leak it (over-redacting a path with `@` is harmless).
            let authority_end = match rest.rfind('@') {
                Some(at) => rest[at..].find(['/', '#']).map_or(rest.len(), |i| at + i),
                None => rest.find(['/', '#']).unwrap_or(rest.len()),
            };
            let (authority, path) = rest.split_at(authority_end);
            match authority.rsplit_once('@') {
                Some((userinfo, hostport)) => {
                    match userinfo.split_once(':') {
                        Some((user, _)) => {
                            out.push_str(user);
                            out.push_str(":***");
                        }
                        None => out.push_str(userinfo),
                    }
                    out.push('@');
                    out.push_str(hostport);
                }
                None => out.push_str(authority),
            }
            out.push_str(path);
        }
        None => out.push_str(head),
    }
    if let Some(query) = query {
        out.push('?');
        out.push_str(&redact_query(query));
    }
    out
}

/// A query string with the values of secret keys replaced by `***`.
fn redact_query(query: &str) -> String {
    // `;`, `#` and a stray `?` split pairs too (a fragment is redacted like the query):
    // over-redacting is harmless, while `a=b?password=x` or `#?password=x` must not show `x`.
    let separators = ['&', ';', '?', '#'];
    query
        .split_inclusive(separators)
        .map(|piece| {
            let (pair, separator) = match piece.char_indices().last() {
                Some((i, c)) if separators.contains(&c) => piece.split_at(i),
                _ => (piece, ""),
            };
            format!("{}{separator}", redact_pair(pair))
        })
        .collect()
}

/// One `key=value` of a query with a secret value replaced by `***`.
fn redact_pair(pair: &str) -> String {
    match pair.split_once('=') {
        Some((k, _)) if is_secret_key(&decode(k, "key").unwrap_or_default()) => {
            format!("{k}=***")
        }
        // A nested URL (RabbitMQ `management`) may carry its own userinfo.
        Some((k, v)) if v.contains("%40") || v.contains('@') => {
            let nested = decode(v, "value").unwrap_or_default();
            format!("{k}={}", encode(&redact_input(&nested)))
        }
        _ => pair.to_string(),
    }
}

/// A URL that parsed, redacted part by part rather than as text (its path may hold `@`, `?`
/// or `#`, which text-level redaction must treat as possible userinfo or query).
pub(crate) fn redact_url(text: &str) -> String {
    match url::Url::parse(text) {
        Ok(mut url) => {
            let query = url.query().map(|q| (q.to_string(), redact_query(q)));
            let secret_query = query.as_ref().is_some_and(|(q, redacted)| q != redacted);
            if url.password().is_none() && !secret_query {
                // Nothing to hide: keep the text as written.
                return text.to_string();
            }
            if url.password().is_some() {
                // Fails only for URLs without a host, which have no password either.
                let _ = url.set_password(Some("***"));
            }
            if let Some((_, redacted)) = query {
                url.set_query(Some(&redacted));
            }
            url.to_string()
        }
        Err(_) => redact_input(text),
    }
}
